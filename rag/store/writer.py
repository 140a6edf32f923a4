"""Writing collections: stage additions and removals, then commit them as a new version.

A writer builds the next version beside the current one and only then swaps ``CURRENT``; readers
keep the version they opened, so a query never sees a half-built index and a crash mid-write
leaves the previous version loadable. The last two versions are kept.

Build settings (chunking, BM25 method/k1/b/stopwords/stemmer, ``retrieval.index_title`` and the dense
index build parameters) are fixed when a collection is created and recorded in its manifest; later writes
keep them, so one collection is always indexed one way. Settings files change them for new collections.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np

from ..dense import DenseIndex
from ..sparse import SparseIndex
from .base import DocRecord, StagingWriter
from .layout import (
    FORMAT,
    KEEP_VERSIONS,
    VERSION_RE,
    CollectionError,
    CollectionNotFound,
    collection_path,
    current_version,
    fsync_path,
    fsync_tree,
    write_atomic,
    writer_lock,
)
from .reader import CHUNK_COLS, forget, row_to_chunk

log = logging.getLogger(__name__)

SPARSE_BUILD = ("method", "k1", "b", "stopwords", "stemmer")
DENSE_BUILD = ("exact_max", "approx", "storage", "ivf_nlist", "hnsw_m", "hnsw_ef_construction")


def delete_collection(name: str, data_dir: str | Path) -> None:
    path = collection_path(name, data_dir)
    if not path.is_dir():
        raise CollectionNotFound(f"No collection named {name!r}: `hybrid-rag collections` lists them.", name=name)
    with writer_lock(path):
        trash = path.with_name(f".deleted-{name}-{os.getpid()}-{time.time_ns()}")
        os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
    forget(path)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, source TEXT NOT NULL,
    text TEXT NOT NULL, start INTEGER NOT NULL, end_ INTEGER NOT NULL, page INTEGER, heading TEXT, title TEXT);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS docs (
    doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT, sha256 TEXT NOT NULL, n_chunks INTEGER NOT NULL,
    bytes INTEGER, format TEXT, added_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS docs_hash ON docs(sha256);
"""


class FilesWriter(StagingWriter):
    """Stage additions and removals, then ``commit()`` them as a new version (the files backend).

    Use as a context manager: it holds the collection's writer lock until it exits.
    ``index_text`` is applied to each chunk to get the text that BM25 and the embedder see.
    """

    def __init__(self, name: str, settings, *, embedder_id: str | None = None, dim: int | None = None):
        """``settings``: the app settings (data dir, and the build settings a new collection gets).
        ``embedder_id``/``dim``: required to create a collection; checked against an existing one."""
        self.path = collection_path(name, settings.data_dir)
        self.name = name
        self.embedder_id, self.dim = embedder_id, dim  # None: take them from the existing collection
        self.chunking = settings.chunking.model_dump()
        self.index_title = settings.retrieval.index_title
        self.sparse_settings, self.dense_settings = settings.sparse, settings.dense
        self._lock_cm = None
        self._reset_staging()
        self.base_version: str | None = None
        self._base_db: sqlite3.Connection | None = None

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> "FilesWriter":
        self._lock_cm = writer_lock(self.path)
        self._lock_cm.__enter__()
        try:
            self._open_base()
        except BaseException:
            self.__exit__(None, None, None)  # every failure releases the lock
            raise
        return self

    def _open_base(self) -> None:
        try:
            self.base_version = current_version(self.path)
        except CollectionNotFound:
            self.base_version = None
            if self.embedder_id is None or self.dim is None:
                raise
            return
        base = self.path / self.base_version
        manifest = json.loads((base / "manifest.json").read_text())
        if self.embedder_id is None:
            self.embedder_id = manifest["embedder"]["id"]
        if manifest["embedder"]["id"] != self.embedder_id:
            raise CollectionError(
                f"Collection {self.name!r} was built with embedder {manifest['embedder']['id']!r}, but "
                f"{self.embedder_id!r} is configured: ingest into a new collection, or switch the embedder back.")
        self.dim = int(manifest["embedder"]["dim"])
        # the collection keeps the build settings it was created with
        self.chunking = manifest["chunking"]
        self.index_title = manifest.get("index_title", True)
        stored = manifest.get("build_settings") or _legacy_build_settings(base, manifest)
        self.sparse_settings = self.sparse_settings.model_copy(update=stored["sparse"])
        self.dense_settings = self.dense_settings.model_copy(update=stored["dense"])
        self._base_db = sqlite3.connect(f"file:{base / 'chunks.sqlite'}?mode=ro", uri=True)

    def __exit__(self, *exc):
        try:
            if self._base_db is not None:
                self._base_db.close()
                self._base_db = None
        finally:
            self._lock_cm.__exit__(*exc)
        return False

    # -- the committed version's documents, for dedupe ----------------------------------------
    def _base_hash(self, doc_id: str) -> str | None:
        if self._base_db is None:
            return None
        r = self._base_db.execute("SELECT sha256 FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
        return r[0] if r else None

    def _base_docs_with_hash(self, sha256: str) -> list[str]:
        if self._base_db is None:
            return []
        return [d for (d,) in self._base_db.execute("SELECT doc_id FROM docs WHERE sha256 = ?", (sha256,))]

    # -- commit ------------------------------------------------------------------------------
    def commit(self) -> str | None:
        """Write the next version and swap it in. Returns its name (None when nothing changed)."""
        if not self.pending and self.base_version is not None:
            return None
        n_next = int(self.base_version[1:]) + 1 if self.base_version else 1
        version = f"v{n_next:06d}"
        tmp = self.path / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            self._build(tmp)
            fsync_tree(tmp)
            final = self.path / version
            shutil.rmtree(final, ignore_errors=True)  # a leftover of a crash after rename, before CURRENT
            os.rename(tmp, final)
            fsync_path(self.path)
            write_atomic(self.path / "CURRENT", version + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._gc(version)
        log.info("collection %s: committed %s", self.name, version)
        return version

    def checkpoint(self) -> str | None:
        """Commit what is staged and go on writing on top of the new version, keeping the writer lock (so no
        other writer gets in between the versions of one ingest). Returns the version committed, if any."""
        version = self.commit()
        if self._base_db is not None:
            self._base_db.close()
            self._base_db = None
        self._reset_staging()
        self._open_base()
        return version

    def _build(self, out: Path) -> None:
        secs: dict[str, float] = {}
        tick = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal tick
            now_ = time.perf_counter()
            secs[name] = round(now_ - tick, 3)
            tick = now_

        db_path = out / "chunks.sqlite"
        removed_rows = np.zeros(0, dtype=np.int64)
        base = self.path / self.base_version if self.base_version else None
        if base is not None:
            shutil.copyfile(base / "chunks.sqlite", db_path)
        con = sqlite3.connect(db_path)
        try:
            con.executescript(_SCHEMA)
            if self._removed:
                ids = list(self._removed)
                marks = ",".join("?" * len(ids))
                removed_rows = np.array(
                    [r[0] for r in con.execute(f"SELECT row FROM chunks WHERE doc_id IN ({marks})", ids)],
                    dtype=np.int64)
                con.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", ids)
                con.execute(f"DELETE FROM docs WHERE doc_id IN ({marks})", ids)
                if len(removed_rows):  # renumber rows to stay 0..n-1, in their old order
                    con.execute("CREATE TEMP TABLE renum AS SELECT row AS old, "
                                "ROW_NUMBER() OVER (ORDER BY row) - 1 AS new FROM chunks")
                    con.execute("CREATE INDEX temp.renum_old ON renum(old)")
                    con.execute("UPDATE chunks SET row = -1 - (SELECT new FROM renum WHERE old = chunks.row)")
                    con.execute("UPDATE chunks SET row = -1 - row")
            kept = con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            now = time.time()
            row = kept
            for rec, chunks in self._added:
                con.execute("INSERT INTO docs VALUES (?,?,?,?,?,?,?,?)",
                            (rec.doc_id, rec.source, rec.title, rec.sha256, len(chunks), rec.bytes, rec.format, now))
                con.executemany(
                    "INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(row + i, c.id, c.doc_id, c.source, c.text, c.start, c.end, c.page, c.heading, c.title)
                     for i, c in enumerate(chunks)])
                row += len(chunks)
            con.commit()
            n_docs = con.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
            lap("chunk_store")
            sparse_proto = SparseIndex.from_settings(self.sparse_settings)
            stored = self._reusable_tokens(base, sparse_proto)
            if stored is None:  # first version, or tokeniser settings changed: tokenise every row once
                texts = (self.index_text(row_to_chunk(r)) for r in
                         con.execute(f"SELECT {CHUNK_COLS} FROM chunks ORDER BY row"))
                sparse_tokens = sparse_proto.tokenizer.many(texts)
            else:  # only the new chunks are tokenised; kept rows reuse their stored token ids
                sparse_tokens = sparse_proto.tokenizer.many(
                    self.index_text(c) for _, chunks in self._added for c in chunks)
        finally:
            con.close()
        total = row
        lap("tokenise")

        # vectors: kept rows of the old matrix, then the new ones (streamed, never all in memory)
        new_vecs = np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.dim), np.float32)
        _write_vectors(out / "vectors.npy", base / "vectors.npy" if base is not None else None,
                       removed_rows, new_vecs, self.dim)
        lap("vectors")

        # dense: grow the old index in place when nothing was removed and its kind still fits
        dense = None
        if base is not None and not len(removed_rows):
            old = DenseIndex.load(base / "dense", self.dense_settings.model_copy(update={"use_gpu": "never"}))
            if old.fits(total):
                dense = old.add(new_vecs)
        grown = dense is not None
        if dense is None:
            dense = DenseIndex(self.dim, self.dense_settings.model_copy(update={"use_gpu": "never"}))
            dense.build(np.load(out / "vectors.npy", mmap_mode="r", allow_pickle=False))
        dense.save(out / "dense")
        lap("dense")

        if stored is None:
            sparse = sparse_proto.build_from_tokens(sparse_tokens)
        else:
            n_old = len(stored[1]) - 1
            keep = np.setdiff1d(np.arange(n_old), removed_rows) if len(removed_rows) else None
            sparse = sparse_proto.rebuilt(keep, sparse_tokens, stored=stored)
        if sparse.size != total:
            raise CollectionError(f"Internal error: the BM25 index of {self.name!r} has {sparse.size} rows for "
                                  f"{total} chunks; nothing was committed. Please report it.")
        sparse.save(out / "sparse")
        lap("sparse")
        self.last_build_seconds = secs

        manifest = {
            "format": FORMAT,
            "name": self.name,
            "embedder": {"id": self.embedder_id, "dim": self.dim},
            "chunking": self.chunking,
            "index_title": self.index_title,
            "build_settings": {"sparse": {k: getattr(self.sparse_settings, k) for k in SPARSE_BUILD},
                               "dense": {k: getattr(self.dense_settings, k) for k in DENSE_BUILD}},
            "sparse": sparse.params,
            "dense": {"kind": dense.kind, "size": dense.size},
            "counts": {"documents": n_docs, "chunks": total},
            "build": {"time": time.time(), "python": platform.python_version(),
                      "hybrid_rag": _package_version(), "base": self.base_version, "seconds": secs,
                      "sparse_tokens_reused": stored is not None, "dense_grown_in_place": grown},
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1))

    def _reusable_tokens(self, base: Path | None, proto: SparseIndex):
        """The base version's stored BM25 token ids, when they were made by the same tokeniser."""
        if base is None:
            return None
        manifest = json.loads((base / "manifest.json").read_text())
        old = manifest.get("sparse", {})
        if (old.get("stopwords"), old.get("stemmer")) != (proto.params["stopwords"], proto.params["stemmer"]):
            return None
        return SparseIndex.load_token_ids(base / "sparse")

    def _gc(self, current: str) -> None:
        versions = sorted(d.name for d in self.path.iterdir() if VERSION_RE.match(d.name))
        for old in versions[:-KEEP_VERSIONS]:
            shutil.rmtree(self.path / old, ignore_errors=True)
        for d in self.path.glob(".tmp-*"):
            shutil.rmtree(d, ignore_errors=True)


def _legacy_build_settings(base: Path, manifest: dict) -> dict:
    """Build settings of a version written before manifests recorded them."""
    dense = json.loads((base / "dense" / "dense.json").read_text())
    renamed = {"hnsw_ef_construction": "ef_construction"}
    return {"sparse": {k: manifest["sparse"][k] for k in SPARSE_BUILD if k in manifest.get("sparse", {})},
            "dense": {k: dense[renamed.get(k, k)] for k in DENSE_BUILD if renamed.get(k, k) in dense}}


def _write_vectors(path: Path, base: Path | None, removed_rows: np.ndarray, new_vecs: np.ndarray, dim: int) -> None:
    """vectors.npy of the next version: the base rows minus ``removed_rows``, then ``new_vecs``.

    Without removals the base file's bytes are copied as they are after a new header, so an add costs
    one sequential copy rather than a load, a concatenate and a save of the whole matrix.
    """
    new_vecs = np.ascontiguousarray(new_vecs, dtype=np.float32).reshape(-1, dim)
    if base is None:
        np.save(path, new_vecs, allow_pickle=False)
        return
    old = np.load(base, mmap_mode="r", allow_pickle=False)
    if len(removed_rows) or old.dtype != np.float32 or not old.flags.c_contiguous:
        kept = np.delete(np.asarray(old), removed_rows, axis=0) if len(removed_rows) else np.asarray(old)
        np.save(path, np.concatenate([kept.astype(np.float32), new_vecs]), allow_pickle=False)
        return
    n_old, offset = len(old), old.offset
    del old
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                "shape": (n_old + len(new_vecs), dim)})
        with open(base, "rb") as src:
            src.seek(offset)
            shutil.copyfileobj(src, f, 16 * 2**20)
        f.write(new_vecs.tobytes())


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("hybrid-rag")
    except Exception:
        return "dev"


__all__ = ["FilesWriter", "DocRecord", "delete_collection"]
