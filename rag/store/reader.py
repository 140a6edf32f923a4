"""Reading collections: one loaded, immutable version at a time, cached and reloaded when CURRENT moves.

Query-time settings apply to every collection as it is opened: ``dense.use_gpu``, ``dense.ivf_nprobe``,
``dense.hnsw_ef_search`` and ``sparse.backend``. Build-time settings (chunking, BM25 parameters, the
dense index kind) are a collection's own, fixed when it was created (see ``writer.py``).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from ..dense import DenseIndex
from ..sparse import SparseIndex
from ..types import Chunk
from .base import Collection, DocRecord, SparseHits
from .layout import (
    FORMAT,
    CollectionError,
    collection_path,
    collections_root,
    current_version,
)

log = logging.getLogger(__name__)

CHUNK_COLS = "id, doc_id, source, text, start, end_, page, heading, title"


def row_to_chunk(r) -> Chunk:
    return Chunk(id=r[0], doc_id=r[1], source=r[2], text=r[3], start=r[4], end=r[5],
                 page=r[6], heading=r[7], title=r[8] or "")


class FilesCollection(Collection):
    """One loaded, immutable version of a files-backend collection. Safe to share between threads."""

    backend = "files"

    def __init__(self, name: str, path: Path, version: str, dense_settings, sparse_settings):
        self.name, self.path, self.version = name, path, version
        vdir = path / version
        self.vdir = vdir
        try:
            self.manifest = json.loads((vdir / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise CollectionError(
                f"Collection {name!r} cannot be read: its version {version} is missing or damaged "
                f"({type(e).__name__}); delete the collection and ingest again.") from None
        if self.manifest.get("format") != FORMAT:
            raise CollectionError(
                f"Collection {name!r} has format {self.manifest.get('format')}, this build reads {FORMAT}: "
                "re-ingest it into a new collection.")
        self.dense = DenseIndex.load(vdir / "dense", dense_settings)
        self.sparse = SparseIndex.load(vdir / "sparse", backend=sparse_settings.backend)
        self.sparse.warm_up()  # compile the BM25 kernel now, not inside the first query
        # one connection, opened now and shared (under a lock): a thread that first queries after a writer
        # has garbage-collected this version still reads it, through the file this connection holds open
        self._con = sqlite3.connect(f"file:{vdir / 'chunks.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        self._con_lock = threading.Lock()
        # mapped now for the same reason: exact dense scores and corpus moments still read a collected version
        try:
            self._vectors = np.load(vdir / "vectors.npy", mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise CollectionError(f"Collection {name!r} {version} was written before vectors were kept beside the "
                                  "index: ingest its documents again into a new collection.") from None
        n = self.manifest["counts"]["chunks"]
        if not (self.dense.size == self.sparse.size == n):
            raise CollectionError(
                f"Collection {name!r} {version} is inconsistent (dense {self.dense.size}, sparse "
                f"{self.sparse.size}, chunks {n}); delete it and ingest again.")

    # -- search --------------------------------------------------------------------------------
    exact_dense_scores = True

    def dense_search(self, query_vector, k):
        scores, rows = self.dense.search(query_vector, self.dense.candidates(k))
        rows, scores = rows[0], scores[0]
        if self.dense.kind != "flat" and self.dense.storage != "flat" and len(rows):
            # quantised codes (pq, sq8, fp16) found the candidates; their stored float32 vectors rank them: at 1M
            # SciFact-derived chunks, IVF-SQ8 recall@10 0.962 -> 0.975 at the default nprobe 64, IVF-PQ 0.973
            # with 150 candidates for 100 (docs/benchmarks.md)
            scores = self.dense_scores(query_vector, rows)
            order = np.lexsort((rows, -scores))[:k]
            rows, scores = rows[order], scores[order]
        return rows.tolist(), scores

    def sparse_search(self, query, k):
        # one posting-list pass: the top rows and the corpus mean/std
        rows, scores, moments = self.sparse.search_tokens_moments(self.sparse.tokenizer(query), k)
        return SparseHits(rows.tolist(), scores, moments)

    def sparse_scores(self, query, rows):
        return self.sparse.scores_of(self.sparse.tokenizer(query), rows)

    def dense_scores(self, query_vector, rows):
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(self._vectors[rows], dtype=np.float32) @ query_vector.astype(np.float32)

    def dense_moments(self, query_vector):
        return self._stats().dense_z(query_vector)

    def _stats(self) -> "CorpusStats":
        with _STATS_LOCK:
            st = _STATS.get(str(self.vdir))
        if st is not None:
            return st
        st = CorpusStats(self.vdir, self._vectors)  # outside the lock: other versions' searches never wait
        with _STATS_LOCK:
            st = _STATS.setdefault(str(self.vdir), st)
            while len(_STATS) > _STATS_MAX:  # every commit makes a new version: never grow without bound
                _STATS.pop(next(iter(_STATS)))
        return st

    # -- reading -------------------------------------------------------------------------------
    def _query(self, sql: str, params=()) -> list:
        with self._con_lock:
            return self._con.execute(sql, params).fetchall()

    def chunks(self, rows) -> list[Chunk]:
        """Chunks at these index rows, in the given order."""
        rows = [int(r) for r in rows]
        found = {}
        for i in range(0, len(rows), 900):
            part = rows[i:i + 900]
            q = f"SELECT row, {CHUNK_COLS} FROM chunks WHERE row IN ({','.join('?' * len(part))})"
            for r in self._query(q, part):
                found[r[0]] = row_to_chunk(r[1:])
        return [found[r] for r in rows]

    def documents(self) -> list[dict]:
        cur = self._query(
            "SELECT doc_id, source, title, sha256, n_chunks, bytes, format, added_at FROM docs ORDER BY source, doc_id")
        keys = ["doc_id", "source", "title", "sha256", "chunks", "bytes", "format", "added_at"]
        return [dict(zip(keys, r)) for r in cur]

    def document_chunks(self, doc_id: str, limit: int = 1000) -> list[Chunk]:
        cur = self._query(
            f"SELECT {CHUNK_COLS} FROM chunks WHERE doc_id = ? ORDER BY row LIMIT ?", (doc_id, limit))
        return [row_to_chunk(r) for r in cur]

    def row_doc_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT doc_id FROM chunks ORDER BY row")]

    def counts(self):
        [(chunks,)], [(docs,)] = self._query("SELECT COUNT(*) FROM chunks"), self._query("SELECT COUNT(*) FROM docs")
        return {"chunks": chunks, "documents": docs}

    def export(self, batch: int = 256):
        vectors = self._vectors
        docs = self._query("SELECT doc_id, source, title, sha256, bytes, format FROM docs ORDER BY rowid")
        for i in range(0, len(docs), batch):
            part = docs[i:i + batch]
            marks = ",".join("?" * len(part))
            rows = self._query(f"SELECT row, {CHUNK_COLS} FROM chunks WHERE doc_id IN ({marks}) ORDER BY row",
                               [d[0] for d in part])
            by_doc: dict[str, list] = {}
            for r in rows:
                by_doc.setdefault(r[2], []).append(r)
            for d in part:
                rs = by_doc.get(d[0], [])
                yield (DocRecord(d[0], d[1], d[2] or "", d[3], d[4] or 0, d[5] or ""),
                       [row_to_chunk(r[1:]) for r in rs],
                       np.asarray(vectors[[r[0] for r in rs]], dtype=np.float32))


class CorpusStats:
    """Per-version statistics for corpus-level z-normalisation of dense scores (the stored vectors' mean and
    covariance). Computed once per version and cached beside it (``dense_stats.npz``)."""

    def __init__(self, vdir: Path, vectors: np.ndarray):
        cache = vdir / "dense_stats.npz"
        try:
            with np.load(cache, allow_pickle=False) as z:
                self.mean, self.cov = z["mean"], z["cov"]
        except (OSError, KeyError, ValueError):
            self.mean, self.cov = self._compute(vectors)
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


_CACHE: dict[tuple, FilesCollection] = {}
_CACHE_LOCK = threading.Lock()


def _query_key(settings) -> tuple:
    d, s = settings.dense, settings.sparse
    return (d.use_gpu, d.ivf_nprobe, d.hnsw_ef_search, s.backend)


def open_collection(name: str, settings) -> FilesCollection:
    """The current version of a collection in ``settings.data_dir``, opened with the query-time settings;
    cached, and reloaded when a writer has swapped in a new version."""
    path = collection_path(name, settings.data_dir)
    version = current_version(path)
    key = (str(path), _query_key(settings))
    with _CACHE_LOCK:
        col = _CACHE.get(key)
        if col is not None and col.version == version:
            return col
    col = FilesCollection(name, path, version, settings.dense, settings.sparse)
    with _CACHE_LOCK:
        _CACHE[key] = col
    return col


def forget(path: Path) -> None:
    """Drop every cached version of the collection at ``path`` (after it was deleted)."""
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if k[0] == str(path)]:
            del _CACHE[key]


def list_collections(data_dir: str | Path) -> list[dict]:
    """Name, version and counts of every collection that has a loadable version."""
    root = collections_root(data_dir)
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not (d / "CURRENT").is_file():
            continue
        try:
            version = current_version(d)
            manifest = json.loads((d / version / "manifest.json").read_text())
        except (OSError, ValueError, CollectionError):
            continue
        out.append({"name": d.name, "backend": "files", "version": version, "documents": manifest["counts"]["documents"],
                    "chunks": manifest["counts"]["chunks"], "embedder": manifest["embedder"]["id"],
                    "updated": manifest["build"]["time"]})
    return out


__all__ = ["FilesCollection", "CorpusStats", "open_collection", "list_collections", "row_to_chunk", "CHUNK_COLS"]
