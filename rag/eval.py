"""BEIR-style evaluation: nDCG@10, recall@10, recall@100 and MRR@10 with hits mapped to documents.

A document's rank is the rank of its best chunk (max-pooling over passages).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .errors import InvalidInput

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def _open_text(path: str | Path):
    try:
        return open(path, encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"{path}: cannot be read ({e.strerror or 'I/O error'}); check the path.") from None


def load_queries(path: str | Path) -> dict[str, str]:
    out = {}
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out[str(rec["_id"])] = rec["text"]
            except (ValueError, KeyError, TypeError):
                raise InvalidInput(f"{path}:{n}: not a BEIR query line: each line must be a JSON object with "
                                   "\"_id\" and \"text\".") from None
    return out


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter="\t")
        for n, row in enumerate(reader, 1):
            if not row or (n == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # header
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                raise InvalidInput(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score' with a whole-number score.")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def doc_ranking(hits) -> list[str]:
    """Document ids in order of their best chunk."""
    seen, out = set(), []
    for h in hits:
        d = h.chunk.doc_id
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def score_query(ranked: list[str], rel: dict[str, int]) -> dict[str, float]:
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    n_rel = sum(1 for g in rel.values() if g > 0)
    mrr = next((1.0 / (i + 1) for i, d in enumerate(ranked[:10]) if rel.get(d, 0) > 0), 0.0)
    return {
        "ndcg@10": dcg / idcg if idcg > 0 else 0.0,
        "recall@10": sum(1 for d in ranked[:10] if rel.get(d, 0) > 0) / n_rel if n_rel else 0.0,
        "recall@100": sum(1 for d in ranked[:100] if rel.get(d, 0) > 0) / n_rel if n_rel else 0.0,
        "mrr@10": mrr,
    }


def evaluate(retriever, queries: dict[str, str], qrels: dict[str, dict[str, int]],
             modes=("sparse", "dense", "hybrid"), depth_chunks: int = 300, progress=None) -> dict:
    """Mean metrics per mode over the queries that have judgements."""
    qids = [q for q in queries if q in qrels]
    if not qids:
        raise InvalidInput("No query in the queries file has a judgement in the qrels file: check that the ids match.")
    # one batched encode of every query, reused by every mode (the per-query path is what the app times)
    vectors = retriever.embedder.encode_queries([queries[q] for q in qids])
    out = {}
    for mode in modes:
        totals = dict.fromkeys(METRICS, 0.0)
        ms = []
        for i, qid in enumerate(qids):
            res = retriever.search(queries[qid], mode=mode, k=depth_chunks, depth=depth_chunks,
                                   query_vector=vectors[i])
            ms.append(res.retrieval_ms)
            for m, v in score_query(doc_ranking(res.hits), qrels[qid]).items():
                totals[m] += v
            if progress:
                progress(mode, i + 1, len(qids))
        out[mode] = {m: round(v / len(qids), 4) for m, v in totals.items()}
        ms.sort()
        out[mode]["queries"] = len(qids)
        out[mode]["p50_ms_after_embedding"] = round(ms[len(ms) // 2], 2)
    return out


__all__ = ["evaluate", "load_queries", "load_qrels", "score_query", "doc_ranking", "METRICS"]
