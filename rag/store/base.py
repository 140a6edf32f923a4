"""What every store backend offers: :class:`Collection` (one committed state, for search) and
:class:`StagingWriter` (stage additions and removals, then commit them as one new state).

The retriever, the ingest pipeline, the UI, the CLI and the API use these methods only; which backend holds
a collection is decided by ``rag.store.backends``. Rows are ints that name a chunk within one committed state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..types import Chunk


@dataclass
class DocRecord:
    doc_id: str
    source: str
    title: str
    sha256: str
    bytes: int = 0
    format: str = ""


@dataclass
class SparseHits:
    """A BM25 search: the top ``rows`` and their ``scores``, and the mean and standard deviation of the query's BM25
    score over the whole collection where the backend can tell (None where it cannot)."""

    rows: list[int]
    scores: np.ndarray
    moments: tuple[float, float] | None


class Collection:
    """One committed state of a collection, for search. Safe to share between threads."""

    backend: str = ""
    name: str
    version: str
    manifest: dict   # embedder {id, dim}, counts {documents, chunks}, chunking, index_title, build_settings, build

    @property
    def size(self) -> int:
        return self.manifest["counts"]["chunks"]

    @property
    def embedder_id(self) -> str:
        return self.manifest["embedder"]["id"]

    # True where dense_search's scores are the exact inner products with the stored vectors (fusion then
    # fetches exact scores only for the rows BM25 added)
    exact_dense_scores: bool = False

    def dense_search(self, query_vector: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
        """The ``k`` rows nearest to the (normalised) query vector by inner product, best first."""
        raise NotImplementedError

    def sparse_search(self, query: str, k: int) -> SparseHits:
        """The ``k`` best rows by BM25 (the scores of other rows: :meth:`sparse_scores`)."""
        raise NotImplementedError

    def sparse_scores(self, query: str, rows: list[int]) -> np.ndarray:
        """The BM25 scores of ``rows`` for the query (0 where a row has none of its terms)."""
        raise NotImplementedError

    def dense_scores(self, query_vector: np.ndarray, rows: list[int]) -> np.ndarray:
        """The exact inner product of the query vector with the stored vectors of ``rows``."""
        raise NotImplementedError

    def dense_moments(self, query_vector: np.ndarray) -> tuple[float, float] | None:
        """Mean and standard deviation of the query's dense score over the whole collection, or None where
        the backend cannot tell."""
        return None

    def chunks(self, rows) -> list[Chunk]:
        """Chunks at these rows, in the given order."""
        raise NotImplementedError

    def documents(self) -> list[dict]:
        """doc_id, source, title, sha256, chunks, bytes, format, added_at of every document, by source."""
        raise NotImplementedError

    def document_chunks(self, doc_id: str, limit: int = 1000) -> list[Chunk]:
        raise NotImplementedError

    def counts(self) -> dict:
        """{"chunks", "documents"} counted in the stored data (not read from the manifest)."""
        raise NotImplementedError

    def export(self, batch: int = 256) -> Iterator[tuple[DocRecord, list[Chunk], np.ndarray]]:
        """Every document with its chunks (in order) and their stored vectors (for ``hybrid-rag migrate``)."""
        raise NotImplementedError


class StagingWriter:
    """The backend-neutral half of a writer: dedupe lookups and staging. A backend adds ``commit()``,
    ``checkpoint()``, the context manager (which holds the collection's writer lock) and the two lookups of the
    committed state, ``_base_hash`` and ``_base_docs_with_hash``."""

    name: str
    dim: int
    index_title: bool

    def _reset_staging(self) -> None:
        self._removed: set[str] = set()
        self._added: list[tuple[DocRecord, list[Chunk]]] = []
        self._vectors: list[np.ndarray] = []
        self._staged_hash: dict[str, str] = {}
        self._staged_by_sha: dict[str, str] = {}

    def _base_hash(self, doc_id: str) -> str | None:
        raise NotImplementedError

    def _base_docs_with_hash(self, sha256: str) -> list[str]:
        raise NotImplementedError

    # -- lookups used for dedupe -------------------------------------------------------------
    def existing_hash(self, doc_id: str) -> str | None:
        if doc_id in self._staged_hash:
            return self._staged_hash[doc_id]
        if doc_id in self._removed:
            return None
        return self._base_hash(doc_id)

    def doc_with_hash(self, sha256: str) -> str | None:
        if sha256 in self._staged_by_sha:
            return self._staged_by_sha[sha256]
        return next((d for d in self._base_docs_with_hash(sha256) if d not in self._removed), None)

    def has_document(self, doc_id: str) -> bool:
        return self.existing_hash(doc_id) is not None

    # -- staging -----------------------------------------------------------------------------
    def index_text(self, chunk: Chunk) -> str:
        if self.index_title and chunk.title and not chunk.text.startswith(chunk.title):
            return f"{chunk.title}\n{chunk.text}"
        return chunk.text

    def remove(self, doc_id: str) -> None:
        """Drop a document: from this batch if it was staged here, else from the committed state."""
        staged = []
        if doc_id in self._staged_hash:  # rare (a document replaced within one batch): scan once
            staged = [i for i, (r, _) in enumerate(self._added) if r.doc_id == doc_id]
            sha = self._staged_hash.pop(doc_id)
            for i in reversed(staged):
                del self._added[i]
                del self._vectors[i]
            if self._staged_by_sha.get(sha) == doc_id:
                del self._staged_by_sha[sha]
                twin = next((r.doc_id for r, _ in self._added if r.sha256 == sha), None)
                if twin is not None:
                    self._staged_by_sha[sha] = twin
        if not staged:
            self._removed.add(doc_id)

    def add(self, record: DocRecord, chunks: list[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk is required")
        if self.has_document(record.doc_id):
            self.remove(record.doc_id)
        self._added.append((record, chunks))
        self._vectors.append(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        self._staged_hash[record.doc_id] = record.sha256
        self._staged_by_sha.setdefault(record.sha256, record.doc_id)

    @property
    def pending(self) -> bool:
        return bool(self._added or self._removed)


__all__ = ["Collection", "StagingWriter", "DocRecord", "SparseHits"]
