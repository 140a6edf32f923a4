"""Which backend holds a collection, and the entry points that route to it.

A files collection is a directory under ``<data_dir>/collections`` with a ``CURRENT``; a Milvus collection is a
state record in the Milvus at ``store.milvus.uri`` (consulted only when Milvus is in use: ``store.backend: milvus``,
a server uri, or an existing Milvus Lite file). A name is looked up in that order; ``store.backend`` only decides
where a NEW collection goes. Callers that only have a data directory may pass it for ``settings``: the settings
are then loaded for it (environment and settings file, as the app would).
"""
from __future__ import annotations

from . import milvus, reader, writer
from .base import Collection
from .layout import CollectionError, CollectionNotFound, collection_path


def _settings(settings_or_dir):
    if hasattr(settings_or_dir, "store"):
        return settings_or_dir
    from ..config import load_settings

    return load_settings(data_dir=settings_or_dir)


def backend_of(name: str, settings) -> str | None:
    """"files", "milvus", or None for a collection that does not exist yet."""
    settings = _settings(settings)
    if (collection_path(name, settings.data_dir) / "CURRENT").exists():
        return "files"
    if milvus.in_use(settings) and milvus.has_collection(name, settings):
        return "milvus"
    return None


def open_collection(name: str, settings) -> Collection:
    """The committed state of a collection, opened with the query-time settings (cached per state)."""
    if backend_of(name, settings) == "milvus":
        return milvus.open_collection(name, settings)
    return reader.open_collection(name, settings)


def list_collections(settings, *, errors: list[str] | None = None) -> list[dict]:
    """name, backend, version, documents, chunks, embedder, updated of every collection, by name.
    ``errors``: when given, a Milvus that cannot be reached is reported there (its message says which uri and
    what to set) and the files collections are still listed; else it raises."""
    settings = _settings(settings)
    out = reader.list_collections(settings.data_dir)
    if milvus.in_use(settings):
        files = {c["name"] for c in out}
        try:
            out += [c for c in milvus.list_collections(settings) if c["name"] not in files]
        except CollectionError as e:
            if errors is None:
                raise
            errors.append(str(e))
    return sorted(out, key=lambda c: c["name"])


def delete_collection(name: str, settings) -> None:
    settings = _settings(settings)
    if backend_of(name, settings) == "milvus":
        milvus.delete_collection(name, settings)
    else:
        writer.delete_collection(name, settings.data_dir)


def CollectionWriter(name: str, settings, *, embedder_id: str | None = None, dim: int | None = None):  # noqa: N802
    """A writer for the collection's own backend (``store.backend`` for a new collection): stage additions and
    removals, ``commit()`` them. Use as a context manager (it holds the collection's writer lock).
    ``embedder_id``/``dim``: required to create a collection; checked against an existing one."""
    backend = backend_of(name, settings) or settings.store.backend
    cls = milvus.MilvusWriter if backend == "milvus" else writer.FilesWriter
    return cls(name, settings, embedder_id=embedder_id, dim=dim)


def migrate(name: str, settings, to: str, new_name: str) -> dict:
    """Copy collection ``name`` into backend ``to`` as ``new_name``, vectors and chunks as they are (no
    re-embedding), and verify the counts. The source is not changed. Returns the counts of both."""
    settings = _settings(settings)
    src = open_collection(name, settings)
    if src.backend == to and new_name == name:
        raise CollectionError(f"Collection {name!r} is already in the {to} backend.")
    if backend_of(new_name, settings) is not None:
        raise CollectionError(f"A collection named {new_name!r} already exists: pass another name with --as, or "
                              f"delete it first (`hybrid-rag collections --delete {new_name}`).")
    target = settings.model_copy(update={"store": settings.store.model_copy(update={"backend": to})})
    # the copy keeps the source's build settings (chunking, title indexing, BM25 tokens)
    sp = src.manifest["build_settings"]["sparse"]
    target.chunking = target.chunking.model_copy(update=src.manifest["chunking"])
    target.retrieval = target.retrieval.model_copy(update={"index_title": src.manifest.get("index_title", True)})
    target.sparse = target.sparse.model_copy(update={k: sp[k] for k in ("k1", "b", "stopwords", "stemmer")})
    if to == "files":
        target.sparse = target.sparse.model_copy(update={"method": sp.get("method", "lucene")})
    dim = int(src.manifest["embedder"]["dim"])
    with CollectionWriter(new_name, target, embedder_id=src.embedder_id, dim=dim) as w:
        for rec, chunks, vectors in src.export():
            w.add(rec, chunks, vectors)
        w.commit()
    dst = open_collection(new_name, settings)
    counts = {"source": src.counts(), "target": dst.counts()}
    if counts["source"] != counts["target"] or dst.size != src.size:
        raise CollectionError(f"The copy {new_name!r} has {counts['target']}, the source {counts['source']}: the copy "
                              f"is incomplete; delete it (`hybrid-rag collections --delete {new_name}`) and try again.")
    return counts


__all__ = ["backend_of", "open_collection", "list_collections", "delete_collection", "CollectionWriter", "migrate",
           "CollectionNotFound"]
