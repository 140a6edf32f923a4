"""Ingest: files → documents → chunks → embeddings → collection versions.

Each file gets a ``FileResult``. One bad file never aborts the batch and never touches the collection.

Big files do not hold a batch hostage. Files are taken smallest first (a ``.zip`` by the unpacked size its
directory declares; files of one size keep their order, so which of two identical files counts as the
duplicate is as before), and finished files are committed while later ones are still being embedded.
A file is committed whole or not at all (each archive member counts as a file), and readers only see
whole versions (each commit is the writer's atomic version swap). Commits happen

- before a big file (``BIG_FILE_BYTES``) starts: everything finished before it becomes searchable;
- while a file embeds, once finished files have waited ``COMMIT_AFTER_S``;
- at the end.

A commit rewrites the collection's chunk store, vectors and BM25 index (about 0.5 s at 10k chunks and 6 s at
100k on 2 cores), so finished files also wait at least ``1 / COMMIT_SHARE`` times the last commit's time:
commits take at most ``COMMIT_SHARE`` of an ingest. A batch without big files that embeds in under
``COMMIT_AFTER_S`` still makes exactly one version.

A ``cancelled`` callback that returns True stops the batch with :class:`IngestCancelled`: files committed
before the cancel stay (``IngestCancelled.results``); the file being ingested and the later ones are not added.

Per-file state: ``on_files`` (or, when it is not given, a ``progress`` callback's ``files`` method, which is how
the job queue follows an ingest) receives a tuple of :class:`FileState`, one per file in input order (archive
members in place of their archive), whenever one changes: ``queued`` → ``loading`` → ``embedding`` →
``embedded`` (waiting for its commit) → ``committed``; or ``duplicate``, ``failed``, ``cancelled``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rag.errors import HybridRagError, user_message
from rag.store import CollectionWriter, DocRecord
from rag.types import Document

from .archive import is_archive, iter_archive
from .batch import Batch, Session
from .chunking import chunk_document
from .filestates import FILE_STATES, FileState, Tracker
from .formats import LoadError, chunk_table, is_table, load, token_fit
from .formats.sniff import zip_entry_count
from .names import safe_name, unique_name

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]

EMBED_BATCH = 256          # chunks gathered before they are embedded: small documents share embedder calls
EMBED_SLICE = 128          # chunks per embedder call; cancel, progress and commit checks come between calls
BIG_FILE_BYTES = 1 << 20   # a file this large starts only after everything finished before it is committed
COMMIT_AFTER_S = 5.0       # finished files wait about this long for their commit while a later file embeds...
COMMIT_SHARE = 0.1         # ...and at least last commit time / COMMIT_SHARE, so commits stay a small share
_ESTIMATE_MAX_ENTRIES = 10_000  # archives with more entries are ordered by their packed size

class IngestCancelled(HybridRagError):
    """The ingest was cancelled. ``results``: the files committed before the cancel, which stay; nothing
    else of the batch was added."""

    def __init__(self, message: str = "The ingest was cancelled; the collection keeps its last committed version.",
                 results: list | None = None):
        super().__init__(message)
        self.results = list(results or [])


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


def ingest(collection: str, files: Iterable[tuple[str, bytes | Path]], *, settings, embedder,
           progress: Progress | None = None, total: int | None = None,
           cancelled: Cancelled | None = None,
           on_files: Callable[[tuple[FileState, ...]], None] | None = None) -> list[FileResult]:
    """Ingest ``(name, bytes or path)`` items into ``collection`` (created if missing).

    Returns one result per input file, in input order (archive members are reported as ``archive.zip/member``).
    ``progress(frac, message)`` follows the whole batch; ``on_files(states)`` each file (defaults to
    ``progress.files`` when the callback has one). ``cancelled`` is asked before each file, archive member,
    embedder call and commit; when it returns True, :class:`IngestCancelled` is raised: the files committed
    before stay, nothing else is added.
    """
    files = list(files)
    if on_files is None:
        on_files = getattr(progress, "files", None)
    return _Run(collection, files, settings, embedder, progress or (lambda f, m: None), cancelled, on_files,
                total or len(files)).run()


class _Run:
    """One call of :func:`ingest`: its files, their order and states, and the commit policy."""

    def __init__(self, collection, files, settings, embedder, report, cancelled, on_files, total):
        self.collection, self.files, self.settings, self.embedder = collection, files, settings, embedder
        self.report, self.cancelled, self.total = report, cancelled, total
        self.limits = settings.limits
        seen: set[str] = set()
        self.names = [unique_name(display_name(name), seen) for name, _ in files]  # two alike both land
        self.weights = [_work_estimate(name, src, self.limits) for name, src in files]
        self.tracker = Tracker(self.names, on_files)
        self.results: list[list[FileResult]] = [[] for _ in files]
        self.result_of: dict[tuple, FileResult] = {}
        self.waiting: list[tuple] = []  # in the writer, not committed yet
        self.waiting_since = 0.0
        self.committed: list[tuple] = []
        self.total_w = float(sum(max(w, 1) for w in self.weights)) or 1.0
        self.done_w = 0.0
        self.current: tuple | None = None  # the file being ingested
        self.current_msg = ""
        self.inner = 0  # bytes of the current archive's members done
        self.t0 = time.perf_counter()

    # -- the batch ---------------------------------------------------------------------------------
    def run(self) -> list[FileResult]:
        order = sorted(range(len(self.files)), key=lambda i: (self.weights[i], i))  # small files first
        try:
            self.session = Session(self.collection, self.settings, self.embedder)
        except BaseException:
            self.tracker.stop("failed", "not added: the upload could not start")
            raise
        try:
            self.batch = Batch(self.session, self.embedder, check=lambda: _check(self.cancelled),
                               after_slice=self._after_slice, batch_chunks=EMBED_BATCH, slice_chunks=EMBED_SLICE)
            chunk_cfg = self.session.writer.chunking
            for n, i in enumerate(order, 1):
                _check(self.cancelled)
                if self.weights[i] >= BIG_FILE_BYTES:
                    self._before_big()
                self.current, self.current_msg, self.inner = (i,), f"{self.names[i]} ({n}/{self.total})", 0
                self.report(self._frac(), self.current_msg)
                self.results[i] = self._ingest_file((i,), self.names[i], self.files[i][1], chunk_cfg)
                if self.weights[i] >= BIG_FILE_BYTES:  # its chunks are embedded now, while it is the current file
                    self.batch.flush()
                    self._release()
                self.done_w += max(self.weights[i], 1)
            self.current = None
            self.report(0.97, "embedding the last batch")
            self.batch.flush()
            self._release()
            self.report(0.98, "saving the collection")
            _check(self.cancelled)
            self._commit(last=True)
        except IngestCancelled:
            kept = [self.result_of[k] for k in sorted(self.committed)]
            self.tracker.stop("cancelled", "not ingested")
            raise IngestCancelled(_cancel_message(kept), results=kept) from None
        except BaseException:
            self.tracker.stop("failed", "not added: the upload stopped")
            raise
        finally:
            self.session.close()
        log.info("ingest %s: %d file(s) in %.1f s, %d version(s), commits %.1f s", self.collection,
                 len(self.files), time.perf_counter() - self.t0, self.session.commits, self.session.commit_s)
        self.report(1.0, "done")
        return [r for rs in self.results for r in rs]

    def _ingest_file(self, key: tuple, display: str, src, chunk_cfg) -> list[FileResult]:
        """One uploaded file: a document, a BEIR corpus, or a .zip whose members each get a result."""
        self.tracker.set(key, state="loading")
        limits = self.limits
        try:
            if _extension(display) not in limits.allowed_types and not _is_beir(display):
                raise LoadError(
                    f"{display}: file type '.{_extension(display) or '(none)'}' is not accepted. "
                    f"Allowed: {', '.join('.' + t for t in limits.allowed_types)}.")
            data = _read(src, limits.max_file_bytes, display)
        except LoadError as e:
            return [self._finish(key, FileResult(display, "failed", error=str(e)))]
        if not is_archive(data, display):
            return [self._finish(key, self._one(key, display, display, data, chunk_cfg))]
        out: list[FileResult] = []
        unpacked = 0
        try:
            members = iter_archive(data, display, max_files=limits.max_files_per_upload,
                                   max_total_bytes=limits.max_archive_bytes, max_ratio=limits.max_archive_ratio)
            for member, payload in members:
                _check(self.cancelled)
                label = f"{display}/{member}"
                mkey = (*key, len(out))
                self.tracker.add_member(key, mkey, label)
                if isinstance(payload, LoadError):
                    out.append(self._finish(mkey, FileResult(label, "failed", error=str(payload))))
                else:
                    out.append(self._finish(mkey, self._one(mkey, label, member, payload, chunk_cfg)))
                    unpacked += len(payload)
                    self.inner = unpacked
        except IngestCancelled:
            raise
        except Exception as e:  # the archive itself could not be walked: this file fails, the batch goes on
            out.append(self._finish(key, _failed(display, e)))
            return out
        self.tracker.remove(key)
        return out

    def _one(self, key: tuple, label: str, name: str, data: bytes, chunk_cfg) -> FileResult:
        return _guard(label, lambda: _ingest_one(key, label, name, data, self.session, self.batch, chunk_cfg,
                                                 self.embedder))

    def _finish(self, key: tuple, res: FileResult) -> FileResult:
        """A file's result is known: what it staged waits for embedding and its commit, or is dropped."""
        if res.status in ("added", "replaced"):
            self.result_of[key] = res
            self.batch.close(key)
            self.tracker.set(key, state="embedding", chunks=res.chunks, embedded=self.batch.done[key])
            self._release()
        else:
            self.batch.discard(key)
            self.tracker.set(key, state="duplicate" if res.status == "duplicate" else "failed", chunks=0,
                             embedded=0, detail=res.error or "; ".join(res.details))
        self._maybe_commit()
        return res

    # -- the commit policy -------------------------------------------------------------------------
    def _after_slice(self, keys: Counter) -> None:
        for key in keys:
            if key in self.tracker.states and self.tracker.get(key).state in ("loading", "embedding"):
                self.tracker.set(key, state="embedding", chunks=self.batch.staged[key],
                                 embedded=self.batch.done[key])
        self._release()
        self._maybe_commit()
        if self.current is None:
            self.report(0.97, f"embedding the last batch: {self.batch.embedded} chunks embedded" + self._searchable())
            return
        st = self.tracker.states.get(self.current)
        what = f"{st.embedded}/{st.chunks} chunks embedded" if st and st.state == "embedding" else \
            f"{self.batch.embedded} chunks embedded"
        self.report(self._frac(), f"{self.current_msg}: {what}" + self._searchable())

    def _release(self) -> None:
        for key in self.batch.release(self.session.writer):
            st = self.tracker.get(key)
            self.tracker.set(key, state="embedded", embedded=st.chunks)
            if not self.waiting:
                self.waiting_since = time.monotonic()
            self.waiting.append(key)

    def _before_big(self) -> None:
        """Everything finished so far is embedded and committed before a big file starts."""
        if not self.batch.pending and not self.waiting:
            return
        self.report(self._frac(), "committing the files so far before a big one" + self._searchable())
        self.batch.flush()
        self._release()
        self._maybe_commit(before_big=True)

    def _maybe_commit(self, *, before_big: bool = False) -> None:
        if not self.waiting:
            return
        need = self.session.last_commit_s / COMMIT_SHARE
        if not before_big:
            need = max(need, COMMIT_AFTER_S)
        if time.monotonic() - self.waiting_since >= need:
            _check(self.cancelled)  # a cancel commits nothing more
            self._commit()

    def _commit(self, *, last: bool = False) -> None:
        self.session.commit(last=last)
        for key in self.waiting:
            self.tracker.set(key, state="committed", detail="searchable")
        self.committed.extend(self.waiting)
        waiting, self.waiting = self.waiting, []
        if not last:
            log.info("ingest %s: %d file(s) committed while the batch goes on (commit %.2f s)", self.collection,
                     len(waiting), self.session.last_commit_s)

    # -- progress ----------------------------------------------------------------------------------
    def _frac(self) -> float:
        """Share of the batch done, by bytes: a big file moves the bar as it embeds."""
        cur = 0.0
        if self.current is not None:
            w = max(self.weights[self.current[0]], 1)
            st = self.tracker.states.get(self.current)
            if st is not None and st.chunks:
                cur = w * min(st.embedded / st.chunks, 1.0)
            else:  # an archive: by the bytes of its members so far
                cur = min(float(self.inner), w)
        return min(0.96, 0.96 * (self.done_w + cur) / self.total_w)

    def _searchable(self) -> str:
        n = len(self.committed)
        return f"; {n} file{'s' if n != 1 else ''} searchable" if n else ""


def _cancel_message(kept: list[FileResult]) -> str:
    if not kept:
        return IngestCancelled().args[0]
    n = len(kept)
    return (f"Cancelled: {n} file{'s were' if n != 1 else ' was'} already added and stay{'s' if n == 1 else ''} "
            "in the collection; the file being ingested and the rest were not added.")


def _work_estimate(name: str, src, limits) -> int:
    """Bytes of work a file brings, to take small files first: its size, or for a .zip the unpacked size its
    directory declares (an estimate for ordering only; the archive limits are checked while unpacking)."""
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            size = len(src)
        else:
            size = Path(src).stat().st_size
        if _extension(str(name)) != "zip" or size > limits.max_file_bytes:
            return size
        in_memory = isinstance(src, (bytes, bytearray, memoryview))
        if in_memory:
            tail = bytes(src[-65557:])
        else:
            with open(src, "rb") as f:
                f.seek(max(0, size - 65557))
                tail = f.read()
        n = zip_entry_count(tail)  # read before zipfile builds an entry for each
        if n is None or n > _ESTIMATE_MAX_ENTRIES:
            return size
        with zipfile.ZipFile(io.BytesIO(src) if in_memory else src) as z:
            unpacked = sum(max(0, i.file_size) for i in z.infolist())
        return max(size, min(unpacked, limits.max_archive_bytes))
    except Exception:  # unreadable or damaged: ingesting it says why
        return 0


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


def _ingest_one(key: tuple, label: str, name: str, data: bytes, session: Session, batch: Batch,
                chunk_cfg: dict, embedder) -> FileResult:
    docs = load(data, name, table_fit=token_fit(embedder.tokenizer, chunk_cfg["chunk_tokens"]))
    res = FileResult(label, "duplicate")
    added = replaced = 0
    for doc in docs:
        beir = doc.metadata.get("format") == "beir"
        if len(docs) == 1 and not beir:
            doc.doc_id = doc.source = label  # the relative path keeps same-named files in different folders apart
        sha = doc_hash(doc)
        writer = session.writer  # a commit during this file (its embedding) moves on to a new writer
        old = batch.staged_hash(doc.doc_id) or writer.existing_hash(doc.doc_id)
        if old == sha:
            res.details.append(f"{doc.doc_id}: unchanged")
            continue
        # a BEIR corpus keeps every _id (its judgements name them); other uploads skip repeated content
        twin = None if beir else batch.staged_doc_with_hash(sha) or writer.doc_with_hash(sha)
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
        batch.add(key, rec, chunks)
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


__all__ = ["ingest", "remove_documents", "iter_paths", "FileResult", "FileState", "FILE_STATES",
           "IngestCancelled", "doc_hash"]
