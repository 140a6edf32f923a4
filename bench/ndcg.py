"""The retrieval quality cost of the faster embedders: SciFact nDCG@10 (dense and hybrid) with documents and
queries embedded by torch (the reference, fp32 sentence-transformers) and by each other backend.

Every set of vectors is computed in this run (or read back from this data dir's cache, keyed by document
ids and backend); one collection per backend, one chunk per abstract (title + text, as the app indexes it).
Queries: those with a relevant document among the loaded ones (every judged query on the whole corpus).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .data import REFERENCE_BACKEND, embed_corpus

EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _collection(name: str, docs: list[dict], vecs: np.ndarray, settings):
    from rag.store import (
        CollectionNotFound,
        CollectionWriter,
        DocRecord,
        delete_collection,
        open_collection,
    )
    from rag.types import Chunk

    try:
        delete_collection(name, settings.data_dir)  # a leftover of an earlier run with --keep
    except CollectionNotFound:
        pass
    with CollectionWriter(name, settings, embedder_id=EMBEDDER_ID, dim=vecs.shape[1]) as w:
        for d, v in zip(docs, vecs):
            c = Chunk(id=f"{d['_id']}#0", doc_id=d["_id"], source=d["_id"], text=d["text"], start=0,
                      end=len(d["text"]), title=d.get("title", ""))
            w.add(DocRecord(d["_id"], d["_id"], d.get("title", ""), d["_id"]), [c], v[None])
        w.commit()
    return open_collection(name, settings)


def ndcg(scifact_dir: Path, docs: list[dict], reference: tuple[np.ndarray, dict], settings, cache: Path,
         backends=("onnx-int8",)) -> dict:
    """``reference``: the documents' torch vectors and how they were obtained (``data.reference_vectors``)."""
    from rag.eval import evaluate, load_qrels, load_queries
    from rag.retrieve import Retriever

    from .embedding import local_embedder

    ids = {d["_id"] for d in docs}
    qrels = {q: rel for q, rel in load_qrels(scifact_dir / "qrels.tsv").items()
             if any(d in ids and g > 0 for d, g in rel.items())}  # all of them with the whole corpus
    queries = {q: t for q, t in load_queries(scifact_dir / "queries.jsonl").items() if q in qrels}
    if not queries:
        return {"skipped": "no judged query has a relevant document among the loaded ones"}
    ref_vecs, ref_info = reference
    out: dict = {"documents": len(docs), "queries_judged": len(queries),
                 "vectors": {REFERENCE_BACKEND: ref_info}}
    runs = [(REFERENCE_BACKEND, ref_vecs, local_embedder(REFERENCE_BACKEND, settings))]
    for b in backends:
        emb = local_embedder(b, settings)
        vecs, info = embed_corpus(docs, emb, cache)
        info["mean_cosine_to_torch"] = round(float((vecs * ref_vecs).sum(1).mean()), 5)
        out["vectors"][b] = info
        runs.append((b, vecs, emb))
    for name, vecs, emb in runs:
        t = time.perf_counter()
        col = _collection(f"ndcg-{name}", docs, vecs, settings)
        res = evaluate(Retriever(col, emb, settings.retrieval), queries, qrels, modes=("dense", "hybrid"),
                       depth_chunks=100)
        out[name] = {m: res[m]["ndcg@10"] for m in res} | {"seconds": round(time.perf_counter() - t, 1)}
    for b in backends:
        out[b]["delta_vs_torch"] = {m: round(out[b][m] - out[REFERENCE_BACKEND][m], 4) for m in ("dense", "hybrid")}
    return out


__all__ = ["ndcg"]
