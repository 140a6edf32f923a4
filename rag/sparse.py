"""BM25 sparse index on bm25s (scipy-style CSC matrix of precomputed term scores).

Scoring a query touches only the posting columns of its terms; nothing rescans the corpus
in Python. The index is saved in bm25s' own plain-file format (npy with allow_pickle=False,
vocab and params as JSON).
"""
from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")


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


class SparseIndex:
    """BM25 over a fixed list of documents (rows 0..n-1)."""

    def __init__(self, method: str = "lucene", k1: float = 0.9, b: float = 0.4,
                 stopwords: str | None = "en", stemmer: str | None = "english"):
        self.params = {"method": method, "k1": k1, "b": b, "stopwords": stopwords, "stemmer": stemmer}
        self.tokenizer = Tokenizer(stopwords, stemmer)
        self._bm25 = None
        self.size = 0

    @classmethod
    def from_settings(cls, s) -> "SparseIndex":
        return cls(method=s.method, k1=s.k1, b=s.b, stopwords=s.stopwords, stemmer=s.stemmer)

    # -- build -------------------------------------------------------------------------------
    def build_from_tokens(self, corpus_tokens: list[list[str]]) -> "SparseIndex":
        import bm25s

        self.size = len(corpus_tokens)
        if self.size == 0:
            self._bm25 = None
            return self
        p = self.params
        bm = bm25s.BM25(method=p["method"], k1=p["k1"], b=p["b"])
        bm.index(corpus_tokens, show_progress=False)
        self._bm25 = bm
        return self

    def build(self, texts: list[str]) -> "SparseIndex":
        return self.build_from_tokens(self.tokenizer.many(texts))

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
        scores = self.scores_for_tokens(tokens)
        return top_k(scores, k)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search_tokens(self.tokenizer(query), k)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "size": self.size, **self.params}
        if self._bm25 is not None:
            self._bm25.save(str(path / "bm25s"), show_progress=False)
        (path / "sparse.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> "SparseIndex":
        import bm25s

        path = Path(path)
        meta = json.loads((path / "sparse.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: sparse index format {meta.get('format')} is not {FORMAT}; re-ingest the collection.")
        idx = cls(**{k: meta[k] for k in ("method", "k1", "b", "stopwords", "stemmer")})
        idx.size = int(meta["size"])
        if idx.size:
            idx._bm25 = bm25s.BM25.load(str(path / "bm25s"), mmap=mmap, load_corpus=False)
        return idx


def top_k(scores: np.ndarray, k: int, positive_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest scores, best first (ties broken by lower index)."""
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    k = min(k, n)
    part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    order = np.lexsort((part, -scores[part]))
    rows = part[order].astype(np.int64)
    vals = scores[rows].astype(np.float32)
    if positive_only:
        keep = vals > 0
        rows, vals = rows[keep], vals[keep]
    return rows, vals


__all__ = ["SparseIndex", "Tokenizer", "top_k"]
