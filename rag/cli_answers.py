"""`hybrid-rag eval-answers`: a golden set answered by 1-4 models over the same passages, scored (docs/evaluation.md)."""
from __future__ import annotations

import json
import sys


def add_arguments(s) -> None:
    s.add_argument("--collection", "-c", required=True, help="the collection to search")
    s.add_argument("--golden", metavar="FILE", help="golden set (JSONL: question, reference, expected_docs, "
                   "answerable); default: the example about this project's docs, configs/golden_docs.jsonl")
    s.add_argument("--models", default="", help="comma-separated catalog ids, aliases or routes (speed, quality, "
                   "openusd), 1 to 4; default: the embedded offline model")
    s.add_argument("--judge", metavar="MODEL|none", help="the judge model (default: evaluation.judge_model); "
                   "none: no judge. Never the embedded model")
    s.add_argument("--max-tokens", type=int, help="answer length cap per model (default: evaluation.max_tokens)")
    s.add_argument("--k", type=int, help="chunks retrieved per question (default: retrieval.k)")
    s.add_argument("--mode", choices=["sparse", "dense", "hybrid"], help="retrieval mode (default: retrieval.mode)")
    s.add_argument("--limit", type=int, help="only the first N questions")
    s.add_argument("--save", metavar="DIR", nargs="?", const="", help="save the run under the data directory's "
                   "answer-runs/ (or under DIR when given) and write DIR/answers.csv")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    s.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line, "
                   "keyed by model")


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{v * 100:.0f}%"
    return (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}") if isinstance(v, float) else str(v)


def run(args) -> int:
    from pathlib import Path

    from . import answereval as ae
    from .config import load_settings
    from .engine import Engine
    from .errors import InvalidInput

    settings = load_settings(path=args.config, data_dir=args.data_dir)
    golden = ae.load_golden(args.golden)
    if args.limit is not None:
        if args.limit < 1:
            raise InvalidInput("--limit must be 1 or more.")
        golden = golden[: args.limit]
    engine = Engine(settings)
    catalog = engine.live_catalog()
    models = ae.resolve_models(catalog, args.models)
    judge = ae.open_run_judge(engine, args.judge)
    if not args.quiet:
        print(f"{len(golden)} questions x {len(models)} model(s): {', '.join(models)}; {judge.status}",
              file=sys.stderr)

    def progress(i, n, msg):
        if not args.quiet:
            print(f"\r[{i}/{n}] {msg[:70]:<70}", end="\n" if i == n else "", file=sys.stderr, flush=True)

    result = ae.run(engine, args.collection, golden, models, judge=judge, max_tokens=args.max_tokens, k=args.k,
                    mode=args.mode, progress=progress)
    width = max(12, *(len(m) for m in models))
    cols = [("valid", "citation_validity", True), ("cover", "citation_coverage", True),
            ("support", "supported_rate", True), ("refuse", "refusal_rate", True),
            ("falseref", "false_refusal_rate", True), ("docrec", "expected_doc_recall", True),
            ("refsim", "reference_similarity", False), ("ttft ms", "ttft_p50_ms", False),
            ("tok/s", "tokens_per_s", False)]
    print(f"{'model':<{width}} {'answered':>8} " + " ".join(f"{c:>8}" for c, _, _ in cols))
    for m, s in result.summary.items():
        print(f"{m:<{width}} {s['answered']:>3}/{s['questions']:<4} "
              + " ".join(f"{_fmt(s[k], pct):>8}" for _, k, pct in cols))
        if s["fell_back"] or s["errors"]:
            print(f"{'':<{width}} not counted: {s['fell_back']} answered by another model, {s['errors']} failed")
    print(f"judge: {result.judge['status']}")
    for m, s in result.summary.items():
        if s["judge"]:
            j = s["judge"]
            print(f"{m:<{width}} judge groundedness {_fmt(j['groundedness'])}, quality {_fmt(j['quality'])} "
                  f"({j['judged']} graded, {j['errors']} unparsable or failed)")
    if args.save is not None:
        run_id = ae.save(result, settings.data_dir)
        print(f"saved run {run_id} in {ae.runs_root(settings.data_dir) / run_id}")
        if args.save:
            out = Path(args.save)
            out.mkdir(parents=True, exist_ok=True)
            (out / "answers.csv").write_text(ae.to_csv(result), encoding="utf-8")
            (out / "run.json").write_text(json.dumps(result.to_dict(), default=str), encoding="utf-8")
            print(f"wrote {out / 'answers.csv'} and {out / 'run.json'}")
    if args.json:
        print(json.dumps(result.summary))
    return 0
