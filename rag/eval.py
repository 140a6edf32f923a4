"""Retrieval evaluation on BEIR-format judgements: configurations run side by side, scored as trec_eval scores.

Metrics (per query, then the mean over every query that has at least one judgement):

- ``ndcg@k``: DCG = sum over the top k of ``grade / log2(rank + 1)`` (linear gain: the judged grade itself; a
  document judged 0 or below, or not judged, gains 0), divided by the DCG of the ideal ordering of every
  judged document of the query. This is trec_eval's ``ndcg_cut.k``, which BEIR reports.
- ``recall@k``: relevant documents (grade > 0) in the top k / relevant documents of the query.
- ``mrr@10``: 1 / rank of the first relevant document in the top 10, else 0.
- latency: each query's search time with its vector already computed (queries are embedded in one batch,
  shared by every configuration), p50 and p95 per configuration.

A query with judgements but no relevant document scores 0 (trec_eval does the same); a query that retrieves
nothing scores 0. Documents are ranked by their best chunk (max-pooling over passages); documents whose best
chunks tie are ordered as trec_eval orders a run file's ties (document id, descending), so a saved run file
scores the same in trec_eval as here.

A configuration is named by what it runs (``parse_config``): ``sparse``, ``dense``, ``hybrid`` (the settings'
fusion and weights), ``hybrid-rrf``, ``hybrid-convex``, weights ``hybrid-convex-0.5-0.5`` (dense, sparse) and
the chunks retrieved per query ``hybrid-k50``, and ``-rerank`` last, combinable in that order:
``hybrid-rrf-1-1-k100-rerank``.

A ``-rerank`` configuration sends the first ``rerank.top_n`` chunks of its list to the rerank NIM
(:class:`rag.rerank.Reranker`, as the app's rerank stage does) before the document ranking; documents are then
ranked by their first chunk in the reranked list (run-file scores count down from the number of documents, since
rerank logits and fused scores are not on one scale). It needs a rerank endpoint (``rerank.base_url`` or the
hosted key; ``rerank.enabled`` need not be on) and is refused without one. A query whose rerank call fails
(timeout, HTTP error, ...) is scored in fused order and counted in ``EvalResult.rerank`` (``rerank_fallbacks``
in the summary), so a figure computed in fused order is never taken for a reranked one.
"""
from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import HybridRagError, InvalidInput

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
CURVE_KS = (1, 2, 3, 5, 10, 20, 50, 100)  # the cut-offs of the nDCG@k and recall@k curves
RUN_DEPTH = 100       # documents kept per query in a run (and a run file)
EVAL_CHUNKS = 300     # chunks retrieved per query unless a configuration says -kN (documents come from them)
DEFAULT_CONFIGS = ("sparse", "dense", "hybrid")
MAX_CONFIGS = 12

_CONFIG_RE = re.compile(r"^(sparse|dense|hybrid)(?:-(rrf|convex))?(?:-(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?))?"
                        r"(?:-k(\d+))?(-rerank)?$")
_CONFIG_HELP = ("a configuration is MODE[-FUSION][-WDENSE-WSPARSE][-kK][-rerank]: sparse, dense, hybrid, hybrid-rrf, "
                "hybrid-convex, hybrid-convex-0.5-0.5, hybrid-k50, hybrid-rerank (fusion and weights for hybrid only; "
                "-rerank needs a rerank endpoint)")


class EvalCancelled(HybridRagError):
    """The evaluation was stopped before it finished; nothing was saved."""


# -- judgements ---------------------------------------------------------------------------------------

def _open_text(path: str | Path):
    try:
        return open(path, encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"{path}: cannot be read ({e.strerror or 'I/O error'}); check the path.") from None


def load_queries(path: str | Path) -> dict[str, str]:
    """A BEIR ``queries.jsonl``: ``{"_id": ..., "text": ...}`` per line → {query id: text}."""
    out = {}
    with _open_text(path) as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    qid, text = str(rec["_id"]), rec["text"]
                    if not isinstance(text, str) or not qid.strip():
                        raise TypeError
                except (ValueError, KeyError, TypeError, RecursionError):
                    raise InvalidInput(f"{path}:{n}: not a BEIR query line: each line must be a JSON object with "
                                       "\"_id\" and \"text\" (a string).") from None
                out[qid] = text
        except UnicodeDecodeError:
            raise InvalidInput(f"{path}: is not UTF-8 text; a BEIR queries.jsonl is UTF-8 JSON lines.") from None
    return out


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """A BEIR ``qrels.tsv`` (``query-id<TAB>corpus-id<TAB>score``, an optional header) → {query: {doc: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(path) as f:
        try:
            for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if n == 1 and not row[-1].strip().lstrip("-").isdigit():
                    continue  # header
                if len(row) < 3 or not row[2].strip().lstrip("-").isdigit() or not row[0].strip() \
                        or not row[1].strip():
                    raise InvalidInput(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score' with a whole-number "
                                       "score.")
                qrels.setdefault(row[0].strip(), {})[row[1].strip()] = int(row[2])
        except UnicodeDecodeError:
            raise InvalidInput(f"{path}: is not UTF-8 text; a BEIR qrels file is UTF-8 tab-separated text.") from None
        except csv.Error as e:
            raise InvalidInput(f"{path}: cannot be read as tab-separated text ({e}).") from None
    return qrels


# -- metrics ------------------------------------------------------------------------------------------

def ndcg_at(ranked: list[str], rel: dict[str, int], k: int) -> float:
    dcg = sum(max(rel.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], rel: dict[str, int], k: int) -> float:
    n_rel = sum(1 for g in rel.values() if g > 0)
    return sum(1 for d in ranked[:k] if rel.get(d, 0) > 0) / n_rel if n_rel else 0.0


def mrr_at(ranked: list[str], rel: dict[str, int], k: int = 10) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if rel.get(d, 0) > 0), 0.0)


def score_query(ranked: list[str], rel: dict[str, int]) -> dict[str, float]:
    """The four headline metrics of one query's document ranking."""
    return {"ndcg@10": ndcg_at(ranked, rel, 10), "recall@10": recall_at(ranked, rel, 10),
            "recall@100": recall_at(ranked, rel, 100), "mrr@10": mrr_at(ranked, rel, 10)}


def doc_scores(hits, depth: int = RUN_DEPTH) -> list[tuple[str, float]]:
    """(document id, its best chunk's score), best first; ties by document id, descending (trec_eval's order)."""
    best: dict[str, float] = {}
    for h in hits:
        d = h.chunk.doc_id
        if d not in best or h.score > best[d]:
            best[d] = float(h.score)
    return sorted(best.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:depth]


def doc_positions(hits, depth: int = RUN_DEPTH) -> list[tuple[str, float]]:
    """(document id, score) in the order of each document's first chunk in ``hits`` (a reranked list, whose
    scores are not on one scale); the score counts down from the number of documents, so a run file keeps the
    order."""
    order = list(dict.fromkeys(h.chunk.doc_id for h in hits))
    return [(d, float(len(order) - i)) for i, d in enumerate(order[:depth])]


def doc_ranking(hits) -> list[str]:
    """Document ids in order of their best chunk."""
    return [d for d, _ in doc_scores(hits, depth=len(hits))]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# -- configurations -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalConfig:
    """One retrieval configuration; ``name`` is also its run file's name (``<name>.run``)."""

    name: str
    mode: str
    fusion: str | None = None            # None: the settings' retrieval.fusion
    weights: tuple[float, float] | None = None  # (dense, sparse); None: the settings' weights
    k: int | None = None                 # chunks retrieved per query; None: EVAL_CHUNKS
    rerank: bool = False                 # the rerank stage over the first rerank.top_n chunks

    def retrieval_settings(self, base):
        """The retrieval settings this configuration runs with (``base``: the app's ``RetrievalSettings``)."""
        upd = {}
        if self.fusion:
            upd["fusion"] = self.fusion
        if self.weights:
            upd["dense_weight"], upd["sparse_weight"] = self.weights
        return base.model_copy(update=upd)

    def search_args(self) -> dict:
        k = self.k or EVAL_CHUNKS
        return {"mode": self.mode, "k": k, "depth": EVAL_CHUNKS if self.k is None else None}

    def describe(self, base) -> dict:
        s = self.retrieval_settings(base)
        out = {"name": self.name, "mode": self.mode, "chunks": self.k or EVAL_CHUNKS}
        if self.mode == "hybrid":
            out.update(fusion=s.fusion, dense_weight=s.dense_weight, sparse_weight=s.sparse_weight)
            if s.fusion == "rrf":
                out["rrf_k"] = s.rrf_k
        if self.rerank:
            out["rerank"] = True
        return out


def parse_config(spec: str) -> EvalConfig:
    name = (spec or "").strip()
    m = _CONFIG_RE.match(name)
    if not m:
        raise InvalidInput(f"Unknown configuration {spec!r}: {_CONFIG_HELP}.")
    mode, fusion, wd, ws, k, rerank = m.groups()
    if mode != "hybrid" and (fusion or wd):
        raise InvalidInput(f"Configuration {spec!r}: fusion and weights apply to hybrid only ({_CONFIG_HELP}).")
    weights = (float(wd), float(ws)) if wd is not None else None
    if weights and weights[0] + weights[1] <= 0:
        raise InvalidInput(f"Configuration {spec!r}: at least one weight must be above 0.")
    if k is not None and not 1 <= int(k) <= 1000:
        raise InvalidInput(f"Configuration {spec!r}: -kK takes 1 to 1000 chunks.")
    return EvalConfig(name, mode, fusion, weights, int(k) if k is not None else None, rerank=bool(rerank))


def parse_configs(specs) -> list[EvalConfig]:
    """A comma-separated string (or a list of strings) of configuration names, each once, in order."""
    items = specs.split(",") if isinstance(specs, str) else list(specs or [])
    out, seen = [], set()
    for s in items:
        s = str(s).strip()
        if s and s not in seen:
            seen.add(s)
            out.append(parse_config(s))
    if not out:
        raise InvalidInput(f"No configuration given: {_CONFIG_HELP}.")
    if len(out) > MAX_CONFIGS:
        raise InvalidInput(f"{len(out)} configurations: at most {MAX_CONFIGS} per run.")
    return out


# -- running and scoring ------------------------------------------------------------------------------------

Run = dict[str, list[tuple[str, float]]]  # query id -> [(document id, score)], best first


@dataclass
class EvalResult:
    """Runs of several configurations over the same judged queries, with everything derived from them."""

    queries: dict[str, str]                      # the judged queries that ran
    qrels: dict[str, dict[str, int]]
    runs: dict[str, Run]                         # configuration name -> run
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # per configuration, per query
    configs: list[dict] = field(default_factory=list)  # EvalConfig.describe() of each
    info: dict = field(default_factory=dict)     # collection, embedder, when, ...
    rerank: dict[str, dict] = field(default_factory=dict)  # per -rerank configuration: applied, fallbacks, reasons

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    def ranked(self, name: str, qid: str) -> list[str]:
        return [d for d, _ in self.runs[name].get(qid, [])]

    def per_query(self, name: str) -> dict[str, dict[str, float]]:
        return {q: score_query(self.ranked(name, q), self.qrels[q]) for q in self.queries}

    def summary(self) -> dict[str, dict]:
        """Mean metrics, query count and latency per configuration: the object ``--json`` prints."""
        out = {}
        n = len(self.queries)
        for name in self.runs:
            totals = dict.fromkeys(METRICS, 0.0)
            for m in self.per_query(name).values():
                for k, v in m.items():
                    totals[k] += v
            row = {k: round(v / n, 4) if n else 0.0 for k, v in totals.items()}
            ms = self.latency_ms.get(name, [])
            row.update(queries=n, p50_ms=round(percentile(ms, 50), 2), p95_ms=round(percentile(ms, 95), 2))
            if name in self.rerank:   # the queries scored in fused order because the rerank call failed
                row.update(rerank_applied=self.rerank[name]["applied"], rerank_fallbacks=self.rerank[name]["fallbacks"])
            out[name] = row
        return out

    def curves(self) -> dict[str, dict[str, dict[int, float]]]:
        """Mean nDCG@k and recall@k for k in ``CURVE_KS``, per configuration."""
        out = {}
        n = len(self.queries) or 1
        for name in self.runs:
            nd = dict.fromkeys(CURVE_KS, 0.0)
            rc = dict.fromkeys(CURVE_KS, 0.0)
            for q in self.queries:
                ranked, rel = self.ranked(name, q), self.qrels[q]
                for k in CURVE_KS:
                    nd[k] += ndcg_at(ranked, rel, k)
                    rc[k] += recall_at(ranked, rel, k)
            out[name] = {"ndcg": {k: round(v / n, 4) for k, v in nd.items()},
                         "recall": {k: round(v / n, 4) for k, v in rc.items()}}
        return out


def judged(queries: dict[str, str], qrels: dict[str, dict[str, int]], limit: int | None = None) -> dict[str, str]:
    """The queries that have judgements (the first ``limit`` of them), in the queries file's order."""
    out = {q: t for q, t in queries.items() if q in qrels}
    if not out:
        raise InvalidInput("No query in the queries file has a judgement in the qrels file: check that the ids match "
                           "(the first column of qrels.tsv is the query's \"_id\").")
    if limit:
        out = dict(list(out.items())[:limit])
    return out


def reranker_for(configs: list[EvalConfig], settings, environ=None):
    """The :class:`rag.rerank.Reranker` the ``-rerank`` configurations need (None when there are none); refuses
    them, saying what to set, when no rerank endpoint is configured."""
    from .rerank import Reranker, not_configured

    wanting = [c.name for c in configs if c.rerank]
    if not wanting:
        return None
    why = not_configured(settings.rerank, environ)
    if why:
        raise InvalidInput(f"{', '.join(wanting)}: {why}. Or leave out the -rerank configurations.")
    return Reranker.from_settings(settings)


def rerank_note(result: "EvalResult") -> str:
    """One line per -rerank configuration with fallbacks: how many queries were scored in fused order, and why."""
    lines = []
    for name, r in result.rerank.items():
        if r["fallbacks"]:
            why = "; ".join(f"{reason} ({n}x)" for reason, n in r["reasons"].items())
            lines.append(f"{name}: the rerank call failed for {r['fallbacks']} of {r['applied'] + r['fallbacks']} "
                         f"queries, scored in fused order: {why}")
    return "\n".join(lines)


def run_configs(retriever, queries: dict[str, str], qrels: dict[str, dict[str, int]], configs: list[EvalConfig],
                *, progress: Callable[[str, int, int], None] | None = None,
                cancelled: Callable[[], bool] | None = None, reranker=None) -> EvalResult:
    """Run every configuration over the judged queries (``retriever``: a :class:`rag.retrieve.Retriever`;
    ``reranker``: a :class:`rag.rerank.Reranker` for the ``-rerank`` configurations, see :func:`reranker_for`)."""
    from .retrieve import Retriever

    if reranker is None and any(c.rerank for c in configs):
        raise InvalidInput(f"{', '.join(c.name for c in configs if c.rerank)}: no reranker given; build one with "
                           "rag.eval.reranker_for(configs, settings).")
    queries = judged(queries, qrels)
    qids = list(queries)
    t = time.perf_counter()
    vectors = retriever.embedder.encode_queries([queries[q] for q in qids])  # once, shared by every configuration
    embed_ms = (time.perf_counter() - t) * 1000 / max(len(qids), 1)
    result = EvalResult(queries, {q: qrels[q] for q in qids}, {},
                        configs=[c.describe(retriever.settings) for c in configs],
                        info={"embed_ms_per_query": round(embed_ms, 2), "chunks_per_query": EVAL_CHUNKS,
                              "run_depth": RUN_DEPTH})
    for cfg in configs:
        r = Retriever(retriever.collection, retriever.embedder, cfg.retrieval_settings(retriever.settings))
        run, ms = {}, []
        reranked = {"applied": 0, "fallbacks": 0, "reasons": {}} if cfg.rerank else None
        for i, qid in enumerate(qids):
            if cancelled is not None and cancelled():
                raise EvalCancelled("The evaluation was stopped; nothing was saved.")
            res = r.search(queries[qid], query_vector=vectors[i], **cfg.search_args())
            if reranked is None:
                ms.append(res.retrieval_ms)
                run[qid] = doc_scores(res.hits)
            else:
                hits, rinfo = reranker.rerank(queries[qid], res.hits)
                ms.append(res.retrieval_ms + rinfo["ms"])
                if rinfo["applied"]:
                    reranked["applied"] += 1
                    run[qid] = doc_positions(hits)
                else:             # scored as the configuration without -rerank, and counted
                    reranked["fallbacks"] += 1
                    why = (rinfo["reason"] or "?").removeprefix("rerank skipped, fused order kept: ")
                    reranked["reasons"][why] = reranked["reasons"].get(why, 0) + 1
                    run[qid] = doc_scores(res.hits)
            if progress:
                progress(cfg.name, i + 1, len(qids))
        result.runs[cfg.name] = run
        result.latency_ms[cfg.name] = ms
        if reranked is not None:
            result.rerank[cfg.name] = reranked
    if result.rerank:
        s = reranker.settings
        result.info["rerank"] = {"model": s.model, "where": reranker.where, "top_n": s.top_n}
    return result


def evaluate(retriever, queries: dict[str, str], qrels: dict[str, dict[str, int]],
             modes=DEFAULT_CONFIGS, depth_chunks: int = EVAL_CHUNKS, progress=None) -> dict:
    """Mean metrics per configuration (``modes``: configuration names) over the judged queries."""
    configs = parse_configs(list(modes))
    if depth_chunks != EVAL_CHUNKS:
        configs = [EvalConfig(c.name, c.mode, c.fusion, c.weights, c.k or depth_chunks, c.rerank) for c in configs]
    return run_configs(retriever, queries, qrels, configs, progress=progress).summary()


__all__ = ["evaluate", "run_configs", "EvalResult", "EvalConfig", "EvalCancelled", "parse_config", "parse_configs",
           "load_queries", "load_qrels", "score_query", "ndcg_at", "recall_at", "mrr_at", "doc_scores", "doc_ranking",
           "doc_positions", "reranker_for", "rerank_note",
           "judged", "METRICS", "CURVE_KS", "DEFAULT_CONFIGS"]
