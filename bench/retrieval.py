"""Retrieval at scale: build a collection of N synthetic chunks through the store, then time sparse,
dense and hybrid search against baselines in the same run.

Baselines, side by side at every size:
- sparse: bm25s' own numpy scorer + a full partial sort (``backend="numpy"``), and rank-bm25's
  BM25Okapi (Python, rescans the corpus) while its predicted time stays under ``--rank-bm25-bound``;
- dense: exact inner product (IndexFlatIP) against the approximate index the store chose; recall@10 of
  the approximate index is measured against the exact one;
- hybrid: the same Retriever with the numpy sparse scorer and exact dense search.
Index build: the store's commit, split into phases (manifest ``build.seconds``), against bm25s'
own index builder on the same token ids.
"""
from __future__ import annotations

import gc
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rag.dense import DenseIndex
from rag.retrieve import Retriever
from rag.sparse import SparseIndex
from rag.store import CollectionWriter, DocRecord, open_collection
from rag.types import Chunk

from .common import recall_at, summary, timed

log = logging.getLogger(__name__)


class FixedEmbedder:
    """Returns precomputed query vectors, so search timings leave the query embedding out."""

    kind = "local"
    model_id = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, texts: list[str], vecs: np.ndarray):
        self.dim = vecs.shape[1]
        self._by_text = {t: v for t, v in zip(texts, vecs)}

    def encode_queries(self, texts):
        return np.stack([self._by_text[t] for t in texts])

    encode_documents = encode_queries


def build_collection(name: str, data_dir: Path, settings, texts: list[str], vecs: np.ndarray,
                     chunks_per_doc: int = 4) -> dict:
    """Write one version with every chunk through CollectionWriter; returns its build timings."""
    t0 = time.perf_counter()
    with CollectionWriter(name, data_dir, embedder_id=FixedEmbedder.model_id, dim=vecs.shape[1],
                          chunking=settings.chunking.model_dump(), sparse_settings=settings.sparse,
                          dense_settings=settings.dense, index_title=False) as w:
        for s in range(0, len(texts), chunks_per_doc):
            doc = f"syn-{s // chunks_per_doc}"
            part = texts[s:s + chunks_per_doc]
            chunks = [Chunk(id=f"{doc}#{i}", doc_id=doc, source=f"{doc}.txt", text=t, start=0, end=len(t))
                      for i, t in enumerate(part)]
            w.add(DocRecord(doc, f"{doc}.txt", "", f"sha-{doc}"), chunks, vecs[s:s + len(part)])
        staged = time.perf_counter() - t0
        w.commit()
    col = open_collection(name, data_dir)
    out = {"total_s": round(time.perf_counter() - t0, 2), "staging_s": round(staged, 2)}
    out.update(col.manifest["build"].get("seconds", {}))
    return out


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else (
        path.stat().st_size if path.exists() else 0)


def memory_report(col, n: int) -> dict:
    """Bytes per chunk of each component, as stored, plus the resident growth of a fresh process that
    opens the collection and answers queries (measured in a subprocess)."""
    v = col.vdir
    sparse_index = sum(_bytes(f) for f in (v / "sparse" / "bm25s").glob("*"))
    parts = {"dense_index": _bytes(v / "dense" / "dense.faiss"), "sparse_index": sparse_index,
             "chunk_store": _bytes(v / "chunks.sqlite")}
    disk_only = {"vectors_npy": _bytes(v / "vectors.npy"),
                 "sparse_token_ids": _bytes(v / "sparse" / "tokens.npy") + _bytes(v / "sparse" / "offsets.npy")}
    out = {f"{k}_B_per_chunk": round(b / n, 1) for k, b in parts.items()}
    out["total_B_per_chunk"] = round(sum(parts.values()) / n, 1)
    out.update({f"{k}_B_per_chunk (disk only)": round(b / n, 1) for k, b in disk_only.items()})
    code = (
        "import json,sys,numpy as np\n"
        "from bench.common import rss_bytes\n"
        "import rag.store, rag.dense, rag.sparse, faiss, bm25s, numba\n"
        "r0=rss_bytes()\n"
        f"col=rag.store.open_collection({col.name!r}, {str(col.path.parent.parent)!r})\n"
        "q=np.random.default_rng(0).standard_normal((20,col.dense.dim)).astype('float32')\n"
        "[col.dense.search(x,100) for x in q]\n"
        "[col.sparse.search(w,100) for w in ['cell protein','cancer risk','vitamin bone density']]\n"
        "col.chunks(list(range(0,min(col.size,1000),7)))\n"
        "print(json.dumps({'rss_delta':rss_bytes()-r0}))\n")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                             cwd=str(Path(__file__).resolve().parent.parent))
        delta = json.loads(res.stdout.strip().splitlines()[-1])["rss_delta"]
        out["resident_B_per_chunk"] = round(delta / n, 1)
    except Exception as e:  # the stored sizes still stand
        out["resident_error"] = f"{type(e).__name__}: {e}"
    return out


def _rank_bm25(tokens_lists, q_tokens, bound_s: float, prev: dict | None) -> dict:
    """rank-bm25 BM25Okapi, skipped when the previous size predicts it would take over ``bound_s``."""
    n = len(tokens_lists)
    if prev and prev.get("p50_ms"):
        predicted = prev["p50_ms"] / 1000 * (n / prev["size"]) * len(q_tokens) + prev["build_s"] * n / prev["size"]
        if predicted > bound_s:
            return {"skipped": f"predicted {predicted:.0f}s (build + {len(q_tokens)} queries) > bound {bound_s:.0f}s",
                    "size": n}
    from rank_bm25 import BM25Okapi

    t = time.perf_counter()
    ref = BM25Okapi(tokens_lists, k1=1.5, b=0.75)
    build = time.perf_counter() - t
    ms = []
    deadline = time.perf_counter() + bound_s
    for q in q_tokens:
        t = time.perf_counter()
        s = np.asarray(ref.get_scores(q))
        np.argpartition(-s, min(99, n - 1))[:100]
        ms.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() > deadline:
            break
    del ref
    gc.collect()
    return {**summary(ms), "build_s": round(build, 2), "size": n}


def run_size(n: int, synth, queries: list[str], q_vecs: np.ndarray, settings, data_dir: Path,
             args, prev_rank: dict | None) -> dict:
    log.info("size %d: synthesising", n)
    res: dict = {"size": n}
    t = time.perf_counter()
    texts = synth.texts(n)
    vecs = synth.vectors(n)
    res["synth_s"] = round(time.perf_counter() - t, 2)
    name = f"bench-{n}"
    shutil.rmtree(data_dir / "collections" / name, ignore_errors=True)  # a leftover of an earlier run
    log.info("size %d: building the collection", n)
    res["build"] = build_collection(name, data_dir, settings, texts, vecs)
    del texts
    gc.collect()
    col = open_collection(name, data_dir)
    res["dense_kind"] = col.dense.kind + ("" if col.dense.kind == "flat" else f"-{col.dense.storage}")
    qn = len(queries)
    fixed = FixedEmbedder(queries, q_vecs)

    # -- dense: approximate (what the store built) vs exact ----------------------------------
    exact = DenseIndex(vecs.shape[1], exact_max=10**12, use_gpu="never")
    t = time.perf_counter()
    exact.build(vecs)
    res["build"]["exact_flat_build_s"] = round(time.perf_counter() - t, 2)
    del vecs
    _, truth = exact.search(q_vecs, 10)
    _, found = col.dense.search(q_vecs, 10)
    res["dense"] = {"index": summary(timed(lambda v: col.dense.search(v, settings.retrieval.depth), list(q_vecs))),
                    "exact": summary(timed(lambda v: exact.search(v, settings.retrieval.depth),
                                           list(q_vecs[: max(10, qn // 4)] if n >= 500_000 else q_vecs))),
                    "recall@10_vs_exact": recall_at(found, truth)}

    # -- sparse: compiled top-k vs bm25s numpy scorer vs rank-bm25 ---------------------------
    numpy_sparse = SparseIndex.load(col.vdir / "sparse", backend="numpy")
    q_tokens = [col.sparse.tokenizer(q) for q in queries]
    res["sparse"] = {
        "ours": summary(timed(lambda q: col.sparse.search_tokens(q, settings.retrieval.depth), q_tokens)),
        "bm25s_numpy": summary(timed(lambda q: numpy_sparse.search_tokens(q, settings.retrieval.depth),
                                     q_tokens[: max(10, qn // 4)] if n >= 500_000 else q_tokens)),
    }
    # same scores at every rank; the rows can differ only among equal scores at the cut-off, where
    # argpartition (the numpy path) keeps an arbitrary one of the tied rows
    same = sum(np.allclose(col.sparse.search_tokens(q, 10)[1], numpy_sparse.search_tokens(q, 10)[1], rtol=1e-6)
               for q in q_tokens[:50])
    res["sparse"]["same_top10_scores_as_numpy"] = f"{same}/{min(50, qn)}"
    stored = SparseIndex.load_token_ids(col.vdir / "sparse")
    ids, offsets, vocab = stored
    inv = np.empty(len(vocab), dtype=object)
    for tok, i in vocab.items():
        inv[i] = tok
    ids = np.asarray(ids)
    if n <= args.bm25s_build_max:
        import bm25s

        lists = [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(n)]
        p = col.sparse.params
        t = time.perf_counter()
        bm25s.BM25(method=p["method"], k1=p["k1"], b=p["b"]).index((lists, vocab), show_progress=False)
        res["build"]["bm25s_index_from_ids_s"] = round(time.perf_counter() - t, 2)
        del lists
    t = time.perf_counter()
    SparseIndex.from_settings(settings.sparse).build_from_ids(ids, offsets, vocab)
    res["build"]["ours_sparse_from_ids_s"] = round(time.perf_counter() - t, 2)
    tokens_lists = None
    if not prev_rank or "skipped" not in prev_rank:
        tokens_lists = [inv[ids[offsets[i]:offsets[i + 1]]].tolist() for i in range(n)]
    res["sparse"]["rank_bm25"] = (_rank_bm25(tokens_lists, q_tokens[:args.rank_bm25_queries], args.rank_bm25_bound,
                                             prev_rank) if tokens_lists is not None else
                                  {"skipped": "skipped at a smaller size", "size": n})
    del tokens_lists, ids, inv
    gc.collect()

    # -- the app's Retriever: ours vs baseline configuration ----------------------------------
    r = Retriever(col, fixed, settings.retrieval)
    res["retriever"] = {}
    for mode in ("sparse", "dense", "hybrid"):
        res["retriever"][mode] = summary(timed(lambda q: r.search(q, mode=mode), queries))
    base_col = _Swapped(col, dense=exact, sparse=numpy_sparse)
    rb = Retriever(base_col, fixed, settings.retrieval)
    base_q = queries[: max(10, qn // 4)] if n >= 500_000 else queries
    res["retriever"]["hybrid_baseline(numpy bm25s + exact)"] = summary(timed(lambda q: rb.search(q, mode="hybrid"), base_q))
    # hybrid end to end, query embedding included, with the configured embedder
    if args.embedder is not None:
        re = Retriever(col, args.embedder, settings.retrieval)
        res["retriever"][f"hybrid+embed({getattr(args.embedder, 'backend', 'torch')})"] = summary(
            timed(lambda q: re.search(q, mode="hybrid"), queries))
    res["memory"] = memory_report(col, n)
    del exact, numpy_sparse, base_col, r, rb
    gc.collect()
    return res


class _Swapped:
    """A collection view with other dense/sparse indexes (for the baseline configuration)."""

    def __init__(self, col, dense, sparse):
        self._col, self.dense, self.sparse = col, dense, sparse

    def __getattr__(self, item):
        return getattr(self._col, item)


def dense_variants(vecs: np.ndarray, q_vecs: np.ndarray, settings, storages=("flat", "fp16", "sq8"),
                   kinds=("hnsw", "ivf")) -> dict:
    """Approximate index variants on the same vectors: build time, bytes per vector, recall@10, latency."""
    exact = DenseIndex(vecs.shape[1], exact_max=10**12, use_gpu="never").build(vecs)
    _, truth = exact.search(q_vecs, 10)
    out = {"size": len(vecs), "exact": {**summary(timed(lambda v: exact.search(v, 100), list(q_vecs))),
                                        "bytes_per_vector": round(exact.memory_bytes() / len(vecs), 1)}}
    s = settings.dense
    for kind in kinds:
        for storage in storages:
            idx = DenseIndex(vecs.shape[1], exact_max=0, hnsw_m=s.hnsw_m, ef_construction=s.hnsw_ef_construction,
                             ef_search=s.hnsw_ef_search, use_gpu="never", storage=storage, approx=kind,
                             ivf_nprobe=getattr(s, "ivf_nprobe", 32))
            t = time.perf_counter()
            idx.build(vecs)
            build = time.perf_counter() - t
            _, found = idx.search(q_vecs, 10)
            out[f"{kind}-{storage}"] = {**summary(timed(lambda v: idx.search(v, 100), list(q_vecs))),
                                        "recall@10": recall_at(found, truth), "build_s": round(build, 2),
                                        "bytes_per_vector": round(idx.memory_bytes() / len(vecs), 1)}
            del idx
            gc.collect()
    return out


__all__ = ["run_size", "build_collection", "dense_variants", "FixedEmbedder", "memory_report"]
