"""On-disk layout shared by the collection reader and writer: names, versions, the writer lock, fsync.

    <data_dir>/collections/<name>/
        CURRENT            "v000042" -- swapped atomically (temp file, fsync, rename)
        v000042/
            manifest.json  format version, embedder, build settings, counts, build info
            chunks.sqlite  chunk text + metadata (row = position in both indexes), documents
            vectors.npy    float32 embeddings (allow_pickle=False), the source for dense rebuilds
            dense/         faiss.write_index + dense.json
            sparse/        bm25s' own npy/json files + sparse.json
        .lock              one writer per collection (fcntl)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path

from ..errors import HybridRagError

FORMAT = 1
KEEP_VERSIONS = 2
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VERSION_RE = re.compile(r"^v(\d{6,})$")


class CollectionError(HybridRagError, RuntimeError):
    """A collection cannot be read or written; the message says why and what to do."""


class CollectionNotFound(CollectionError):
    """No such collection; ``name`` is the collection asked for (for messages that must not show paths)."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith((".", "..")):
        raise CollectionError(
            f"Invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit.")
    return name


def collections_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / "collections"


def collection_path(name: str, data_dir: str | Path) -> Path:
    return collections_root(data_dir) / validate_name(name)


def current_version(path: Path) -> str:
    """The version ``CURRENT`` names, or :class:`CollectionNotFound`."""
    try:
        version = (path / "CURRENT").read_text().strip()
    except FileNotFoundError:
        raise CollectionNotFound(
            f"No collection named {path.name!r} in {path.parent.parent}: create it with "
            f"`hybrid-rag ingest --collection {path.name} FILES...`.", name=path.name) from None
    if not VERSION_RE.match(version):
        raise CollectionError(f"{path}/CURRENT is damaged ({version!r}); delete the collection and ingest again.")
    return version


@contextlib.contextmanager
def writer_lock(path: Path, timeout: float = 600.0):
    """Hold the collection's writer lock (one writer at a time); released on every exit path."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CollectionError(f"Collection {path.name!r} is being written by another ingest; "
                                          "try again when it finishes.") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fsync_path(Path(dirpath) / f)
        fsync_path(Path(dirpath))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


__all__ = ["FORMAT", "KEEP_VERSIONS", "CollectionError", "CollectionNotFound", "validate_name",
           "collections_root", "collection_path", "current_version", "writer_lock", "write_atomic"]
