"""Store backends side by side: Milvus Lite against files at each size, on the same synthetic SciFact chunks.

    python -m bench.store [--sizes 10000,100000] [--queries 200] [--quick] [--out FILE]

Per backend and size: ingest throughput (every chunk written through ``CollectionWriter`` and committed, vectors
given: embedding is left out), hybrid latency p50/p95 (``Retriever.search``, default convex fusion, the query
vectors precomputed), the bytes on disk per chunk, and the resident memory per chunk of a fresh process that opens
the collection and answers 20 queries (its growth over the same process before opening). Chunks and vectors come
from ``bench.data.Synth`` (SciFact vocabulary; vectors around the SciFact documents' embeddings by the app's
embedder); queries are SciFact claims.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import machine, summary
from .data import REPO, Synth, embed_corpus, find_scifact, load_corpus, load_queries
from .retrieval import FixedEmbedder, build_collection

BACKENDS = ("files", "milvus")

_PROBE = """
import json, sys, numpy as np
from bench.common import rss_bytes
from bench.retrieval import FixedEmbedder
from rag.config import load_settings
from rag.retrieve import Retriever
from rag.store import open_collection
data, backend, qfile = sys.argv[1:4]
q = np.load(qfile)
s = load_settings(data_dir=data)
s.store.backend = backend
before = rss_bytes()
col = open_collection("bench", s)
texts = [str(i) for i in range(len(q))]
r = Retriever(col, FixedEmbedder(texts, q), s.retrieval)
for t in texts:
    r.search(t)
print(json.dumps({"rss_growth": rss_bytes() - before}))
"""


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_one(backend: str, n: int, synth: Synth, qvecs: np.ndarray, root: Path) -> dict:
    from rag.config import load_settings
    from rag.retrieve import Retriever
    from rag.store import milvus, open_collection

    data = root / f"{backend}-{n}"
    settings = load_settings(data_dir=data)
    settings.store.backend = backend
    texts, vecs = synth.texts(n), synth.vectors(n)
    build = build_collection("bench", settings, texts, vecs)
    col = open_collection("bench", settings)
    qtexts = [str(i) for i in range(len(qvecs))]
    retriever = Retriever(col, FixedEmbedder(qtexts, qvecs), settings.retrieval)
    for t in qtexts[:3]:
        retriever.search(t)  # warm-up (Milvus Lite builds its indexes in the background after a flush)
    ms = []
    for t in qtexts:
        t0 = time.perf_counter()
        retriever.search(t)
        ms.append((time.perf_counter() - t0) * 1000)
    if backend == "milvus":
        milvus.release(settings)  # the probe process opens the Milvus Lite file itself
    np.save(root / "q.npy", qvecs[:20])
    probe = subprocess.run([sys.executable, "-c", _PROBE, str(data), backend, str(root / "q.npy")], cwd=REPO,
                           capture_output=True, text=True, check=True)
    rss = json.loads(probe.stdout.strip().splitlines()[-1])["rss_growth"]
    return {"backend": backend, "chunks": n, "ingest_s": build["total_s"],
            "ingest_chunks_per_s": round(n / build["total_s"], 1), "hybrid_ms": summary(ms),
            "disk_B_per_chunk": round(_disk(data) / n, 1), "rss_B_per_chunk": round(rss / n, 1)}


def table(rows: list[dict]) -> str:
    out = ["| chunks | backend | ingest (chunks/s) | hybrid p50 ms | hybrid p95 ms | disk B/chunk | memory B/chunk |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['chunks']:,} | {r['backend']} | {r['ingest_chunks_per_s']:,.0f} | {r['hybrid_ms']['p50_ms']:.1f} | "
                   f"{r['hybrid_ms']['p95_ms']:.1f} | {r['disk_B_per_chunk']:,.0f} | {r['rss_B_per_chunk']:,.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="1,000 chunks, 20 queries, the test sample: a smoke run")
    ap.add_argument("--scifact", default=None)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    n_queries = 20 if args.quick else args.queries
    from rag.config import load_settings
    from rag.embed import make_embedder

    folder, _ = find_scifact(Path(REPO / "tests" / "data" / "scifact_sample") if args.quick else args.scifact)
    embedder = make_embedder(load_settings().embedder)
    docs = load_corpus(folder)
    doc_vecs, _ = embed_corpus(docs, embedder)
    qvecs = embedder.encode_queries([q["text"] for q in load_queries(folder)[:n_queries]])
    synth = Synth(docs, doc_vecs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        for n in sizes:
            for backend in BACKENDS:
                rows.append(run_one(backend, n, synth, qvecs, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python -m bench.store " + " ".join(argv or sys.argv[1:]),
                                              "machine": machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
