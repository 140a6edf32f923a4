"""How often the app's convex fusion differs from scoring the whole collection.

    python -m bench.fusion_exact --data-dir D --collection C --queries queries.jsonl [--depth 100]

The app z-normalises each retriever's scores with corpus-level moments but scores only the union of the
two top-``depth`` candidate lists. This scores every chunk of the collection the same way (every dense
inner product, every BM25 score) and compares the top-10 lists. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--queries", required=True, help="BEIR queries.jsonl")
    ap.add_argument("--depth", type=int, default=None, help="candidates per retriever (default: retrieval.depth)")
    args = ap.parse_args(argv)

    from rag.config import load_settings
    from rag.engine import Engine
    from rag.eval import load_queries

    settings = load_settings(data_dir=args.data_dir)
    if args.depth:
        settings.retrieval.depth = args.depth
    w = settings.retrieval
    engine = Engine(settings)
    retriever = engine.retriever(args.collection)
    col = retriever.collection
    vectors = np.load(col.vdir / "vectors.npy", allow_pickle=False)
    texts = list(load_queries(args.queries).values())
    q_vecs = engine.embedder.encode_queries(texts)
    identical, overlap = 0, []
    for text, q in zip(texts, q_vecs):
        got = [h.chunk.id for h in retriever.search(text, k=10, query_vector=q, mode="hybrid").hits]
        dense = vectors @ q
        sparse = col.sparse.scores(text).astype(np.float64)
        z_sparse = (sparse - sparse.mean()) / sparse.std() if sparse.std() > 0 else np.zeros_like(sparse)
        fused = w.dense_weight * (dense - dense.mean()) / dense.std() + w.sparse_weight * z_sparse
        want = [c.id for c in col.chunks(np.argsort(-fused, kind="stable")[:10])]
        identical += got == want
        overlap.append(len(set(got) & set(want)) / 10)
    print(json.dumps({"collection": args.collection, "chunks": col.size, "queries": len(texts),
                      "depth": settings.retrieval.depth, "identical_top10": identical,
                      "mean_overlap@10": round(float(np.mean(overlap)), 4),
                      "min_overlap@10": round(float(np.min(overlap)), 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
