"""BM25 sparse index on bm25s (scipy-style CSC matrix of precomputed term scores).

Scoring a query touches only the posting columns of its terms; nothing rescans the corpus
in Python. The index is saved in bm25s' own plain-file format (npy with allow_pickle=False,
vocab and params as JSON), plus each row's token ids (``tokens.npy`` + ``offsets.npy``), so a
writer that adds documents re-tokenises only the new ones and rebuilds the score matrix from ids.

Backends (``backend=``): ``numba`` scores the query's posting lists and selects the top k in compiled
kernels (over the rows the query touches, or block by block over every row when its posting lists are long);
``numpy`` is bm25s' scorer plus a partial sort over every row. ``auto`` (the default) takes numba when it is
installed and falls back to numpy.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import MissingDependency, StoredDataError

log = logging.getLogger(__name__)

FORMAT = 1
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")
_TOKENS_FILE, _OFFSETS_FILE = "tokens.npy", "offsets.npy"

try:  # optional speed-up: compiled top-k over posting lists
    import numba  # noqa: F401

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the install
    NUMBA_AVAILABLE = False

BACKENDS = ("auto", "numba", "numpy")
# a query whose posting lists hold at least this many entries per row of the collection is scored block by
# block over every row (_topk_blocks) instead of over the rows it touches (_topk_touched). On the bench's 1M
# SciFact-derived collection (the 200 claims' single terms and first pairs, 1,870 queries under a share of
# 0.15, both kernels in turn, median of 5) the touched rows were faster in 99 % of the queries at 0.01-0.02
# (0.56 vs 1.08 ms), 58 % at 0.02-0.03 and 42 % at 0.03-0.05 (1.22 vs 1.19 ms)
DENSE_PASS_SHARE = 0.03
BLOCK = 8192  # rows per block: 32 KiB of float32 scores, a core's first-level data cache


@lru_cache(maxsize=8)
def _stemmer(language: str | None):
    if not language:
        return None
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer(language)


@lru_cache(maxsize=8)
def _stopwords(name: str | None) -> frozenset[str]:
    if not name:
        return frozenset()
    from bm25s.stopwords import STOPWORDS_EN

    if name != "en":
        raise ValueError(f"Unknown stopword list {name!r}: use 'en' or null.")
    return frozenset(STOPWORDS_EN)


class Tokenizer:
    """Lower-case word tokens (2+ chars, as bm25s' default pattern), minus stopwords, stemmed."""

    def __init__(self, stopwords: str | None = "en", stemmer: str | None = "english"):
        self.stopwords_name, self.stemmer_name = stopwords, stemmer
        self._stop = _stopwords(stopwords)
        self._stem = _stemmer(stemmer)

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN_RE.findall(text.lower()) if w not in self._stop]
        return self._stem.stemWords(words) if self._stem and words else words

    def many(self, texts) -> list[list[str]]:
        return [self(t) for t in texts]


def resolve_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"Unknown sparse backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    if backend == "numba" and not NUMBA_AVAILABLE:
        raise MissingDependency("Numba is not installed. Install it with `pip install numba` to use the numba "
                          "backend, or set sparse.backend to auto.")
    if backend == "auto":
        return "numba" if NUMBA_AVAILABLE else "numpy"
    return backend


# -- BM25 formulas, vectorised (the same as bm25s.scoring, applied to whole arrays) ---------------

def _idf(method: str, df: np.ndarray, n: int) -> np.ndarray:
    df = df.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "robertson":
            out = np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1.0))
        elif method == "lucene":
            out = np.log(1 + (n - df + 0.5) / (df + 0.5))
        elif method == "atire":
            out = np.log(n / df)
        elif method == "bm25l":
            out = np.log((n + 1) / (df + 0.5))
        elif method == "bm25+":
            out = np.log((n + 1) / df)
        else:
            raise ValueError(f"Unknown BM25 method {method!r}.")
    out[df == 0] = 0.0
    return out


def _tfc(method: str, tf, l_d, l_avg, k1, b, delta):
    from bm25s.scoring import _select_tfc_scorer

    return _select_tfc_scorer(method)(tf_array=tf, l_d=l_d, l_avg=l_avg, k1=k1, b=b, delta=delta)


def build_csc(token_ids: np.ndarray, offsets: np.ndarray, n_vocab: int, method: str, k1: float, b: float,
              delta: float = 0.5, dtype=np.float32):
    """bm25s' score matrix (data, indices, indptr) and non-occurrence array from flat token ids.

    ``token_ids[offsets[i]:offsets[i+1]]`` are row i's tokens. Equal to ``bm25s.BM25.index`` on the same
    tokens, but vectorised: one sort over all (term, row) pairs instead of a Python loop per row.
    """
    n = len(offsets) - 1
    lengths = np.diff(offsets).astype(np.int64)
    l_avg = float(lengths.mean()) if n else 0.0
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    keys = token_ids.astype(np.int64) * max(n, 1) + rows
    del rows
    keys, tf = np.unique(keys, return_counts=True)
    terms = keys // max(n, 1)
    docs = (keys - terms * max(n, 1)).astype(np.int32)
    del keys
    df = np.bincount(terms, minlength=n_vocab).astype(np.int64)
    idf = _idf(method, df, n)
    tfc = _tfc(method, tf.astype(dtype), lengths[docs], l_avg, k1, b, delta)
    data = idf[terms] * tfc
    nonocc = None
    if method in ("bm25l", "bm25+"):
        nonocc = (idf * _tfc(method, 0, l_avg, l_avg, k1, b, delta)).astype(dtype)
        nonocc[df == 0] = 0
        data = data - nonocc[terms]
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    return data.astype(dtype), docs, indptr, nonocc


# -- compiled search --------------------------------------------------------------------------
# numba compiles each function on its first call (then caches it on disk); without numba they stay plain
# Python and only the numpy backend is offered.

def _jit(**options):
    if not NUMBA_AVAILABLE:  # pragma: no cover - depends on the install
        return lambda fn: fn
    from numba import njit

    return njit(cache=True, nogil=True, **options)


@_jit()
def _rows_scores(data, indices, indptr, qids, rows, out):
    """``out[i]`` += the posting value of ``rows[i]`` in each query term's list: a binary search in each (rows
    are sorted within a list). ``rows`` ascending: each search starts where the last one ended."""
    for q in qids:
        lo0, hi0 = indptr[q], indptr[q + 1]
        for i in range(rows.shape[0]):
            r = rows[i]
            lo, hi = lo0, hi0
            while lo < hi:
                mid = (lo + hi) >> 1
                if indices[mid] < r:
                    lo = mid + 1
                else:
                    hi = mid
            lo0 = lo
            if lo < hi0 and indices[lo] == r:
                out[i] += data[lo]


@_jit()
def _ranks_before(s, d, s2, d2):
    """The heap's one order: row ``d`` with score ``s`` ranks before row ``d2`` with ``s2`` (higher score,
    then the lower row on equal scores)."""
    return s > s2 or (s == s2 and d < d2)


@_jit()
def _offer(out_scores, out_rows, size, k, s, d):
    """Row ``d`` with score ``s`` > 0 into the min-heap of the k best (the row ranking last at the root, in
    :func:`_ranks_before`'s order). Returns the heap's new size."""
    if size < k:
        pos = size
        while pos > 0:  # sift up while the new row ranks after its parent
            parent = (pos - 1) >> 1
            ps, pr = out_scores[parent], out_rows[parent]
            if _ranks_before(s, d, ps, pr):
                break
            out_scores[pos], out_rows[pos] = ps, pr
            pos = parent
        out_scores[pos], out_rows[pos] = s, d
        return size + 1
    if _ranks_before(out_scores[0], out_rows[0], s, d):  # no better than the k-th: stays out
        return size
    pos = 0
    while True:  # sift down from the root while the new row ranks before a child
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _ranks_before(out_scores[c], out_rows[c], out_scores[c + 1], out_rows[c + 1]):
            c += 1  # the child ranking last
        cs, cr = out_scores[c], out_rows[c]
        if _ranks_before(cs, cr, s, d):
            break
        out_scores[pos], out_rows[pos] = cs, cr
        pos = c
    out_scores[pos], out_rows[pos] = s, d
    return size


# The two kernels below give the same result: the top k rows by a heap (:func:`_offer`), and the sum and sum of
# squares of every row's score (untouched rows score 0), returned as (heap size, sum, sum of squares). Every
# posting value is >= 0 (the methods they serve). ``acc`` is a scratch array of one float32 per row, all zeros
# on entry and again on return. They are compiled with floating-point reassociation so that the moment sums
# vectorise.

@_jit(fastmath={"reassoc"})
def _topk_blocks(data, indices, indptr, qids, k, acc, out_rows, out_scores):
    """For queries whose posting lists cover a good share of the collection (most queries at scale): the rows
    in blocks of ``BLOCK``. Each term's postings for a block (lists are sorted by row) are added into
    ``acc[:BLOCK]``, which stays in the core's first-level cache, and the block is then read in order, so the
    only trip to memory is one read of the posting lists."""
    n = acc.shape[0]
    nq = qids.shape[0]
    nxt = np.empty(nq, np.int64)  # each term's next posting
    for t in range(nq):
        nxt[t] = indptr[qids[t]]
    s1 = 0.0
    s2 = 0.0
    size = 0
    root = np.float32(0)  # the heap's worst score once it holds k rows: no row below it can enter
    for b0 in range(0, n, BLOCK):
        b1 = min(b0 + BLOCK, n)
        for t in range(nq):
            j, end = nxt[t], indptr[qids[t] + 1]
            while j < end and indices[j] < b1:
                acc[indices[j] - b0] += data[j]
                j += 1
            nxt[t] = j
        w = b1 - b0
        for i in range(w):
            v = np.float64(acc[i])
            s1 += v
            s2 += v * v
        for i in range(w):
            s = acc[i]
            # (written as an early `continue`: `if s > 0 and s >= root:` around the call measured 3x slower)
            if s < root or s <= 0:
                continue
            size = _offer(out_scores, out_rows, size, k, s, b0 + i)
            if size == k:
                root = out_scores[0]
        acc[:w] = 0
    return size, s1, s2


@_jit(fastmath={"reassoc"})
def _topk_touched(data, indices, indptr, qids, k, acc, touched, out_rows, out_scores):
    """For queries of rare terms: the rows the postings touch are listed in ``touched`` as they are first seen
    (a row is new while its score is still 0), and only they are visited."""
    nt = 0
    for q in qids:
        for j in range(indptr[q], indptr[q + 1]):
            v = data[j]
            if v > 0:
                d = indices[j]
                if acc[d] == 0:
                    touched[nt] = d
                    nt += 1
                acc[d] += v
    s1 = 0.0
    s2 = 0.0
    for i in range(nt):
        v = np.float64(acc[touched[i]])
        s1 += v
        s2 += v * v
    size = 0
    root = np.float32(0)
    for i in range(nt):
        d = touched[i]
        s = acc[d]
        if s < root:
            continue
        size = _offer(out_scores, out_rows, size, k, s, d)
        if size == k:
            root = out_scores[0]
    for i in range(nt):
        acc[touched[i]] = 0
    return size, s1, s2


class _Scratch:
    """Per-call work arrays for the kernel, pooled so concurrent queries never share one."""

    def __init__(self, n: int):
        self.n = n
        self._pool: list[tuple] = []
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            if self._pool:
                return self._pool.pop()
        return (np.zeros(self.n, np.float32), np.zeros(self.n, np.int32))

    def give(self, bufs) -> None:
        with self._lock:
            self._pool.append(bufs)


class SparseIndex:
    """BM25 over a fixed list of documents (rows 0..n-1)."""

    def __init__(self, method: str = "lucene", k1: float = 0.9, b: float = 0.4,
                 stopwords: str | None = "en", stemmer: str | None = "english", backend: str = "auto"):
        self.params = {"method": method, "k1": k1, "b": b, "stopwords": stopwords, "stemmer": stemmer}
        self.tokenizer = Tokenizer(stopwords, stemmer)
        self.backend = resolve_backend(backend)
        self._bm25 = None
        self._scratch = None
        self.size = 0
        self.dense_passes = 0  # queries the compiled kernels answered block by block over every row
        # token ids per row, kept from a build until save() so the next version can reuse them
        self._token_ids: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    @classmethod
    def from_settings(cls, s) -> "SparseIndex":
        """From the ``sparse`` settings (:class:`rag.config.SparseSettings`)."""
        return cls(method=s.method, k1=s.k1, b=s.b, stopwords=s.stopwords, stemmer=s.stemmer, backend=s.backend)

    # -- build -------------------------------------------------------------------------------
    def build_from_tokens(self, corpus_tokens: list[list[str]]) -> "SparseIndex":
        vocab: dict[str, int] = {}
        ids = [vocab.setdefault(t, len(vocab)) for doc in corpus_tokens for t in doc]
        offsets = np.zeros(len(corpus_tokens) + 1, dtype=np.int64)
        np.cumsum([len(doc) for doc in corpus_tokens], out=offsets[1:])
        return self.build_from_ids(np.asarray(ids, dtype=np.int32), offsets, vocab)

    def build_from_ids(self, token_ids: np.ndarray, offsets: np.ndarray, vocab: dict[str, int]) -> "SparseIndex":
        """Build from flat token ids (``token_ids[offsets[i]:offsets[i+1]]`` is row i) and their vocabulary."""
        import bm25s

        self.size = len(offsets) - 1
        self._token_ids = np.ascontiguousarray(token_ids, dtype=np.int32)
        self._offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self._scratch = None
        if self.size == 0:
            self._bm25 = None
            return self
        p = self.params
        bm = bm25s.BM25(method=p["method"], k1=p["k1"], b=p["b"])
        data, indices, indptr, nonocc = build_csc(self._token_ids, self._offsets, len(vocab), p["method"],
                                                  p["k1"], p["b"], bm.delta, np.dtype(bm.dtype))
        bm.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": self.size}
        bm.vocab_dict = dict(vocab)
        bm.unique_token_ids_set = set(vocab.values())
        bm.nonoccurrence_array = nonocc
        self._bm25 = bm
        return self

    def build(self, texts: list[str]) -> "SparseIndex":
        return self.build_from_tokens(self.tokenizer.many(texts))

    def rebuilt(self, keep_rows: np.ndarray | None, new_tokens: list[list[str]],
                stored: tuple[np.ndarray, np.ndarray, dict] | None = None) -> "SparseIndex":
        """A new index with this one's rows ``keep_rows`` (all when None), in order, then ``new_tokens``.

        Only the new rows are tokenised; the kept rows come from the stored token ids (``stored``, as
        returned by ``load_token_ids``, or this index's own ids from its last build).
        """
        if stored is None:
            if self._token_ids is None:
                raise ValueError("this index has no token ids: load them with SparseIndex.load_token_ids(path)")
            stored = (self._token_ids, self._offsets, dict(self._bm25.vocab_dict) if self._bm25 else {})
        ids, offsets, vocab = stored
        vocab = dict(vocab)
        lengths = np.diff(offsets)
        if keep_rows is not None:
            keep_rows = np.asarray(keep_rows, dtype=np.int64)
            mask = np.repeat(np.isin(np.arange(len(lengths)), keep_rows), lengths)
            ids, lengths = np.asarray(ids)[mask], lengths[keep_rows]
        new_ids = [vocab.setdefault(t, len(vocab)) for doc in new_tokens for t in doc]
        all_ids = np.concatenate([np.asarray(ids, dtype=np.int32), np.asarray(new_ids, dtype=np.int32)])
        all_lengths = np.concatenate([lengths, np.array([len(d) for d in new_tokens], dtype=np.int64)])
        all_offsets = np.zeros(len(all_lengths) + 1, dtype=np.int64)
        np.cumsum(all_lengths, out=all_offsets[1:])
        out = SparseIndex(**self.params, backend=self.backend)
        return out.build_from_ids(all_ids, all_offsets, vocab)

    # -- query -------------------------------------------------------------------------------
    def query_ids(self, tokens: list[str]) -> list[int]:
        if self._bm25 is None:
            return []
        return self._bm25.get_tokens_ids(tokens)

    def scores_for_tokens(self, tokens: list[str]) -> np.ndarray:
        """BM25 score of every document for these query tokens (repeats count, as in BM25Okapi)."""
        ids = self.query_ids(tokens)
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return self._bm25.get_scores_from_ids(ids)

    def scores(self, query: str) -> np.ndarray:
        return self.scores_for_tokens(self.tokenizer(query))

    def search_tokens(self, tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows with a positive score, best first: (rows int64, scores float32)."""
        rows, vals, _ = self.search_tokens_moments(tokens, k)
        return rows, vals

    def search_tokens_moments(self, tokens: list[str], k: int):
        """Top-k as :meth:`search_tokens`, plus what fusion needs without a full score array: ``(mean, std)``
        of the scores over all rows (the scores of other rows: :meth:`scores_of`).

        Returns ``(rows, scores, (mean, std))``."""
        k = min(k, self.size)
        ids = self.query_ids(tokens) if k > 0 else []
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), (0.0, 0.0)
        if self.backend == "numba" and self._bm25.nonoccurrence_array is None:
            return self._search_compiled(np.asarray(ids, dtype=np.int64), k)
        scores = self._bm25.get_scores_from_ids(ids)
        rows, vals = top_k(scores, k)
        return rows, vals, (float(scores.mean()), float(scores.std()))

    def scores_of(self, tokens: list[str], rows) -> np.ndarray:
        """BM25 scores of ``rows`` alone (0 where a row has none of the terms), float32: a binary search per
        query term in its posting list (rows are sorted within each), so the cost grows with the number of
        rows asked for, not with the collection. Equal to the full score array at those rows."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros(len(rows), dtype=np.float32)
        ids = self.query_ids(tokens) if len(rows) else []
        if not ids:
            return out
        if self._bm25.nonoccurrence_array is not None:  # bm25l / bm25+: every row has a score; no shortcut
            return self._bm25.get_scores_from_ids(ids)[rows].astype(np.float32)
        sc = self._bm25.scores
        data, indices, indptr = sc["data"], sc["indices"], sc["indptr"]
        rows = rows.astype(indices.dtype)  # searchsorted would otherwise convert the whole posting list
        if self.backend == "numba":
            order = np.argsort(rows, kind="stable")
            got = np.zeros(len(rows), dtype=np.float32)
            _rows_scores(data, indices, indptr, np.asarray(ids, np.int64), rows[order], got)
            out[order] = got
            return out
        for q in ids:  # a repeated query term counts again, as in the kernel and bm25s
            lo, hi = int(indptr[q]), int(indptr[q + 1])
            seg = indices[lo:hi]
            pos = np.searchsorted(seg, rows)
            hit = pos < hi - lo
            hit[hit] = seg[pos[hit]] == rows[hit]
            out[hit] += data[lo + pos[hit]]
        return out

    def _search_compiled(self, qids: np.ndarray, k: int):
        sc = self._bm25.scores
        if self._scratch is None:
            self._scratch = _Scratch(self.size)
        data, indices, indptr = sc["data"], sc["indices"], sc["indptr"]
        postings = int((indptr[qids + 1] - indptr[qids]).sum())
        dense = postings >= DENSE_PASS_SHARE * self.size
        acc, touched = self._scratch.take()
        out_rows, out_scores = np.empty(k, np.int32), np.empty(k, np.float32)
        try:
            if dense:
                size, s1, s2 = _topk_blocks(data, indices, indptr, qids, k, acc, out_rows, out_scores)
            else:
                size, s1, s2 = _topk_touched(data, indices, indptr, qids, k, acc, touched, out_rows, out_scores)
        finally:
            self._scratch.give((acc, touched))
        self.dense_passes += dense
        rows, vals = out_rows[:size].astype(np.int64), out_scores[:size]
        order = np.lexsort((rows, -vals))
        n = max(self.size, 1)
        mean = s1 / n
        std = float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
        return rows[order], vals[order], (mean, std)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search_tokens(self.tokenizer(query), k)

    def warm_up(self) -> None:
        """Compile the numba kernels now (a few seconds once per process, then cached on disk)."""
        if self.backend == "numba":
            d = np.ones(2, np.float32)
            ip = np.array([0, 2], np.int64)
            ix = np.array([0, 1], np.int32)
            q = np.zeros(1, np.int64)
            out = (np.empty(1, np.int32), np.empty(1, np.float32))
            _topk_blocks(d, ix, ip, q, 1, np.zeros(2, np.float32), *out)
            _topk_touched(d, ix, ip, q, 1, np.zeros(2, np.float32), np.zeros(2, np.int32), *out)
            _rows_scores(d, ix, ip, q, ix.copy(), np.zeros(2, np.float32))

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "size": self.size, **self.params}
        if self._bm25 is not None:
            self._bm25.save(str(path / "bm25s"), show_progress=False)
        if self._token_ids is not None:
            np.save(path / _TOKENS_FILE, self._token_ids, allow_pickle=False)
            np.save(path / _OFFSETS_FILE, self._offsets, allow_pickle=False)
            meta["token_ids"] = True
        (path / "sparse.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False, backend: str = "auto") -> "SparseIndex":
        import bm25s

        path = Path(path)
        meta = json.loads((path / "sparse.json").read_text())
        if meta.get("format") != FORMAT:
            raise StoredDataError(f"{path}: sparse index format {meta.get('format')} is not {FORMAT}; re-ingest the collection.")
        idx = cls(**{k: meta[k] for k in ("method", "k1", "b", "stopwords", "stemmer")}, backend=backend)
        idx.size = int(meta["size"])
        if idx.size:
            idx._bm25 = bm25s.BM25.load(str(path / "bm25s"), mmap=mmap, load_corpus=False)
        return idx

    @staticmethod
    def load_token_ids(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, int]] | None:
        """(token ids, offsets, vocabulary) saved with an index, memory-mapped; None for an index saved
        before token ids were kept (the writer then re-tokenises every row once)."""
        path = Path(path)
        if not (path / _TOKENS_FILE).exists():
            return None
        ids = np.load(path / _TOKENS_FILE, mmap_mode="r", allow_pickle=False)
        offsets = np.load(path / _OFFSETS_FILE, allow_pickle=False)
        vocab_file = path / "bm25s" / "vocab.index.json"
        vocab = json.loads(vocab_file.read_text(encoding="utf-8")) if vocab_file.exists() else {}
        return ids, offsets, vocab


def top_k(scores: np.ndarray, k: int, positive_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest scores, best first (ties broken by lower index)."""
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    k = min(k, n)
    if k < n:  # argpartition alone would pick any of the rows tied at the k-th score: take the lowest ones
        kth = -np.partition(-scores, k - 1)[k - 1]
        above = np.flatnonzero(scores > kth)
        part = np.concatenate([above, np.flatnonzero(scores == kth)[:k - len(above)]])
    else:
        part = np.arange(n)
    order = np.lexsort((part, -scores[part]))
    rows = part[order].astype(np.int64)
    vals = scores[rows].astype(np.float32)
    if positive_only:
        keep = vals > 0
        rows, vals = rows[keep], vals[keep]
    return rows, vals


__all__ = ["SparseIndex", "Tokenizer", "top_k", "build_csc", "NUMBA_AVAILABLE"]
