"""The writing side of one ingest: :class:`Session` holds the collection writer (and its lock) from the first
file to the last commit; :class:`Batch` gathers the chunks of small documents into shared embedder calls and
holds each file's embedded documents until the whole file is done, so a file reaches the writer whole."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from rag.store import CollectionWriter, DocRecord
from rag.types import Chunk


class Session:
    """The collection writer of one ingest: ``commit()`` makes one version and the writer goes on (holding the
    collection's writer lock from the first file to the last commit)."""

    def __init__(self, collection: str, settings, embedder):
        self.collection, self.settings, self.embedder = collection, settings, embedder
        self.commits, self.last_commit_s, self.commit_s = 0, 0.0, 0.0
        self.writer: CollectionWriter | None = None
        self.writer = self._open()

    def _open(self) -> CollectionWriter:
        w = CollectionWriter(self.collection, self.settings, embedder_id=self.embedder.model_id, dim=self.embedder.dim)
        w.__enter__()
        return w

    def commit(self, *, last: bool = False) -> None:
        """Commit what the writer holds; the last commit lets the writer (and its lock) go."""
        t = time.perf_counter()
        if last:
            version = self.writer.commit()
            self.close()
        else:
            version = self.writer.checkpoint()
        self.commits += version is not None
        self.last_commit_s = time.perf_counter() - t
        self.commit_s += self.last_commit_s

    def close(self) -> None:
        w, self.writer = self.writer, None
        if w is not None:
            w.__exit__(None, None, None)


@dataclass
class Staged:
    key: tuple
    rec: DocRecord
    chunks: list[Chunk]


class Batch:
    """Chunks waiting to be embedded (small documents share embedder calls), and the embedded documents of
    files that are not finished yet: a file goes to the writer whole, when it is finished and embedded."""

    def __init__(self, session: Session, embedder, *, check: Callable[[], None], after_slice: Callable[[Counter], None],
                 batch_chunks: int, slice_chunks: int):
        """``check`` runs before each embedder call (it raises to stop: a cancel); ``after_slice`` after each,
        with the chunks it embedded per file key. ``batch_chunks`` staged chunks trigger a flush, embedded
        ``slice_chunks`` per call."""
        self.session, self.embedder, self.check, self.after_slice = session, embedder, check, after_slice
        self.batch_chunks, self.slice_chunks = batch_chunks, slice_chunks
        self.pending: list[Staged] = []
        self.n_chunks = 0
        self.embedded = 0
        self.staged: Counter = Counter()  # chunks staged per file key
        self.done: Counter = Counter()    # ... and embedded
        self._held: dict[tuple, list[tuple[DocRecord, list[Chunk], np.ndarray]]] = {}
        self._todo: Counter = Counter()   # chunks per key not embedded yet
        self._closed: dict[tuple, None] = {}  # finished files, in order
        self._hash_of: dict[str, str] = {}  # documents held here, which the writer cannot see yet
        self._doc_of: dict[str, str] = {}

    def staged_hash(self, doc_id: str) -> str | None:
        return self._hash_of.get(doc_id)

    def staged_doc_with_hash(self, sha256: str) -> str | None:
        return self._doc_of.get(sha256)

    def add(self, key: tuple, record: DocRecord, chunks: list[Chunk]) -> None:
        self.pending.append(Staged(key, record, chunks))
        self._held.setdefault(key, [])
        self._todo[key] += len(chunks)
        self.staged[key] += len(chunks)
        self._hash_of[record.doc_id] = record.sha256
        self._doc_of.setdefault(record.sha256, record.doc_id)
        self.n_chunks += len(chunks)
        if self.n_chunks >= self.batch_chunks:
            self.flush()

    def flush(self) -> None:
        """Embed everything pending, ``slice_chunks`` per call, with ``after_slice`` after each call."""
        pending = self.pending
        if not pending:
            return
        texts = [self.session.writer.index_text(c) for s in pending for c in s.chunks]
        keys = [s.key for s in pending for _ in s.chunks]
        ends = np.cumsum([len(s.chunks) for s in pending])
        vecs = np.empty((len(texts), self.session.writer.dim), dtype=np.float32)
        k = 0  # the next staged document to hand over
        try:
            for a in range(0, len(texts), self.slice_chunks):
                self.check()
                b = min(a + self.slice_chunks, len(texts))
                vecs[a:b] = self.embedder.encode_documents(texts[a:b])
                while k < len(pending) and ends[k] <= b:
                    s = pending[k]
                    self._held[s.key].append((s.rec, s.chunks, vecs[ends[k] - len(s.chunks):ends[k]]))
                    self._todo[s.key] -= len(s.chunks)
                    k += 1
                counts = Counter(keys[a:b])
                self.done.update(counts)
                self.embedded += b - a
                self.after_slice(counts)
        finally:  # a failed call leaves the documents not handed over pending, for the next flush
            self.pending = pending[k:]
            self.n_chunks = sum(len(s.chunks) for s in self.pending)

    def close(self, key: tuple) -> None:
        """The file is finished: it goes to the writer once its chunks are embedded."""
        self._closed[key] = None

    def discard(self, key: tuple) -> None:
        """Drop what a file staged (it failed part way, or added nothing)."""
        self._closed.pop(key, None)
        gone = [s.rec for s in self.pending if s.key == key] + [r for r, _, _ in self._held.pop(key, [])]
        self.pending = [s for s in self.pending if s.key != key]
        self.n_chunks = sum(len(s.chunks) for s in self.pending)
        self._todo.pop(key, None)
        for rec in gone:
            self._forget(rec)

    def release(self, writer: CollectionWriter) -> list[tuple]:
        """Hand the finished, embedded files to ``writer``; returns their keys."""
        out = []
        for key in list(self._closed):
            if self._todo[key] > 0:
                continue
            del self._closed[key]
            self._todo.pop(key, None)
            for rec, chunks, vecs in self._held.pop(key, []):
                writer.add(rec, chunks, vecs)
                self._forget(rec)
            out.append(key)
        return out

    def _forget(self, rec: DocRecord) -> None:
        if self._hash_of.get(rec.doc_id) == rec.sha256:
            del self._hash_of[rec.doc_id]
        if self._doc_of.get(rec.sha256) == rec.doc_id:
            del self._doc_of[rec.sha256]


__all__ = ["Session", "Batch"]
