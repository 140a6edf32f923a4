"""Answer evaluation: a golden set of questions answered by 1-4 models over the same retrieved passages.

For each question the collection is searched once (:meth:`rag.engine.Engine.search`) and the same result goes
to every model (``Engine.ask(retrieval=...)``, as Compare does), one model after another so each one's timings
are its own. Each answer is scored automatically (:func:`score_answer`; the metrics are defined exactly in
docs/evaluation.md) and, when a judge model is reachable, graded by it (:mod:`rag.judge`). An answer given by
another model than the one asked for (its endpoint failed and the chain fell back) is kept in the run with
``fell_back`` but left out of that model's metrics.

A golden set is JSONL, one question per line::

    {"id": "q1", "question": "...", "reference": "...", "expected_docs": ["docs/api.md"]}
    {"id": "u1", "question": "...", "answerable": false}

``id`` (default: the line number), ``reference``, ``expected_docs`` (document sources or ids that should be
cited) and ``answerable`` (default true) are optional. ``configs/golden_docs.jsonl`` is an example about this
project's own docs, for the starter collection.

A saved run is ``<data_dir>/answer-runs/<id>/run.json`` (``{"version": 1, ...}``: the settings, the judge's
status, the per-model summary, every question with its passages and each model's answer and scores) beside
``golden.jsonl`` (the set as it ran); written under a temporary name and renamed into place.
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
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import verify
from .answer import _CITE_RE, Done, NoModelAvailable, Sources, Token, parse_citations
from .catalog import ROUTES
from .config import CONFIG_DIR
from .errors import InvalidInput, StoredDataError, user_message
from .extractive import EXTRACTED_LABEL
from .types import Hit

FORMAT_VERSION = 1
RUNS_DIR = "answer-runs"
EXAMPLE_SET = CONFIG_DIR / "golden_docs.jsonl"
MAX_MODELS = 4
MAX_QUESTIONS = 500
_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
_KEYS = {"id", "question", "reference", "expected_docs", "answerable"}

# a refusal: the answer says the sources do not hold the answer (see is_refusal)
REFUSAL_RE = re.compile(
    r"\b(?:sources?|passages?|context|documents?|documentation|provided (?:text|information)|excerpts?|"
    r"information (?:provided|given))\b[^.\n]{0,80}?\b(?:do not|does not|don't|doesn't|did not|didn't|never|"
    r"no|not|cannot|can't)\b[^.\n]{0,50}?\b(?:say|says|mention|mentions|contain|contains|cover|covers|include|"
    r"includes|answer|provide|provides|state|states|specify|specifies|describe|describes|address|addresses|"
    r"information|details?|discuss|discusses|explain|explains)\b"
    r"|\b(?:not|no) (?:enough|sufficient) information\b"
    r"|\bI (?:do not|don't|cannot|can't|could not|couldn't|am unable to|was unable to) (?:know|find|answer|tell|"
    r"determine|say)\b"
    r"|\b(?:is|are) not (?:mentioned|stated|covered|specified|described|given|found|provided) in the "
    r"(?:sources?|passages?|context|documents?|documentation)\b"
    r"|\bno (?:information|mention|details?) (?:about|on|of|regarding)\b", re.I)
_EXTRACTED_PREFIX = EXTRACTED_LABEL.split("(")[0].strip()     # "Extracted from the sources"


class AnswerEvalCancelled(Exception):
    """The run was stopped (``cancelled()`` returned True); nothing is saved."""


# --- the golden set -------------------------------------------------------------------------------------
@dataclass
class GoldenItem:
    id: str
    question: str
    reference: str | None = None
    expected_docs: list[str] = field(default_factory=list)
    answerable: bool = True


def parse_golden(text: str, name: str = "golden set") -> list[GoldenItem]:
    """Read a golden set (JSONL text); a bad line stops with its line number and the fix."""
    items, seen = [], set()
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name} line {no}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise InvalidInput(f"{where} is not JSON ({e.msg}): write one JSON object per line.") from None
        if not isinstance(row, dict):
            raise InvalidInput(f"{where} is not a JSON object: write {{\"question\": \"...\"}}.")
        unknown = set(row) - _KEYS
        if unknown:
            raise InvalidInput(f"{where} has unknown field(s) {', '.join(sorted(unknown))}: the fields are "
                               f"{', '.join(sorted(_KEYS))}.")
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise InvalidInput(f"{where} has no question: add \"question\": \"...\".")
        ref = row.get("reference")
        if ref is not None and not isinstance(ref, str):
            raise InvalidInput(f"{where}: reference must be a string.")
        docs = row.get("expected_docs") or []
        if isinstance(docs, str):
            docs = [docs]
        if not isinstance(docs, list) or not all(isinstance(d, str) and d.strip() for d in docs):
            raise InvalidInput(f"{where}: expected_docs must be a list of document sources or ids.")
        answerable = row.get("answerable", True)
        if not isinstance(answerable, bool):
            raise InvalidInput(f"{where}: answerable must be true or false.")
        qid = str(row.get("id", no)).strip() or str(no)
        if qid in seen:
            raise InvalidInput(f"{where}: the id {qid!r} is used twice; ids must be unique.")
        seen.add(qid)
        items.append(GoldenItem(qid, " ".join(q.split()), (ref or "").strip() or None,
                                [d.strip() for d in docs], answerable))
    if not items:
        raise InvalidInput(f"The {name} holds no questions: one JSON object per line, {{\"question\": \"...\"}}.")
    if len(items) > MAX_QUESTIONS:
        raise InvalidInput(f"The {name} has {len(items)} questions; at most {MAX_QUESTIONS} run at once: split it.")
    return items


def load_golden(path: str | Path | None = None) -> list[GoldenItem]:
    """A golden set from a file (default: the shipped example, ``configs/golden_docs.jsonl``)."""
    p = Path(path) if path else EXAMPLE_SET
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"The golden set {p} cannot be read ({getattr(e, 'strerror', None) or e}): give a "
                           "UTF-8 JSONL file.") from None
    return parse_golden(text, p.name)


# --- which models ------------------------------------------------------------------------------------------
def resolve_models(catalog, names) -> list[str]:
    """Catalog ids for 1-4 names (ids, aliases or routes: speed, quality, openusd), in order, without repeats."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    names = [n.strip() for n in names or [] if n and n.strip()]
    if not names:
        names = [catalog.embedded_model().id]
    out = []
    for n in names:
        mid = catalog.model_for_route(n).id if n in ROUTES else catalog.get_model(n).id
        if mid not in out:
            out.append(mid)
    if len(out) > MAX_MODELS:
        raise InvalidInput(f"At most {MAX_MODELS} models per run ({len(out)} given): drop some.")
    return out


# --- scoring one answer ------------------------------------------------------------------------------------
def sentences(text: str) -> list[str]:
    """The sentences of an answer, as the citation check splits them (:func:`rag.verify.sentences`)."""
    return [sp.text for sp in verify.sentences(text)]


def _unit(vecs) -> np.ndarray:
    v = np.asarray(vecs, dtype=np.float32)
    if v.ndim != 2 or not len(v):
        return v
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def is_refusal(text: str, meta: dict | None = None) -> str | None:
    """Why the answer counts as a refusal, or None: ``says_not_in_sources`` (a sentence matches
    :data:`REFUSAL_RE`: the sources/passages/context do not say/contain/mention ..., not enough information,
    I cannot answer/find ..., X is not mentioned in the sources, no information about ...) or ``extractive_only``
    (the offline model's answer was unusable and the whole answer is sentences extracted from the sources,
    labelled as such: the app gave no answer of its own)."""
    body = (text or "").strip()
    meta = meta or {}
    if meta.get("extractive") and body.startswith(_EXTRACTED_PREFIX):
        return "extractive_only"
    return "says_not_in_sources" if REFUSAL_RE.search(body) else None


def _doc_keys(hit: Hit) -> set[str]:
    c = hit.chunk
    return {k.lower() for k in (c.source, c.doc_id, Path(c.source or "").name) if k}


def score_answer(item: GoldenItem, text: str, meta: dict, hits: list[Hit], embedder, *, report: dict | None = None,
                 threshold: float = verify.DEFAULT_THRESHOLD, reference_vec: np.ndarray | None = None) -> dict:
    """The automatic scores of one answer (docs/evaluation.md defines each). ``report``: the answer's citation
    check (:func:`rag.verify.check`), made here when not given."""
    sents = sentences(text)
    cites = parse_citations(text, hits)
    n_cites = len(cites.used) + len(cites.unknown)
    cited_sents = [s for s in sents if _CITE_RE.search(s)]
    if report is None or not report.get("checked"):
        report = verify.check(text, hits, embedder, threshold) if text.strip() and hits else None
    counts = (report or {}).get("counts") or {}
    judged = counts.get("supported", 0) + counts.get("unsupported", 0)
    out = {
        "sentences": len(sents),
        "citations": sorted(cites.used), "unknown_citations": list(cites.unknown),
        "citation_validity": round(len(cites.used) / n_cites, 4) if n_cites else None,
        "citation_coverage": round(len(cited_sents) / len(sents), 4) if sents else None,
        "supported_rate": round(counts["supported"] / judged, 4) if judged else None,
        "uncited_claims": counts.get("uncited"),
        "refusal": is_refusal(text, meta),
        "expected_doc_recall": None, "reference_similarity": None,
        "ttft_ms": meta.get("ttft_ms"), "tokens_per_s": meta.get("tokens_per_s"),
        "completion_tokens": meta.get("completion_tokens"), "extractive": bool(meta.get("extractive")),
    }
    if item.expected_docs:
        cited_docs = set().union(*(_doc_keys(h) for h in cites.used.values())) if cites.used else set()
        want = [d.lower() for d in item.expected_docs]
        out["expected_doc_recall"] = round(sum(d in cited_docs for d in want) / len(want), 4)
    body = re.sub(r"\s+([.,;:!?])", r"\1", verify.claim_text(text))     # "a day [1]." -> "a day."
    if reference_vec is not None and body:
        vec = _unit(embedder.encode_queries([body]))[0]
        out["reference_similarity"] = round(float(vec @ reference_vec), 4)
    return out


# --- the run ---------------------------------------------------------------------------------------------
AUTO_METRICS = ("citation_validity", "citation_coverage", "supported_rate", "refusal_rate", "false_refusal_rate",
                "expected_doc_recall", "reference_similarity", "ttft_p50_ms", "tokens_per_s")


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return round(sum(xs) / len(xs), 4) if xs else None


def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 2) if xs else None


def summarize(questions: list[dict], models: list[str]) -> dict:
    """Per model: the automatic metrics (means over the answers each applies to), counts, and the judge's."""
    out = {}
    for m in models:
        rows = [(q, q["answers"].get(m) or {}) for q in questions]
        scored = [(q, a) for q, a in rows if a.get("scores")]
        s = [a["scores"] for _, a in scored]
        unans = [a["scores"] for q, a in scored if not q["answerable"]]
        ans = [a["scores"] for q, a in scored if q["answerable"]]
        judged = [a["judge"] for _, a in scored if a.get("judge") and "error" not in a["judge"]]
        out[m] = {
            "questions": len(questions), "answered": len(scored),
            "fell_back": sum(bool(a.get("fell_back")) for _, a in rows),
            "errors": sum(bool(a.get("error")) for _, a in rows),
            "citation_validity": _mean([x["citation_validity"] for x in s]),
            "citation_coverage": _mean([x["citation_coverage"] for x in s]),
            "supported_rate": _mean([x["supported_rate"] for x in s]),
            "refusal_rate": _mean([float(x["refusal"] is not None) for x in unans]),
            "false_refusal_rate": _mean([float(x["refusal"] is not None) for x in ans]),
            "expected_doc_recall": _mean([x["expected_doc_recall"] for x in ans]),
            "reference_similarity": _mean([x["reference_similarity"] for x in ans]),
            "ttft_p50_ms": _median([x["ttft_ms"] for x in s]),
            "tokens_per_s": _median([x["tokens_per_s"] for x in s]),
            "extractive": sum(x["extractive"] for x in s),
            "judge": ({"judged": len(judged), "groundedness": _mean([j["groundedness"] for j in judged]),
                       "quality": _mean([j["quality"] for j in judged]),
                       "errors": sum(bool(a.get("judge") and "error" in a["judge"]) for _, a in scored)}
                      if any(a.get("judge") for _, a in scored) else None),
        }
    return out


@dataclass
class AnswerRun:
    """A finished run: what ran, the judge's status, per-question rows and the per-model summary."""

    collection: str
    models: list[str]
    questions: list[dict]
    summary: dict
    judge: dict
    settings: dict
    golden: list[GoldenItem]
    id: str | None = None
    created_at: str | None = None

    def to_dict(self) -> dict:
        return {"version": FORMAT_VERSION, "id": self.id, "created_at": self.created_at,
                "collection": self.collection, "models": self.models, "judge": self.judge,
                "settings": self.settings, "summary": self.summary, "questions": self.questions}


def _answer(engine, item: GoldenItem, retrieval, model: str, max_tokens: int) -> tuple[str, dict, list[Hit]]:
    sent, parts, meta = [], [], {}
    events = engine.ask(item.question, retrieval=retrieval, model=model, params={"max_tokens": int(max_tokens)})
    try:
        for ev in events:
            if isinstance(ev, Sources):
                sent = list(ev.hits)
            elif isinstance(ev, Token):
                parts.append(ev.text)
            elif isinstance(ev, Done):
                meta = ev.meta            # the citation check adds "verification" once the stream is over
    finally:
        close = getattr(events, "close", None)
        if close:
            close()
    return "".join(parts), dict(meta), sent


def _hit_row(n: int, h: Hit) -> dict:
    return {"n": n, "chunk": h.chunk.id, "doc_id": h.chunk.doc_id, "source": h.chunk.source,
            "text": (h.chunk.text or "")[:2000]}


def run(engine, collection: str, golden: list[GoldenItem], models: list[str], *, judge=None,
        max_tokens: int | None = None, k: int | None = None, mode: str | None = None,
        progress=None, cancelled=None) -> AnswerRun:
    """Answer every question of ``golden`` with each of ``models`` (catalog ids) over one retrieval per question;
    score each answer, and grade it with ``judge`` (a :class:`rag.judge.Judge`) when one is available.

    ``max_tokens``: each answer's cap (default ``evaluation.max_tokens``). ``progress(done, total, message)`` is called after each answer; ``cancelled()`` returning True stops the run
    (:class:`AnswerEvalCancelled`)."""
    if not 1 <= len(models) <= MAX_MODELS:
        raise InvalidInput(f"Choose 1 to {MAX_MODELS} models ({len(models)} given).")
    engine.retriever(collection)                           # an unknown collection fails before anything runs
    threshold = engine.settings.verify.threshold
    max_tokens = int(max_tokens or engine.settings.evaluation.max_tokens)
    embedder = engine.embedder
    refs = [g.reference for g in golden if g.reference]
    ref_vecs = dict(zip(refs, _unit(embedder.encode_queries(refs)))) if refs else {}
    total, done = len(golden) * len(models), 0
    questions = []
    for item in golden:
        if cancelled and cancelled():
            raise AnswerEvalCancelled()
        row = {**asdict(item), "retrieval_ms": None, "sources": [], "expected_retrieved": None, "answers": {}}
        try:
            res = engine.search(collection, item.question, mode=mode, k=k)
        except Exception as e:          # noqa: BLE001 - one question's failure is recorded, the run goes on
            row["error"] = user_message(e, "The search")
            res = None
        if res is not None:
            row["retrieval_ms"] = round(res.retrieval_ms, 2)
        for m in models:
            if cancelled and cancelled():
                raise AnswerEvalCancelled()
            a: dict = {"model": m}
            if res is None:
                a["error"] = row["error"]
            else:
                t0 = time.perf_counter()
                try:
                    text, meta, sent = _answer(engine, item, res, m, max_tokens)
                except NoModelAvailable as e:
                    a["error"] = str(e)
                    text, meta, sent = "", {}, []
                except Exception as e:      # noqa: BLE001
                    a["error"] = user_message(e, f"Answering with {m}")
                    text, meta, sent = "", {}, []
                a["wall_ms"] = round((time.perf_counter() - t0) * 1000, 1)
                if not row["sources"] and sent:
                    row["sources"] = [_hit_row(n, h) for n, h in enumerate(sent, 1)]
                if meta:
                    a.update(text=text, answered_by=meta.get("model"), endpoint=(meta.get("endpoint") or {}).get("name"),
                             partial=bool(meta.get("partial")), meta_error=meta.get("error"))
                    if meta.get("model") != m:
                        a["fell_back"] = (f"answered by {meta.get('model')} instead: "
                                          + "; ".join(f"{f['endpoint']}: {f['reason']}" for f in meta.get("fallbacks", [])))
                    else:
                        a["sent"] = len(sent)
                        a["scores"] = score_answer(item, text, meta, sent, embedder, threshold=threshold,
                                                   report=meta.get("verification"),
                                                   reference_vec=ref_vecs.get(item.reference))
                        if judge is not None and judge.available:
                            a["judge"] = judge.grade(item.question, sent, text, reference=item.reference,
                                                     answerable=item.answerable)
            row["answers"][m] = a
            done += 1
            if progress:
                progress(done, total, f"{item.id} · {m}")
        if item.expected_docs and row["sources"]:
            have = {k.lower() for s in row["sources"] for k in (s["source"], s["doc_id"]) if k}
            row["expected_retrieved"] = round(sum(d.lower() in have for d in item.expected_docs)
                                              / len(item.expected_docs), 4)
        questions.append(row)
    judge_info = judge.describe() if judge is not None else {"model": None, "ran": False,
                                                             "status": "no judge ran: none configured"}
    graded = sum(1 for q in questions for a in q["answers"].values() if a.get("judge") and "error" not in a["judge"])
    judge_info = {**judge_info, "ran": graded > 0, "graded": graded}
    if judge is not None and judge.model and not graded and judge_info["status"].startswith("judged"):
        judge_info["status"] = f"no judge ran: every call to {judge.model} failed"
    settings = {"max_tokens": int(max_tokens), "support_threshold": threshold, "k": k, "mode": mode,
                "support_check": "rag.verify.check"}
    return AnswerRun(collection, list(models), questions, summarize(questions, models), judge_info, settings,
                     list(golden))


def open_run_judge(engine, name: str | None = None):
    """The judge of a run: ``name`` (a catalog id/alias/route, or "none"), else ``evaluation.judge_model``, on the
    endpoints where it can answer now (:func:`rag.judge.open_judge`)."""
    from .judge import open_judge

    name = engine.settings.evaluation.judge_model if name is None else name
    return open_judge(engine.live_catalog(), name, health=engine.health)


# --- saved runs and exports ----------------------------------------------------------------------------------
def runs_root(data_dir) -> Path:
    return Path(data_dir) / RUNS_DIR


def save(result: AnswerRun, data_dir) -> str:
    """Write the run under ``<data_dir>/answer-runs/<id>/``; returns the id."""
    now = dt.datetime.now()
    run_id = f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    root = runs_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{run_id}"
    tmp.mkdir()
    try:
        result.id, result.created_at = run_id, now.isoformat(timespec="seconds")
        (tmp / "run.json").write_text(json.dumps(result.to_dict(), default=str), encoding="utf-8")
        (tmp / "golden.jsonl").write_text("".join(json.dumps({k: v for k, v in asdict(g).items() if v not in (None, [])})
                                                  + "\n" for g in result.golden), encoding="utf-8")
        os.replace(tmp, root / run_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_id


def load(data_dir, run_id: str) -> AnswerRun:
    if not _ID_RE.match(str(run_id or "")):
        raise InvalidInput(f"{run_id!r} is not a saved answer-run id (YYYYMMDD-HHMMSS-xxxxxx).")
    d = runs_root(data_dir) / run_id
    try:
        raw = json.loads((d / "run.json").read_text(encoding="utf-8"))
        golden = load_golden(d / "golden.jsonl")
    except (OSError, ValueError) as e:
        raise StoredDataError(f"The saved answer run {run_id} cannot be read ({e}): delete {d}.") from None
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise StoredDataError(f"The saved answer run {run_id} has format version {raw.get('version')!r} (this app "
                              f"reads {FORMAT_VERSION}): run the evaluation again.")
    return AnswerRun(raw["collection"], raw["models"], raw["questions"], raw["summary"], raw["judge"],
                     raw["settings"], golden, raw["id"], raw["created_at"])


def list_saved(data_dir) -> list[dict]:
    """Saved runs, newest first: {id, created_at, collection, models, questions, judge}."""
    root = runs_root(data_dir)
    out = []
    for d in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
        if not _ID_RE.match(d.name):
            continue
        try:
            raw = json.loads((d / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if raw.get("version") == FORMAT_VERSION:
            out.append({"id": raw["id"], "created_at": raw["created_at"], "collection": raw["collection"],
                        "models": raw["models"], "questions": len(raw["questions"]),
                        "judge": (raw.get("judge") or {}).get("model") if (raw.get("judge") or {}).get("ran") else None})
    return out


CSV_COLUMNS = ["id", "question", "answerable", "model", "answered_by", "fell_back", "error", "citation_validity",
               "citation_coverage", "supported_rate", "refusal", "expected_doc_recall", "reference_similarity",
               "ttft_ms", "tokens_per_s", "judge_groundedness", "judge_quality", "judge_reason", "judge_error",
               "answer"]


def rows(result: AnswerRun) -> list[dict]:
    """One row per question and model (the CSV's rows)."""
    out = []
    for q in result.questions:
        for m in result.models:
            a = q["answers"].get(m) or {}
            s = a.get("scores") or {}
            j = a.get("judge") or {}
            out.append({"id": q["id"], "question": q["question"], "answerable": q["answerable"], "model": m,
                        "answered_by": a.get("answered_by"), "fell_back": a.get("fell_back"),
                        "error": a.get("error") or q.get("error"),
                        **{c: s.get(c) for c in ("citation_validity", "citation_coverage", "supported_rate",
                                                 "refusal", "expected_doc_recall", "reference_similarity",
                                                 "ttft_ms", "tokens_per_s")},
                        "judge_groundedness": j.get("groundedness"), "judge_quality": j.get("quality"),
                        "judge_reason": j.get("reason"), "judge_error": j.get("error"), "answer": a.get("text")})
    return out


def to_csv(result: AnswerRun) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows(result):
        w.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def _cell(v):
    """A CSV cell: empty for None; text a spreadsheet would run as a formula gets a leading ' (as rag.evalruns)."""
    if v is None:
        return ""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


__all__ = ["GoldenItem", "AnswerRun", "AnswerEvalCancelled", "parse_golden", "load_golden", "resolve_models",
           "run", "open_run_judge", "score_answer", "sentences", "is_refusal", "summarize", "save", "load", "list_saved",
           "rows", "to_csv", "EXAMPLE_SET", "AUTO_METRICS", "FORMAT_VERSION", "MAX_MODELS", "REFUSAL_RE"]
