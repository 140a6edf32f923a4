"""FAISS dense index over L2-normalised vectors (inner product = cosine).

Small collections use exact search (IndexFlatIP). Above ``dense.exact_max`` vectors an approximate index
is built instead (``dense.approx``): an inverted file (IVF, the default: k-means cells, ``ivf_nprobe`` of
them scanned per query), or an HNSW graph (slow to build on few cores). Both grow in place on adds; an IVF
index is retrained once it has grown fourfold. Their vectors are stored as float32 (``storage: flat``,
1,536 bytes per 384-d vector), float16 (``fp16``, half that), 8-bit scalar-quantised (``sq8``, a quarter)
or, IVF only, 4-bit product-quantised codes scanned with FAISS's SIMD fast-scan kernels (``pq``: dim/2
bytes, 192 per 384-d vector). ``auto`` (the default) is ``pq`` where FAISS sees no GPU and ``sq8`` where it
does. The collection re-ranks the candidates of a quantised index by their stored float32 vectors
(:meth:`DenseIndex.candidates` asks a ``pq`` index for half as many again, at least 100); ``python -m bench`` reports
recall@10 of each against exact search.

With faiss-gpu and a CUDA device (probed once per process, logged once), exact and IVF indexes are copied
to the GPU for search unless ``dense.use_gpu: never``; HNSW and ``pq`` stay on the CPU (FAISS has no GPU
HNSW and no GPU fast-scan). Indexes are always built and saved on the CPU.
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import StoredDataError

log = logging.getLogger(__name__)

FORMAT = 1
STORAGES = ("auto", "flat", "fp16", "sq8", "pq")
APPROX = ("hnsw", "ivf")
_IVF_REBUILD_GROWTH = 4  # an IVF index is retrained once it holds 4x the vectors it was trained on
_PARALLEL_MIN_QUERIES = 16  # fewer queries than this are searched on the calling thread alone
_TRAIN_SAMPLE = 100_000
# candidates a ``pq`` index returns per wanted row (and at least _PQ_MIN_CANDIDATES), for the re-rank by stored
# vectors: at 1M SciFact-derived chunks, nprobe 64, recall@10 0.968 with 100 candidates for 100 rows and 0.973
# with 150, same latency; on SciFact's own 5,183 vectors 15 candidates for 10 rows gave 0.928 (sq8 0.966)
_PQ_CANDIDATES, _PQ_MIN_CANDIDATES = 1.5, 100


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

    def __init__(self, dim: int, settings=None):
        """``settings``: the ``dense`` settings (:class:`rag.config.DenseSettings`); their defaults when None."""
        if settings is None:
            from .config import DenseSettings

            settings = DenseSettings()
        self.dim = int(dim)
        self.exact_max = int(settings.exact_max)
        self.approx, self.storage = settings.approx, settings.storage
        self.ivf_nlist, self.ivf_nprobe = int(settings.ivf_nlist), int(settings.ivf_nprobe)
        self.hnsw_m = int(settings.hnsw_m)
        self.ef_construction, self.ef_search = int(settings.hnsw_ef_construction), int(settings.hnsw_ef_search)
        self.use_gpu = settings.use_gpu
        if self.storage not in STORAGES:
            raise ValueError(f"Unknown dense storage {self.storage!r}: use one of {', '.join(STORAGES)}.")
        if self.approx not in APPROX:
            raise ValueError(f"Unknown approximate index {self.approx!r}: use one of {', '.join(APPROX)}.")
        if self.storage == "auto":  # fast-scan PQ on the CPU; where FAISS has a GPU, SQ8 (searched there)
            self.storage = "sq8" if self.approx == "hnsw" or gpu_count() > 0 else "pq"
        if self.storage == "pq" and self.approx != "ivf":
            raise ValueError("dense.storage pq (product quantisation) needs dense.approx ivf: use sq8 or fp16 "
                             "with hnsw.")
        if self.storage == "pq" and self.dim % 2:
            self.storage = "sq8"  # dim/2 sub-quantisers need an even dimension
        self.trained_on = 0
        self.index = None  # the CPU index (what is saved)
        self._search_index = None  # the CPU index or its GPU copy
        self.kind = "flat"

    @property
    def size(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    @property
    def device(self) -> str:
        return "gpu" if self._search_index is not None and self._search_index is not self.index else "cpu"

    def _new_index(self, n: int):
        import faiss

        if n <= self.exact_max or n == 0:
            self.kind = "flat"
            return faiss.IndexFlatIP(self.dim)
        if self.approx == "ivf":
            self.kind = "ivf"
            nlist = min(self.ivf_nlist or self.auto_nlist(n), max(1, n // 39))  # k-means wants ~39 points a cell
            codec = {"flat": "Flat", "fp16": "SQfp16", "sq8": "SQ8", "pq": f"PQ{self.dim // 2}x4fs"}[self.storage]
            index = faiss.index_factory(self.dim, f"IVF{nlist},{codec}", faiss.METRIC_INNER_PRODUCT)
            index.nprobe = self.ivf_nprobe
            return index
        self.kind = "hnsw"
        if self.storage == "flat":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            qtype = faiss.ScalarQuantizer.QT_8bit if self.storage == "sq8" else faiss.ScalarQuantizer.QT_fp16
            index = faiss.IndexHNSWSQ(self.dim, qtype, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    @staticmethod
    def auto_nlist(n: int) -> int:
        """IVF cells for n vectors: about 2 * sqrt(n), between 16 and 65536."""
        return int(min(65536, max(16, 2 * round(n ** 0.5))))

    def fits(self, n: int) -> bool:
        """Whether this index can simply grow to n vectors (else the writer rebuilds it)."""
        want = "flat" if n <= self.exact_max else self.approx
        if want != self.kind:
            return False
        return not (self.kind == "ivf" and self.trained_on and n > _IVF_REBUILD_GROWTH * self.trained_on)

    def _activate(self):
        self._search_index = self.index
        if self.index is None or self.use_gpu == "never" or self.kind == "hnsw" or self.storage == "pq":
            return  # FAISS has no GPU HNSW and no GPU fast-scan
        if gpu_count() > 0:
            try:
                self._search_index = _to_gpu(self.index)
            except Exception as e:
                log.warning("Could not copy the FAISS index to the GPU (%s); searching on the CPU", e)

    def build(self, vectors: np.ndarray) -> "DenseIndex":
        vectors = _as_matrix(vectors, self.dim)
        self.index = self._new_index(len(vectors))
        if not self.index.is_trained:  # k-means cells / scalar quantiser ranges, learnt from a sample
            step = max(1, len(vectors) // _TRAIN_SAMPLE)
            self.index.train(np.ascontiguousarray(vectors[::step]))
        self.trained_on = len(vectors)
        if len(vectors):
            self.index.add(vectors)
        self._activate()
        return self

    def add(self, vectors: np.ndarray) -> "DenseIndex":
        """Append rows to the existing index in place (no rebuild)."""
        vectors = _as_matrix(vectors, self.dim)
        if self.index is None:
            return self.build(vectors)
        self.index.add(vectors)
        self._activate()
        return self

    def candidates(self, k: int) -> int:
        """Rows to ask :meth:`search` for when the caller re-ranks them by exact scores and keeps ``k``: more
        for ``pq`` codes, whose order is coarser than the other storages'."""
        if self.kind == "ivf" and self.storage == "pq":
            return max(int(np.ceil(k * _PQ_CANDIDATES)), _PQ_MIN_CANDIDATES)
        return k

    def memory_bytes(self) -> int:
        """Bytes the index holds in memory (its serialised size: vectors, graph and codes)."""
        if self.index is None:
            return 0
        import faiss

        return int(faiss.serialize_index(self.index).size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) arrays of shape (n_queries, k'), best first; rows are -1-free."""
        queries = _as_matrix(queries, self.dim)
        if self.size == 0 or k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        k = min(k, self.size)
        # one query, IVF on the CPU: cells in two halves on two cores; not for fast-scan pq, whose own scan is
        # short and whose preassigned search measured 4x slower than one whole search at 1M
        if (len(queries) == 1 and self.device == "cpu" and self.kind == "ivf" and self.storage != "pq"
                and self.ivf_nprobe >= 2):
            scores, rows = _ivf_in_two_halves(self._search_index, queries, k)
        elif len(queries) < _PARALLEL_MIN_QUERIES and self.device == "cpu":
            scores, rows = _single_thread_search(self._search_index, queries, k)
        else:
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
                "exact_max": self.exact_max, "hnsw_m": self.hnsw_m, "storage": self.storage,
                "approx": self.approx, "ivf_nlist": self.ivf_nlist, "ivf_nprobe": self.ivf_nprobe,
                "trained_on": self.trained_on,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search}
        (path / "dense.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, settings=None) -> "DenseIndex":
        """Read a saved index. Its build parameters come from the file; the query-time ones (``use_gpu``,
        ``ivf_nprobe``, ``hnsw_ef_search``) from ``settings`` (the defaults when None)."""
        import faiss

        from .config import DenseSettings

        path = Path(path)
        meta = json.loads((path / "dense.json").read_text())
        if meta.get("format") != FORMAT:
            raise StoredDataError(f"{path}: dense index format {meta.get('format')} is not {FORMAT}; re-ingest the collection.")
        query = settings or DenseSettings()
        built = DenseSettings(exact_max=meta["exact_max"], hnsw_m=meta["hnsw_m"],
                              hnsw_ef_construction=meta["ef_construction"], storage=meta.get("storage", "flat"),
                              approx=meta.get("approx", "hnsw"), ivf_nlist=meta.get("ivf_nlist", 0),
                              ivf_nprobe=query.ivf_nprobe, hnsw_ef_search=query.hnsw_ef_search,
                              use_gpu=query.use_gpu)
        idx = cls(meta["dim"], built)
        idx.trained_on = int(meta.get("trained_on", 0))
        idx.kind = meta["kind"]
        if (path / "dense.faiss").exists():
            idx.index = faiss.read_index(str(path / "dense.faiss"))
            if idx.kind == "hnsw":
                idx.index.hnsw.efSearch = idx.ef_search
            elif idx.kind == "ivf":
                idx.index.nprobe = idx.ivf_nprobe
        idx._activate()
        return idx


def _single_thread_search(index, queries, k):
    """Search on this thread only. OpenMP's worker hand-off costs more than it saves for a few queries, and
    on a busy machine a parked worker can stall a 2 ms search for tens of ms (measured: bench/, and
    docs/benchmarks.md). ``omp_set_num_threads`` sets the calling thread's value only, so index builds in
    other threads keep every core."""
    with _one_omp_thread():
        return index.search(queries, k)


@contextmanager
def _one_omp_thread():
    """FAISS's OpenMP on this thread only, one thread, for the block (see :func:`_single_thread_search`)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _ivf_in_two_halves(index, query, k):
    """One query on an IVF index, its ``nprobe`` nearest cells scanned in two halves at once: this thread takes
    every other cell, a pool thread (:mod:`rag.parallel`, when one is free) the rest; the two top-k lists are
    merged. The rows of one scan over all the cells, on two cores (docs/benchmarks.md)."""
    from . import parallel

    dq, iq = _single_thread_search(index.quantizer, query, int(index.nprobe))
    other = parallel.in_background(_scan_cells, index, query, k, iq[:, 1::2], dq[:, 1::2])
    scores0, rows0 = _scan_cells(index, query, k, iq[:, 0::2], dq[:, 0::2])
    (scores1, rows1), _ = other.result()
    scores, rows = np.concatenate([scores0[0], scores1[0]]), np.concatenate([rows0[0], rows1[0]])
    keep = rows >= 0
    scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    out_s = np.full((1, k), -np.inf, dtype=np.float32)
    out_r = np.full((1, k), -1, dtype=np.int64)
    out_s[0, :len(order)], out_r[0, :len(order)] = scores[order], rows[order]
    return out_s, out_r


def _scan_cells(index, query, k, cells, cell_scores):
    import faiss

    # the C++ call, which takes the per-search nprobe (the Python wrapper asserts the index's own)
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    cell_scores = np.ascontiguousarray(cell_scores, dtype=np.float32)
    params = faiss.SearchParametersIVF(nprobe=int(cells.shape[1]))
    scores, rows = np.empty((1, k), np.float32), np.empty((1, k), np.int64)
    with _one_omp_thread():
        index.search_preassigned_c(1, faiss.swig_ptr(query), k, faiss.swig_ptr(cells), faiss.swig_ptr(cell_scores),
                                   faiss.swig_ptr(scores), faiss.swig_ptr(rows), False, params)
    return scores, rows


def _as_matrix(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or (x.size and x.shape[1] != dim):
        raise ValueError(f"expected vectors of dimension {dim}, got shape {x.shape}")
    return x.reshape(-1, dim)


__all__ = ["DenseIndex", "gpu_count"]
