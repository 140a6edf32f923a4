"""FAISS dense index over L2-normalised vectors (inner product = cosine).

Small collections use exact search (IndexFlatIP). Above ``exact_max`` vectors an HNSW graph is
built instead; the benchmark reports its recall@10 against exact search. When faiss-gpu sees a
CUDA device, exact search is copied onto the GPU; the probe runs once per process and is logged once.
"""
from __future__ import annotations

import json
import logging
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1


@lru_cache(maxsize=1)
def gpu_count() -> int:
    """Number of GPUs FAISS can use (0 with faiss-cpu or without CUDA). Probed and logged once."""
    import faiss

    try:
        n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except Exception as e:  # a broken CUDA install must not take search down
        log.warning("FAISS GPU probe failed (%s); searching on the CPU", e)
        n = 0
    log.info("FAISS dense search on %s", f"GPU ({n} device(s))" if n else "CPU (no GPU visible to faiss)")
    return n


_gpu_resources = None
_gpu_lock = threading.Lock()


def _to_gpu(index):
    global _gpu_resources
    import faiss

    with _gpu_lock:
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_gpu_resources, 0, index)


class DenseIndex:
    """Rows 0..n-1 of a vector matrix, searchable by inner product."""

    def __init__(self, dim: int, exact_max: int = 200_000, hnsw_m: int = 32,
                 ef_construction: int = 80, ef_search: int = 96, use_gpu: str = "auto"):
        self.dim = int(dim)
        self.exact_max, self.hnsw_m = exact_max, hnsw_m
        self.ef_construction, self.ef_search = ef_construction, ef_search
        self.use_gpu = use_gpu
        self.index = None  # the CPU index (what is saved)
        self._search_index = None  # the CPU index or its GPU copy
        self.kind = "flat"

    @classmethod
    def from_settings(cls, dim: int, s) -> "DenseIndex":
        return cls(dim, exact_max=s.exact_max, hnsw_m=s.hnsw_m, ef_construction=s.hnsw_ef_construction,
                   ef_search=s.hnsw_ef_search, use_gpu=s.use_gpu)

    @property
    def size(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    @property
    def device(self) -> str:
        return "gpu" if self._search_index is not None and self._search_index is not self.index else "cpu"

    def _new_index(self, n: int):
        import faiss

        if n <= self.exact_max:
            self.kind = "flat"
            return faiss.IndexFlatIP(self.dim)
        self.kind = "hnsw"
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _activate(self):
        self._search_index = self.index
        if self.index is None or self.use_gpu == "never" or self.kind != "flat":
            return
        if gpu_count() > 0:
            try:
                self._search_index = _to_gpu(self.index)
            except Exception as e:
                log.warning("Could not copy the FAISS index to the GPU (%s); searching on the CPU", e)

    def build(self, vectors: np.ndarray) -> "DenseIndex":
        vectors = _as_matrix(vectors, self.dim)
        self.index = self._new_index(len(vectors))
        if len(vectors):
            self.index.add(vectors)
        self._activate()
        return self

    def add(self, vectors: np.ndarray) -> "DenseIndex":
        """Append rows to the existing index (HNSW graphs grow in place; no rebuild)."""
        vectors = _as_matrix(vectors, self.dim)
        if self.index is None:
            return self.build(vectors)
        self.index.add(vectors)
        self._activate()
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) arrays of shape (n_queries, k'), best first; rows are -1-free."""
        queries = _as_matrix(queries, self.dim)
        if self.size == 0 or k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        k = min(k, self.size)
        scores, rows = self._search_index.search(queries, k)
        if (rows < 0).any():  # HNSW can return fewer than k
            valid = (rows >= 0).all(axis=0)
            scores, rows = scores[:, valid], rows[:, valid]
        return scores, rows.astype(np.int64)

    def save(self, path: str | Path) -> None:
        import faiss

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.index is not None:
            faiss.write_index(self.index, str(path / "dense.faiss"))
        meta = {"format": FORMAT, "dim": self.dim, "kind": self.kind, "size": self.size,
                "exact_max": self.exact_max, "hnsw_m": self.hnsw_m,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search}
        (path / "dense.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, use_gpu: str = "auto") -> "DenseIndex":
        import faiss

        path = Path(path)
        meta = json.loads((path / "dense.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: dense index format {meta.get('format')} is not {FORMAT}; re-ingest the collection.")
        idx = cls(meta["dim"], meta["exact_max"], meta["hnsw_m"], meta["ef_construction"], meta["ef_search"], use_gpu)
        idx.kind = meta["kind"]
        if (path / "dense.faiss").exists():
            idx.index = faiss.read_index(str(path / "dense.faiss"))
            if idx.kind == "hnsw":
                idx.index.hnsw.efSearch = idx.ef_search
        idx._activate()
        return idx


def _as_matrix(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or (x.size and x.shape[1] != dim):
        raise ValueError(f"expected vectors of dimension {dim}, got shape {x.shape}")
    return x.reshape(-1, dim)


__all__ = ["DenseIndex", "gpu_count"]
