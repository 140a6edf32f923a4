"""Evaluation runs as plain files: TREC run files, saved runs (a folder per run), comparisons and exports.

A TREC run file has one line per retrieved document: ``qid Q0 docid rank score tag`` (space-separated; rank
from 1; the score is the document's best chunk's score, written exactly; tag: the configuration's name), so
trec_eval, pytrec_eval or ir-measures score it as this app does.

A saved run is ``<data_dir>/eval-runs/<id>/``:

    metrics.json     {"version": 1, "id", "created_at", "collection", "configs": [...], "summary": {...},
                      "latency_ms": {config: [ms per query]}, "info": {...},
                      "rerank": {config: {"applied", "fallbacks", "reasons"}}}   (-rerank configurations)
    <config>.run     one TREC run file per configuration
    queries.jsonl    the judged queries that ran (BEIR format)
    qrels.tsv        their judgements (BEIR format)

Everything else (per-query metrics, curves, comparisons) is computed again from these files when the run is
loaded. A run folder is written under a temporary name and renamed into place, so a listing never sees half
of one.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path

from .errors import InvalidInput, StoredDataError
from .eval import METRICS, EvalResult, Run, load_qrels, load_queries

FORMAT_VERSION = 1
RUNS_DIR = "eval-runs"
_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
_WS = re.compile(r"\s")


# -- TREC run files -----------------------------------------------------------------------------------------

def write_run(path: str | Path, run: Run, tag: str) -> Path:
    """Write ``run`` ({qid: [(docid, score)], best first}) as a TREC run file."""
    path = Path(path)
    lines = []
    for qid, docs in run.items():
        if _WS.search(qid):
            raise InvalidInput(f"Query id {qid!r} contains white space, which a TREC run file cannot hold.")
        for rank, (doc, score) in enumerate(docs, 1):
            if _WS.search(doc):
                raise InvalidInput(f"Document id {doc!r} contains white space, which a TREC run file cannot hold.")
            lines.append(f"{qid} Q0 {doc} {rank} {float(score)!r} {tag}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_run(path: str | Path) -> Run:
    """A TREC run file → {qid: [(docid, score)]} in rank order."""
    out: dict[str, list[tuple[int, str, float]]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 6:
                    raise StoredDataError(f"{path}:{n}: expected 'qid Q0 docid rank score tag'.")
                qid, _, doc, rank, score, _ = parts
                out.setdefault(qid, []).append((int(rank), doc, float(score)))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise StoredDataError(f"{path}: cannot be read as a TREC run file ({e}).") from None
    return {q: [(d, s) for _, d, s in sorted(rows)] for q, rows in out.items()}


def save_run_files(result: EvalResult, directory: str | Path) -> list[Path]:
    """``DIR/<config>.run`` for every configuration of ``result``; returns the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return [write_run(d / f"{name}.run", run, name) for name, run in result.runs.items()]


# -- saved runs -----------------------------------------------------------------------------------------------

def runs_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / RUNS_DIR


def save(result: EvalResult, data_dir: str | Path, *, collection: str) -> str:
    """Save ``result`` as a new run folder; returns its id."""
    root = runs_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now()
    run_id = f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    tmp = root / f".tmp-{run_id}"
    tmp.mkdir()
    try:
        save_run_files(result, tmp)
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
            for q, text in result.queries.items():
                f.write(json.dumps({"_id": q, "text": text}, ensure_ascii=False) + "\n")
        with open(tmp / "qrels.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q, rel in result.qrels.items():
                for d, g in rel.items():
                    f.write(f"{q}\t{d}\t{g}\n")
        # latencies unrounded: the loaded run's summary (percentiles of the raw values) equals this one's
        meta = {"version": FORMAT_VERSION, "id": run_id, "created_at": now.isoformat(timespec="seconds"),
                "collection": collection, "configs": result.configs, "summary": result.summary(),
                "latency_ms": {k: [float(v) for v in ms] for k, ms in result.latency_ms.items()},
                "info": result.info, "rerank": result.rerank}
        (tmp / "metrics.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp, root / run_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.info = {**result.info, "id": run_id, "collection": collection, "created_at": meta["created_at"]}
    return run_id


def _run_dir(data_dir, run_id: str) -> Path:
    if not isinstance(run_id, str) or not _ID_RE.match(run_id):
        raise InvalidInput(f"{run_id!r} is not a saved run id; pick one from the list of saved runs.")
    d = runs_root(data_dir) / run_id
    if not (d / "metrics.json").is_file():
        raise InvalidInput(f"No saved run {run_id!r} (it may have been deleted).")
    return d


def _meta(d: Path) -> dict:
    try:
        meta = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoredDataError(f"{d / 'metrics.json'}: cannot be read ({e}); delete the folder.") from None
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        raise StoredDataError(f"{d}: saved by another format version ({meta.get('version') if isinstance(meta, dict) else '?'}"
                              f", this app reads {FORMAT_VERSION}); run the evaluation again.")
    return meta


def list_saved(data_dir: str | Path) -> list[dict]:
    """id, created_at, collection, configs, queries and summary of every saved run, newest first."""
    root = runs_root(data_dir)
    out = []
    for d in sorted(root.glob("*"), reverse=True) if root.is_dir() else []:
        if not _ID_RE.match(d.name):
            continue
        try:
            m = _meta(d)
        except StoredDataError:
            continue
        out.append({"id": m["id"], "created_at": m.get("created_at", ""), "collection": m.get("collection", ""),
                    "configs": [c["name"] for c in m.get("configs", [])],
                    "queries": next(iter(m.get("summary", {}).values()), {}).get("queries", 0),
                    "summary": m.get("summary", {})})
    return out


def load(data_dir: str | Path, run_id: str) -> EvalResult:
    d = _run_dir(data_dir, run_id)
    meta = _meta(d)
    names = [c["name"] for c in meta.get("configs", [])]
    queries, qrels = load_queries(d / "queries.jsonl"), load_qrels(d / "qrels.tsv")
    runs = {n: read_run(d / f"{n}.run") for n in names}
    info = {**meta.get("info", {}), "id": meta["id"], "collection": meta.get("collection", ""),
            "created_at": meta.get("created_at", "")}
    return EvalResult({q: t for q, t in queries.items() if q in qrels}, qrels, runs,
                      latency_ms=meta.get("latency_ms", {}), configs=meta.get("configs", []), info=info,
                      rerank=meta.get("rerank", {}))


def label(entry: dict) -> str:
    """A saved run as one line for a list: when, collection, configurations, queries."""
    return (f"{entry['created_at'].replace('T', ' ')} · {entry['collection']} · {', '.join(entry['configs'])} · "
            f"{entry['queries']} queries")


# -- comparing and exporting ------------------------------------------------------------------------------------

def compare(a: EvalResult, b: EvalResult, config: str, *, metric: str = "ndcg@10",
            config_b: str | None = None) -> list[dict]:
    """Per query judged in both, ``metric`` of configuration ``config`` in run ``a`` (the baseline) and
    ``config_b`` (default: the same name) in ``b``; worst change first."""
    config_b = config_b or config
    if metric not in METRICS:
        raise InvalidInput(f"Unknown metric {metric!r}: use one of {', '.join(METRICS)}.")
    for r, c, which in ((a, config, "baseline"), (b, config_b, "other")):
        if c not in r.runs:
            raise InvalidInput(f"The {which} run has no configuration {c!r}; it has {', '.join(r.names)}.")
    pa, pb = a.per_query(config), b.per_query(config_b)
    rows = []
    for q in a.queries:
        if q in b.queries and a.qrels[q] == b.qrels[q]:
            va, vb = pa[q][metric], pb[q][metric]
            rows.append({"query_id": q, "query": a.queries[q], "baseline": round(va, 4), "other": round(vb, 4),
                         "delta": round(vb - va, 4)})
    rows.sort(key=lambda r: (r["delta"], r["query_id"]))
    return rows


def compare_summary(rows: list[dict]) -> dict:
    worse = [r for r in rows if r["delta"] < 0]
    better = [r for r in rows if r["delta"] > 0]
    mean = (lambda k: sum(r[k] for r in rows) / len(rows)) if rows else (lambda k: 0.0)
    return {"queries": len(rows), "worse": len(worse), "better": len(better),
            "same": len(rows) - len(worse) - len(better), "baseline_mean": round(mean("baseline"), 4),
            "other_mean": round(mean("other"), 4), "delta_mean": round(mean("delta"), 4)}


def per_query_rows(result: EvalResult) -> list[dict]:
    """One row per (query, configuration) with the four metrics: the CSV export."""
    rows = []
    for name in result.names:
        for q, m in result.per_query(name).items():
            rows.append({"config": name, "query_id": q, **{k: round(v, 4) for k, v in m.items()}})
    return rows


def to_csv(rows: list[dict]) -> str:
    """Rows of dicts → CSV text; cells that a spreadsheet would run as a formula get a leading quote."""
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def _cell(v):
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def to_json(result: EvalResult) -> str:
    """Summary, curves, configurations and per-query metrics of ``result`` as one JSON document."""
    return json.dumps({"version": FORMAT_VERSION, "info": result.info, "configs": result.configs,
                       "summary": result.summary(), "rerank": result.rerank, "curves": result.curves(),
                       "per_query": {n: result.per_query(n) for n in result.names}}, indent=1)


__all__ = ["write_run", "read_run", "save_run_files", "save", "load", "list_saved", "label", "compare",
           "compare_summary", "per_query_rows", "to_csv", "to_json", "runs_root", "FORMAT_VERSION"]
