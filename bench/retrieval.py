"""Retrieval at scale: build a collection of N synthetic chunks through the store, then time sparse,
dense and hybrid search against baselines in the same run, one query at a time.

- sparse: the app's kernel beside bm25s (numba and numpy backends) and rank-bm25 (bench/sparse.py);
- dense: the index the store chose, labelled exact or approximate with its recall@10 against exact
  search (IndexFlatIP) on the same vectors, beside that exact search;
- hybrid: the app's Retriever (query embedding excluded: the vectors are precomputed), beside the same
  Retriever on baseline indexes (bm25s' numpy scorer + exact IndexFlatIP), and end to end with the
  configured query embedder.
Index build: the store's commit split into phases (manifest ``build.seconds``), and the BM25 matrix
from token ids against bm25s' own builder. Memory: bytes per chunk of each stored component, and the
resident growth of a fresh process that opens the collection and searches.
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

from . import dense as bdense
from . import sparse as bsparse
from .common import ratio, recall_at, summary, timed, timed_interleaved

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


def build_collection(name: str, settings, texts: list[str], vecs: np.ndarray, chunks_per_doc: int = 4) -> dict:
    """Write one version with every chunk through CollectionWriter; returns its build timings."""
    t0 = time.perf_counter()
    with CollectionWriter(name, settings, embedder_id=FixedEmbedder.model_id, dim=vecs.shape[1]) as w:
        for s in range(0, len(texts), chunks_per_doc):
            doc = f"syn-{s // chunks_per_doc}"
            part = texts[s:s + chunks_per_doc]
            chunks = [Chunk(id=f"{doc}#{i}", doc_id=doc, source=f"{doc}.txt", text=t, start=0, end=len(t))
                      for i, t in enumerate(part)]
            w.add(DocRecord(doc, f"{doc}.txt", "", f"sha-{doc}"), chunks, vecs[s:s + len(part)])
        staged = time.perf_counter() - t0
        w.commit()
    col = open_collection(name, settings)
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
    parts = {"dense_index": _bytes(v / "dense" / "dense.faiss"), "sparse_index": _bytes(v / "sparse" / "bm25s"),
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
        "from rag.config import load_settings\n"
        f"s=load_settings(data_dir={str(col.path.parent.parent)!r})\n"
        "r0=rss_bytes()\n"
        f"col=rag.store.open_collection({col.name!r}, s)\n"
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


class _Swapped:
    """A collection view with other dense/sparse indexes (for the baseline configuration). Its searches use
    them (the collection's own ``dense_search``/``sparse_search`` are bound to the collection's indexes)."""

    def __init__(self, col, dense, sparse):
        self._col, self.dense, self.sparse = col, dense, sparse

    # the collection's own search code, run over this view's indexes (it reads only self.dense / self.sparse)
    def dense_search(self, query_vector, k):
        return type(self._col).dense_search(self, query_vector, k)

    def sparse_search(self, query, k):
        return type(self._col).sparse_search(self, query, k)

    def sparse_scores(self, query, rows):
        return type(self._col).sparse_scores(self, query, rows)

    def __getattr__(self, item):
        return getattr(self._col, item)


class _PreviousQueryPath:
    """The query path as it was before issue 14, for the end-to-end baseline row: the query embedded through
    the batch path (transformers' tokenizer call, batch planning) and in every mode (sparse too), BM25 run
    after the dense search on the same thread, and every BM25 query scored over the rows it touches (no
    block pass for long posting lists)."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.kind, self.model_id, self.dim = embedder.kind, embedder.model_id, embedder.dim

    def encode_queries(self, texts):
        enc = getattr(self.embedder, "_encode", None)
        return enc(list(texts)) if enc is not None else self.embedder.encode_queries(texts)

    def search(self, retriever, q, mode):
        import rag.parallel
        import rag.sparse

        share, background = rag.sparse.DENSE_PASS_SHARE, rag.parallel.in_background
        rag.sparse.DENSE_PASS_SHARE = float("inf")
        rag.parallel.in_background = rag.parallel.Deferred  # every call on this thread, when asked for
        try:
            return retriever.search(q, mode=mode, query_vector=self.encode_queries([q])[0])
        finally:
            rag.sparse.DENSE_PASS_SHARE, rag.parallel.in_background = share, background


def _reusable(name: str, settings, n: int) -> str | None:
    """``--reuse-collections``: an earlier run's collection of this name and size in the data dir (built from
    the same seeded synthesis), described, or None."""
    try:
        col = open_collection(name, settings)
    except Exception:
        return None
    return f"{name} from an earlier run ({col.size} chunks)" if col.size == n else None


def _read_through(path: Path) -> int:
    """Read every file under ``path`` once (MB read), so that a reused collection starts from a page cache like
    one just built (the query rows would otherwise time disk reads of an earlier run's files)."""
    total = 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    return total >> 20


def end_to_end(col, embedder, settings, queries: list[str], previous_col=None) -> dict:
    """Hybrid and sparse-only search with the configured query embedder, beside the previous query path
    (:class:`_PreviousQueryPath`, over ``previous_col``: the collection with the dense index built before),
    interleaved query by query so that load falls on both alike."""
    backend = getattr(embedder, "backend", "torch")
    now = Retriever(col, embedder, settings.retrieval)
    prev = _PreviousQueryPath(embedder)
    before = Retriever(previous_col or col, prev, settings.retrieval)
    ms = timed_interleaved({
        "hybrid+embed": lambda q: now.search(q, mode="hybrid"),
        "hybrid+embed_previous": lambda q: prev.search(before, q, "hybrid"),
        "sparse+embed": lambda q: now.search(q, mode="sparse"),
        "sparse+embed_previous": lambda q: prev.search(before, q, "sparse"),
    }, queries)
    out = {k: {"embedder": backend, **summary(v)} for k, v in ms.items()}
    for k in ("hybrid+embed", "sparse+embed"):
        out[k]["x_vs_previous_p50"] = ratio(out[k + "_previous"]["p50_ms"], out[k]["p50_ms"])
        out[k]["x_vs_previous_p95"] = ratio(out[k + "_previous"]["p95_ms"], out[k]["p95_ms"])
    return out


def run_size(n: int, synth, queries: list[str], q_vecs: np.ndarray, settings, args, embedder,
             prev_rank: dict | None) -> dict:
    """Every retrieval figure at one collection size. ``embedder`` embeds queries for the end-to-end row."""
    depth = settings.retrieval.depth
    res: dict = {"size": n, "queries": len(queries), "depth": depth}
    t = time.perf_counter()
    texts, vecs = synth.texts(n), synth.vectors(n)
    res["synth_s"] = round(time.perf_counter() - t, 2)
    name = f"bench-{n}"
    reused = _reusable(name, settings, n) if getattr(args, "reuse_collections", False) else None
    if reused:
        log.info("size %d: reusing %s", n, reused)
        res["build"] = {"reused": reused, "page_cache_warmed_mb": _read_through(settings.data_dir / "collections" / name)}
    else:
        shutil.rmtree(settings.data_dir / "collections" / name, ignore_errors=True)  # a leftover of an earlier run
        log.info("size %d: building the collection", n)
        res["build"] = build_collection(name, settings, texts, vecs)
    del texts
    gc.collect()
    col = open_collection(name, settings)

    # -- dense: the store's index (exact or approximate) beside exact search --------------------
    t = time.perf_counter()
    exact = bdense.exact_index(vecs)
    res["build"]["exact_flat_build_s"] = round(time.perf_counter() - t, 2)
    previous = None  # pq: the IVF-SQ8 index the app built before, on the same vectors, for the "previous" rows
    if col.dense.kind == "ivf" and col.dense.storage == "pq":
        t = time.perf_counter()
        sq8 = DenseIndex(vecs.shape[1], settings.dense.model_copy(update={"storage": "sq8", "use_gpu": "never"}))
        previous = _Swapped(col, dense=sq8.build(vecs), sparse=col.sparse)
        res["build"]["previous_sq8_index_s"] = round(time.perf_counter() - t, 2)
    del vecs
    truth = exact.search(q_vecs, 10)[1]
    recall = recall_at(col.dense.search(q_vecs, 10)[1], truth)
    approximate = col.dense.kind != "flat"
    res["dense_kind"] = bdense.short(col.dense)
    res["dense"] = {"index": {"label": bdense.label(col.dense, recall if approximate else None),
                              **bdense.measure(col.dense, q_vecs, None, depth)},
                    "exact": {"label": bdense.label(exact), **bdense.measure(exact, q_vecs, None, depth)},
                    "recall@10_vs_exact": recall}
    res["dense"]["index"]["x_vs_exact_p50"] = ratio(res["dense"]["exact"]["p50_ms"], res["dense"]["index"]["p50_ms"])
    if approximate:
        res["dense"]["index"]["x_vs_exact_is_at_recall@10"] = recall
    # what retrieval gets: the collection's dense search (the index, then quantised candidates ranked by their
    # stored vectors)
    found = np.array([col.dense_search(v, depth)[0][:10] for v in q_vecs])
    res["dense"]["collection"] = {
        "label": "the collection's dense search" + (" (index + exact re-rank of its candidates)"
                                                    if approximate and col.dense.storage != "flat" else ""),
        **summary(timed(lambda v: col.dense_search(v, depth), list(q_vecs))), "recall@10_vs_exact": recall_at(found, truth)}
    if previous is not None:  # the same search over the IVF-SQ8 index, the two taking turns query by query
        ms = timed_interleaved({"now": lambda v: col.dense_search(v, depth),
                                "sq8": lambda v: previous.dense_search(v, depth)}, list(q_vecs))
        found = np.array([previous.dense_search(v, depth)[0][:10] for v in q_vecs])
        now_s, sq8_s = summary(ms["now"]), summary(ms["sq8"])
        res["dense"]["collection_interleaved"] = now_s
        res["dense"]["collection_sq8"] = {"label": bdense.label(previous.dense) + " + exact re-rank", **sq8_s,
                                          "recall@10_vs_exact": recall_at(found, truth),
                                          "x_pq_faster_p50": ratio(sq8_s["p50_ms"], now_s["p50_ms"])}

    # -- sparse: the app's kernel beside bm25s (numba, numpy) and rank-bm25 ----------------------
    q_tokens = bsparse.query_tokens(col, queries)
    res["sparse"] = bsparse.search(col, q_tokens, depth)
    res["sparse"]["rank_bm25"] = bsparse.rank_bm25(col, q_tokens[:args.rank_bm25_queries], depth,
                                                   res["sparse"]["ours_ms"], args.rank_bm25_bound, prev_rank)
    del res["sparse"]["ours_ms"]
    res["build"]["sparse"] = bsparse.build_times(col, args.bm25s_build_max)

    # -- the app's Retriever, beside the same Retriever on baseline indexes ----------------------
    fixed = FixedEmbedder(queries, q_vecs)
    r = Retriever(col, fixed, settings.retrieval)
    res["retriever"] = {mode: summary(timed(lambda q, m=mode: r.search(q, mode=m), queries))
                        for mode in ("sparse", "dense", "hybrid")}
    numpy_sparse = SparseIndex.load(col.vdir / "sparse", backend="numpy")
    rb = Retriever(_Swapped(col, dense=exact, sparse=numpy_sparse), fixed, settings.retrieval)
    base = summary(timed(lambda q: rb.search(q, mode="hybrid"), queries))
    res["retriever"]["hybrid_baseline"] = {"label": "bm25s numpy scorer + exact IndexFlatIP", **base}
    res["retriever"]["hybrid"]["x_vs_baseline_p50"] = ratio(base["p50_ms"], res["retriever"]["hybrid"]["p50_ms"])
    res["retriever"].update(end_to_end(col, embedder, settings, queries, previous))
    res["memory"] = memory_report(col, n)
    return res


__all__ = ["run_size", "build_collection", "FixedEmbedder", "memory_report"]
