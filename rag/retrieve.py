"""Hybrid retrieval: dense (FAISS) + sparse (BM25) candidate lists, fused.

Fusion methods (``retrieval.fusion``):
- ``rrf``: reciprocal rank fusion, ``sum_r w_r / (rrf_k + rank_r)``.
- ``convex``: ``w_dense * z_dense + w_sparse * z_sparse``, each score z-normalised with the mean and
  standard deviation of that retriever's scores over the *whole collection* for this query. The dense
  moments come from the vectors' mean and covariance (``q.mu`` and ``q' C q``, cached per version in
  ``dense_stats.npz``); the BM25 ones from the sum and sum of squares of every row's score, which the
  numba kernel accumulates in the same posting-list pass that finds the top rows (the numpy backend
  computes the full score array). Every candidate in the union of the two top-``depth`` lists gets its
  real score on both sides (the stored vector; its BM25 score), so the fusion is exact over that union.
  A chunk in neither list is not scored. Measured best on SciFact (see README), so it is the default.
  ``convex`` without the stats falls back to z-normalising over each candidate list.

Every hit keeps its explanation: dense rank/score, sparse rank/score, fused score and rank.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InvalidInput
from .store import Collection, CollectionError
from .types import Hit

log = logging.getLogger(__name__)

MODES = ("sparse", "dense", "hybrid")


@dataclass
class RetrievalResult:
    hits: list[Hit]
    query_vector: np.ndarray | None  # the normalised query embedding, kept for the router
    retrieval_ms: float
    mode: str
    timings: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)  # how many rows each retriever offered to fusion


def rrf(lists: dict[str, list[int]], weights: dict[str, float], k: float = 60.0) -> dict[int, float]:
    """Reciprocal rank fusion of ranked row lists (rank 1 = best)."""
    fused: dict[int, float] = {}
    for name, rows in lists.items():
        w = weights.get(name, 1.0)
        for rank, row in enumerate(rows, start=1):
            fused[row] = fused.get(row, 0.0) + w / (k + rank)
    return fused


def convex(scored: dict[str, tuple[list[int], np.ndarray]], weights: dict[str, float]) -> dict[int, float]:
    """Weighted sum of per-list z-normalised scores; absent candidates get the list's minimum."""
    fused: dict[int, float] = {}
    normed = {}
    for name, (rows, scores) in scored.items():
        if len(rows) == 0:
            continue
        s = np.asarray(scores, dtype=np.float64)
        sd = s.std()
        z = (s - s.mean()) / sd if sd > 1e-12 else np.zeros_like(s)
        normed[name] = (dict(zip(rows, z)), float(z.min()))
    every = set().union(*(m[0].keys() for m in normed.values())) if normed else set()
    for row in every:
        fused[row] = sum(weights.get(name, 1.0) * m.get(row, floor) for name, (m, floor) in normed.items())
    return fused


class CorpusStats:
    """Per-version statistics for corpus-level z-normalisation of dense scores, plus row access
    to the stored vectors. Computed once per version and cached beside it."""

    def __init__(self, vdir: Path):
        self.vectors = np.load(vdir / "vectors.npy", mmap_mode="r", allow_pickle=False)
        cache = vdir / "dense_stats.npz"
        try:
            with np.load(cache, allow_pickle=False) as z:
                self.mean, self.cov = z["mean"], z["cov"]
        except (OSError, KeyError, ValueError):
            self.mean, self.cov = self._compute(self.vectors)
            tmp = vdir / f".dense_stats.{os.getpid()}.{threading.get_ident()}.npz"
            try:
                np.savez(tmp, mean=self.mean, cov=self.cov)
                os.replace(tmp, cache)
            except OSError as e:  # a read-only data dir still searches; it just recomputes next time
                log.info("could not cache dense stats in %s: %s", vdir, e)

    @staticmethod
    def _compute(x: np.ndarray, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        n, d = x.shape
        total = np.zeros(d)
        outer = np.zeros((d, d))
        for i in range(0, n, block):
            part = np.asarray(x[i:i + block], dtype=np.float64)
            total += part.sum(0)
            outer += part.T @ part
        mean = total / max(n, 1)
        cov = outer / max(n, 1) - np.outer(mean, mean)
        return mean, cov

    def dense_z(self, q: np.ndarray) -> tuple[float, float]:
        q = q.astype(np.float64)
        return float(q @ self.mean), float(np.sqrt(max(q @ self.cov @ q, 1e-12)))


_STATS: dict[str, CorpusStats] = {}
_STATS_LOCK = threading.Lock()
_STATS_MAX = 8  # versions whose stats stay cached (each holds a dim x dim covariance); oldest dropped first


def corpus_stats(col: Collection) -> CorpusStats | None:
    key = str(col.vdir)
    with _STATS_LOCK:
        st = _STATS.get(key)
    if st is not None:
        return st
    try:  # computed outside the lock: searches of other versions never wait for it (two may compute once each)
        st = CorpusStats(col.vdir)
    except FileNotFoundError:
        return None
    with _STATS_LOCK:
        st = _STATS.setdefault(key, st)
        while len(_STATS) > _STATS_MAX:  # every commit makes a new version: never grow without bound
            _STATS.pop(next(iter(_STATS)))
    return st


class Retriever:
    """Searches one collection with one embedder and one set of retrieval settings."""

    def __init__(self, collection: Collection, embedder, settings):
        if collection.embedder_id != embedder.model_id:
            raise CollectionError(
                f"Collection {collection.name!r} was embedded with {collection.embedder_id!r} but the embedder is "
                f"{embedder.model_id!r}: set embedder.kind back, or re-ingest into a new collection.")
        self.collection, self.embedder, self.settings = collection, embedder, settings

    def search(self, query: str, *, mode: str | None = None, k: int | None = None,
               depth: int | None = None, query_vector: np.ndarray | None = None) -> RetrievalResult:
        """Top-``k`` hits for ``query``. ``query_vector`` skips the embedding when the caller already
        has it (batch evaluation)."""
        s = self.settings
        mode = mode or s.mode
        if mode not in MODES:
            raise InvalidInput(f"Unknown retrieval mode {mode!r}: use one of {', '.join(MODES)}.")
        k = s.k if k is None else int(k)
        if not 1 <= k <= 1000:
            raise InvalidInput(f"k must be between 1 and 1000, got {k}.")
        depth = max(s.depth if depth is None else int(depth), k)
        col = self.collection
        t0 = time.perf_counter()
        timings = {}
        dense_rows, dense_scores = [], np.zeros(0)
        sparse_rows, sparse_scores = [], np.zeros(0)
        # embedded in every mode: the router reuses this vector, so routing costs no extra model call
        qvec = self.embedder.encode_queries([query])[0] if query_vector is None else query_vector
        timings["embed_ms"] = (time.perf_counter() - t0) * 1000
        if mode in ("dense", "hybrid"):
            t = time.perf_counter()
            sc, rows = col.dense.search(qvec, depth)
            dense_rows, dense_scores = rows[0].tolist(), sc[0]
            timings["dense_ms"] = (time.perf_counter() - t) * 1000
        sparse_of = {}  # row -> BM25 score, for every row a hit can come from
        sparse_moments = (0.0, 0.0)
        if mode in ("sparse", "hybrid"):
            t = time.perf_counter()
            # one posting-list pass: the top rows, the dense candidates' scores, and the corpus mean/std
            rows, sc, of_dense, sparse_moments = col.sparse.search_tokens_with(
                col.sparse.tokenizer(query), depth, np.asarray(dense_rows, dtype=np.int64))
            sparse_rows, sparse_scores = rows.tolist(), sc
            sparse_of = dict(zip(dense_rows, map(float, of_dense)))
            sparse_of.update(zip(sparse_rows, map(float, sc)))
            timings["sparse_ms"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        exact_dense = None
        weights = {"dense": s.dense_weight, "sparse": s.sparse_weight}
        if mode == "dense":
            fused = dict(zip(dense_rows, map(float, dense_scores)))
        elif mode == "sparse":
            fused = dict(zip(sparse_rows, map(float, sparse_scores)))
        elif s.fusion == "rrf":
            fused = rrf({"dense": dense_rows, "sparse": sparse_rows}, weights, s.rrf_k)
        else:
            stats = corpus_stats(col)
            if stats is None:
                fused = convex({"dense": (dense_rows, dense_scores), "sparse": (sparse_rows, sparse_scores)}, weights)
            else:
                fused, exact_dense = _convex_corpus(qvec, sparse_of, sparse_moments, stats, weights)
        top = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        timings["fuse_ms"] = (time.perf_counter() - t) * 1000

        d_rank = {r: i + 1 for i, r in enumerate(dense_rows)}
        s_rank = {r: i + 1 for i, r in enumerate(sparse_rows)}
        d_score = dict(zip(dense_rows, map(float, dense_scores)))
        if exact_dense:
            d_score.update(exact_dense)
        chunks = col.chunks([r for r, _ in top])
        hits = []
        for i, ((row, score), chunk) in enumerate(zip(top, chunks), start=1):
            s_score = sparse_of.get(row, 0.0) if mode != "dense" else None
            hits.append(Hit(chunk=chunk, score=float(score), fused_rank=i,
                            dense_rank=d_rank.get(row), dense_score=d_score.get(row),
                            sparse_rank=s_rank.get(row), sparse_score=s_score))
        ms = (time.perf_counter() - t0) * 1000
        return RetrievalResult(hits=hits, query_vector=qvec, retrieval_ms=ms, mode=mode, timings=timings,
                               candidates={"dense": len(dense_rows), "sparse": len(sparse_rows)})


def _convex_corpus(qvec, sparse_of: dict[int, float], sparse_moments: tuple[float, float],
                   stats: CorpusStats, weights):
    """Convex fusion with corpus-level z-scores, exact for every candidate of either list.
    ``sparse_of`` holds the BM25 score of every candidate (the union of both lists)."""
    if not sparse_of:
        return {}, {}
    union = np.fromiter(sorted(sparse_of), dtype=np.int64, count=len(sparse_of))
    dm, ds = stats.dense_z(qvec)
    dense = np.asarray(stats.vectors[union], dtype=np.float32) @ qvec.astype(np.float32)
    sm, ss = sparse_moments
    sparse = np.fromiter((sparse_of[r] for r in union.tolist()), dtype=np.float64, count=len(union))
    zs = (sparse - sm) / ss if ss > 1e-12 else np.zeros(len(union))
    fused = weights["dense"] * (dense - dm) / ds + weights["sparse"] * zs
    return dict(zip(union.tolist(), fused.tolist())), dict(zip(union.tolist(), dense.tolist()))


__all__ = ["Retriever", "RetrievalResult", "rrf", "convex", "MODES"]
