"""Ingest: files → documents → chunks → embeddings → one new collection version per batch.

Each file gets a ``FileResult``. One bad file never aborts the batch and never touches the
collection: everything that loaded is committed together at the end, atomically. A ``cancelled`` callback
that returns True aborts the whole batch with :class:`IngestCancelled` before anything is committed.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from rag.errors import HybridRagError, user_message
from rag.store import CollectionWriter, DocRecord
from rag.types import Chunk, Document

from .archive import is_archive, iter_archive
from .chunking import chunk_document
from .formats import LoadError, chunk_table, is_table, load, token_fit
from .names import safe_name, unique_name

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]

EMBED_BATCH = 256


class IngestCancelled(HybridRagError):
    """The ingest was cancelled before its commit: the collection keeps its last committed version."""

    def __init__(self, message: str = "The ingest was cancelled; the collection keeps its last committed version."):
        super().__init__(message)


def _check(cancelled: Cancelled | None) -> None:
    if cancelled is not None and cancelled():
        raise IngestCancelled()


@dataclass
class FileResult:
    name: str
    status: str  # added | replaced | duplicate | failed
    chunks: int = 0
    documents: int = 0
    error: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def doc_hash(doc: Document) -> str:
    h = hashlib.sha256()
    h.update(doc.title.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(doc.text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _extension(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".jsonl.gz"):
        return "gz"
    return lower.rsplit(".", 1)[-1] if "." in lower else ""


def iter_paths(paths: Iterable[str | Path]) -> Iterator[tuple[str, Path]]:
    """Expand files and folders (recursively, skipping hidden entries) into (display name, path)."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if f.is_file() and not any(part.startswith(".") for part in rel.parts):
                    yield str(rel), f
        else:
            yield p.name, p


class _Batch:
    """Accumulates chunks from many documents and embeds them in large batches."""

    def __init__(self, writer: CollectionWriter, embedder, on_flush: Callable[[int], None] = lambda n: None,
                 cancelled: Cancelled | None = None):
        self.writer, self.embedder, self.on_flush, self.cancelled = writer, embedder, on_flush, cancelled
        self.pending: list[tuple[DocRecord, list[Chunk]]] = []
        self.n_chunks = 0
        self.embedded = 0
        self._hash_of: dict[str, str] = {}  # documents waiting here, which the writer cannot see yet
        self._doc_of: dict[str, str] = {}

    def staged_hash(self, doc_id: str) -> str | None:
        return self._hash_of.get(doc_id)

    def staged_doc_with_hash(self, sha256: str) -> str | None:
        return self._doc_of.get(sha256)

    def add(self, record: DocRecord, chunks: list[Chunk]) -> None:
        self.pending.append((record, chunks))
        self._hash_of[record.doc_id] = record.sha256
        self._doc_of.setdefault(record.sha256, record.doc_id)
        self.n_chunks += len(chunks)
        if self.n_chunks >= EMBED_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        _check(self.cancelled)
        texts = [self.writer.index_text(c) for _, chunks in self.pending for c in chunks]
        vecs = self.embedder.encode_documents(texts) if texts else np.zeros((0, self.writer.dim), np.float32)
        i = 0
        for rec, chunks in self.pending:
            self.writer.add(rec, chunks, vecs[i:i + len(chunks)])
            i += len(chunks)
        self.embedded += len(texts)
        self.pending, self.n_chunks = [], 0
        self._hash_of.clear()
        self._doc_of.clear()
        self.on_flush(self.embedded)


def ingest(collection: str, files: Iterable[tuple[str, bytes | Path]], *, settings, embedder,
           progress: Progress | None = None, total: int | None = None,
           cancelled: Cancelled | None = None) -> list[FileResult]:
    """Ingest ``(name, bytes or path)`` items into ``collection`` (created if missing).

    Returns one result per input file (archive members are reported as ``archive.zip/member``).
    ``cancelled`` is asked before each file, archive member and embedding batch, and before the commit;
    when it returns True, :class:`IngestCancelled` is raised and nothing is committed.
    """
    files = list(files)
    total = total or len(files)
    limits = settings.limits
    results: list[FileResult] = []
    report = progress or (lambda f, m: None)
    with CollectionWriter(collection, settings, embedder_id=embedder.model_id, dim=embedder.dim) as writer:
        current = [0.0, ""]
        batch = _Batch(writer, embedder, lambda n: report(current[0], f"{current[1]}: {n} chunks embedded"),
                       cancelled)
        chunk_cfg = writer.chunking
        seen: set[str] = set()
        for i, (name, src) in enumerate(files):
            _check(cancelled)
            display = unique_name(display_name(name), seen)  # two files named alike in one batch both land
            current[:] = [i / max(total, 1), f"{display} ({i + 1}/{total})"]
            report(*current)
            results.extend(_ingest_file(display, src, limits, writer, batch, chunk_cfg, embedder, cancelled))
        report(0.97, "embedding the last batch")
        batch.flush()
        report(0.98, "saving the collection")
        _check(cancelled)
        writer.commit()
    report(1.0, "done")
    return results


def _guard(label: str, fn) -> FileResult:
    """Run one file's ingest; any failure becomes that file's result, never the batch's (a cancel aborts it)."""
    try:
        return fn()
    except IngestCancelled:
        raise
    except Exception as e:  # never let one file take the batch down
        return _failed(label, e)


def _failed(label: str, e: BaseException) -> FileResult:
    if isinstance(e, LoadError):
        return FileResult(label, "failed", error=str(e))
    if isinstance(e, MemoryError):
        return FileResult(label, "failed", error=f"{label}: too large to process in memory; split it into smaller files.")
    return FileResult(label, "failed", error=f"{label}: " + user_message(
        e, f"Ingesting {label}") + " Check that the file opens in its usual program, or convert it to PDF or text.")


def _ingest_file(display, src, limits, writer, batch, chunk_cfg, embedder, cancelled=None) -> list[FileResult]:
    """One uploaded file: a document, a BEIR corpus, or a .zip whose members each get a result."""
    try:
        if _extension(display) not in limits.allowed_types and not _is_beir(display):
            raise LoadError(
                f"{display}: file type '.{_extension(display) or '(none)'}' is not accepted. "
                f"Allowed: {', '.join('.' + t for t in limits.allowed_types)}.")
        data = _read(src, limits.max_file_bytes, display)
    except LoadError as e:
        return [FileResult(display, "failed", error=str(e))]
    if not is_archive(data, display):
        return [_guard(display, lambda: _ingest_one(display, display, data, writer, batch, chunk_cfg, embedder))]
    out: list[FileResult] = []
    try:
        members = iter_archive(data, display, max_files=limits.max_files_per_upload,
                               max_total_bytes=limits.max_archive_bytes, max_ratio=limits.max_archive_ratio)
        for member, payload in members:
            _check(cancelled)
            label = f"{display}/{member}"
            if isinstance(payload, LoadError):
                out.append(FileResult(label, "failed", error=str(payload)))
            else:
                out.append(_guard(label, lambda: _ingest_one(label, member, payload, writer, batch, chunk_cfg, embedder)))
    except IngestCancelled:
        raise
    except Exception as e:  # the archive itself could not be walked: this file fails, the batch goes on
        out.append(_failed(display, e))
    return out


def display_name(name: str) -> str:
    """A relative path with every part made safe (no '..', no absolute paths, no control characters)."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(safe_name(p) for p in parts) if parts else safe_name(str(name))


def _is_beir(name: str) -> bool:
    return name.lower().endswith((".jsonl", ".jsonl.gz"))


def _read(src, max_bytes: int, display: str) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        path = Path(src)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise LoadError(f"{display}: cannot be read ({e.strerror or 'I/O error'}); check the path and its "
                            "permissions.") from None
        if size > max_bytes:
            raise LoadError(_too_big(display, size, max_bytes))
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise LoadError(_too_big(display, len(data), max_bytes))
    return data


def _too_big(display: str, size: int, max_bytes: int) -> str:
    return (f"{display}: {size / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB limit per file; "
            "split it, or raise limits.max_file_bytes in configs/default.yaml.")


def _ingest_one(label: str, name: str, data: bytes, writer: CollectionWriter, batch: _Batch,
                chunk_cfg: dict, embedder) -> FileResult:
    docs = load(data, name, table_fit=token_fit(embedder.tokenizer, chunk_cfg["chunk_tokens"]))
    res = FileResult(label, "duplicate")
    added = replaced = 0
    for doc in docs:
        if len(docs) == 1 and doc.metadata.get("format") != "beir":
            doc.doc_id = doc.source = label  # the relative path keeps same-named files in different folders apart
        sha = doc_hash(doc)
        old = batch.staged_hash(doc.doc_id) or writer.existing_hash(doc.doc_id)
        if old == sha:
            res.details.append(f"{doc.doc_id}: unchanged")
            continue
        twin = batch.staged_doc_with_hash(sha) or writer.doc_with_hash(sha)
        if twin is not None and twin != doc.doc_id:
            res.details.append(f"{doc.doc_id}: same content as {twin}")
            continue
        chunker = chunk_table if is_table(doc) else chunk_document  # tables: one row block per chunk
        chunks = chunker(doc, embedder.tokenizer, chunk_tokens=chunk_cfg["chunk_tokens"],
                         overlap_tokens=chunk_cfg["overlap_tokens"])
        if not chunks:
            res.details.append(f"{doc.doc_id}: no text")
            continue
        rec = DocRecord(doc.doc_id, doc.source, doc.title, sha, len(data) if len(docs) == 1 else 0,
                        doc.metadata.get("format", ""))
        batch.add(rec, chunks)
        res.chunks += len(chunks)
        res.documents += 1
        if old is None:
            added += 1
        else:
            replaced += 1
    if added:
        res.status = "added"
    elif replaced:
        res.status = "replaced"
    elif docs and all(d.endswith("no text") for d in res.details):
        res.status, res.error = "failed", f"{label}: no extractable text."
    return res


def remove_documents(collection: str, doc_ids: Iterable[str], *, settings) -> int:
    """Delete documents from a collection (one new version). Returns how many existed."""
    n = 0
    with CollectionWriter(collection, settings) as writer:
        for d in doc_ids:
            if writer.has_document(d):
                writer.remove(d)
                n += 1
        if n:
            writer.commit()
    return n


__all__ = ["ingest", "remove_documents", "iter_paths", "FileResult", "IngestCancelled", "doc_hash"]
