"""Fusion on a Milvus collection: the app's fusions against Milvus's own rankers, nDCG@10 on SciFact.

    python -m bench.store_fusion --data-dir /tmp/sf --collection scifact-milvus [--scifact DIR] [--limit N]

Rows: the app's convex fusion over the union (what the retriever does on Milvus), convex fusion with z-scores
over each list (a candidate absent from a list at that list's minimum), Milvus ``hybrid_search`` with
``WeightedRanker(dense_weight, sparse_weight)`` and with ``RRFRanker(rrf_k)``, and the app's RRF with equal
weights. Each takes the top ``retrieval.depth`` of each side; documents are ranked by their best chunk.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .data import find_scifact


def _z(rows, scores) -> dict:
    s = np.asarray(scores, dtype=np.float64)
    z = (s - s.mean()) / s.std() if len(s) and s.std() > 1e-12 else np.zeros(len(s))
    return dict(zip(rows, z))


def per_list_convex(dense, sparse, w) -> dict:
    zd, zs = _z(*dense), _z(*sparse)
    fd, fs = min(zd.values(), default=0.0), min(zs.values(), default=0.0)
    return {r: w["dense"] * zd.get(r, fd) + w["sparse"] * zs.get(r, fs) for r in set(zd) | set(zs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.store_fusion", description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--collection", required=True, help="a Milvus collection (e.g. made by hybrid-rag migrate)")
    ap.add_argument("--scifact", default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N judged queries")
    args = ap.parse_args(argv)
    from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

    from rag.config import load_settings
    from rag.embed import make_embedder
    from rag.eval import doc_ranking, judged, load_qrels, load_queries, ndcg_at
    from rag.retrieve import Retriever, rrf
    from rag.store import milvus, open_collection

    folder, _ = find_scifact(args.scifact)
    s = load_settings(data_dir=args.data_dir)
    col = open_collection(args.collection, s)
    qrels = load_qrels(folder / "qrels.tsv")
    queries = judged(load_queries(folder / "queries.jsonl"), qrels, args.limit)
    emb = make_embedder(s.embedder)
    vecs = emb.encode_queries(list(queries.values()))
    r, c, depth = s.retrieval, milvus.client(s), s.retrieval.depth
    w = {"dense": r.dense_weight, "sparse": r.sparse_weight}
    retriever = Retriever(col, emb, r)

    def ndcg(fused: dict, qid: str) -> float:
        top = sorted(fused.items(), key=lambda kv: -kv[1])[:depth]
        best: dict[str, float] = {}
        for ch, (_, sc) in zip(col.chunks([row for row, _ in top]), top):
            best[ch.doc_id] = max(best.get(ch.doc_id, -np.inf), sc)
        return ndcg_at([d for d, _ in sorted(best.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)], qrels[qid], 10)

    out: dict[str, list] = {k: [] for k in ("app convex, union", "app convex, per list", "Milvus WeightedRanker",
                                            "Milvus RRFRanker", "app RRF, equal weights")}
    for (qid, text), v in zip(queries.items(), vecs):
        hits = retriever.search(text, mode="hybrid", k=depth, query_vector=v).hits
        out["app convex, union"].append(ndcg_at(doc_ranking(hits), qrels[qid], 10))
        dense, sparse = col.dense_search(v, depth), col.sparse_search(text, depth)
        out["app convex, per list"].append(ndcg(per_list_convex(dense, (sparse.rows, sparse.scores), w), qid))
        out["app RRF, equal weights"].append(ndcg(rrf({"dense": dense[0], "sparse": sparse.rows}, {}, r.rrf_k), qid))
        reqs = [AnnSearchRequest([v.tolist()], "vector", {"metric_type": "IP", "params": {"ef": depth}}, depth,
                                 expr=col._filter),
                AnnSearchRequest([" ".join(col.tokenizer(text))], "sparse", {"metric_type": "BM25"}, depth,
                                 expr=col._filter)]
        for name, ranker in (("Milvus WeightedRanker", WeightedRanker(w["dense"], w["sparse"])),
                             ("Milvus RRFRanker", RRFRanker(r.rrf_k))):
            res = c.hybrid_search(col._mname, reqs, ranker, limit=depth, output_fields=["pk"])[0]
            out[name].append(ndcg({h["pk"]: h["distance"] for h in res}, qid))
    print("| fusion on Milvus | nDCG@10 |\n|---|---|")
    for name, v in out.items():
        print(f"| {name} | {np.mean(v):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
