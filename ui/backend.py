"""What the tabs call: collections, retrieval, generation, ingest and the arena, behind one object.

The UI never builds prompts or calls models itself: answers come from ``rag.answer.answer`` (or an
``answer_fn`` with the same contract, which the unit tests pass in). Heavy things (the embedder, the
catalog) load on first use, once per process.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def event_kind(ev) -> str:
    """``sources`` | ``token`` | ``done`` | ``other`` for an event from ``answer()``."""
    name = type(ev).__name__.lower()
    if name in ("sources", "token", "done"):
        return name
    if hasattr(ev, "hits"):
        return "sources"
    if hasattr(ev, "text"):
        return "token"
    if hasattr(ev, "meta"):
        return "done"
    return "other"


def meta_dict(meta) -> dict:
    """``Done.meta`` as a plain dict, whether it is a dict, a dataclass or a pydantic model."""
    if meta is None:
        return {}
    if isinstance(meta, dict):
        return dict(meta)
    if hasattr(meta, "model_dump"):
        return meta.model_dump()
    import dataclasses

    if dataclasses.is_dataclass(meta):
        return dataclasses.asdict(meta)
    return dict(vars(meta))


class Backend:
    def __init__(self, settings, *, answer_fn=None, catalog=None, embedder=None):
        self.settings = settings
        self._answer_fn = answer_fn
        self._catalog = catalog
        self._embedder = embedder
        self._arena = None
        self._lock = threading.Lock()

    # -- lazily built heavy parts -------------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    from rag.retrieve import make_embedder

                    self._embedder = make_embedder(self.settings)
        return self._embedder

    @property
    def catalog(self):
        if self._catalog is None:
            from rag.catalog import default_catalog

            self._catalog = default_catalog()
        return self._catalog

    @property
    def arena(self):
        if self._arena is None:
            from rag.arena import Arena

            self._arena = Arena.for_data_dir(self.settings.data_dir)
        return self._arena

    # -- collections --------------------------------------------------------------------------------
    def collections(self) -> list[dict]:
        from rag.store import list_collections

        try:
            return list_collections(self.settings.data_dir)
        except OSError as e:
            log.warning("cannot list collections: %s", e)
            return []

    def collection_names(self) -> list[str]:
        return [c["name"] for c in self.collections()]

    def open(self, name: str):
        from rag.store import open_collection

        return open_collection(name, self.settings.data_dir)

    def create_collection(self, name: str) -> None:
        from rag.store import CollectionError, validate_name

        validate_name(name)
        if name in self.collection_names():
            raise CollectionError(f"A collection named {name!r} already exists.")
        self.ingest(name, [])

    def delete_collection(self, name: str) -> None:
        from rag.store import delete_collection

        delete_collection(name, self.settings.data_dir)

    def ingest(self, name: str, files: list[tuple[str, bytes | Path]], progress=None):
        from ingest.pipeline import ingest

        return ingest(name, files, settings=self.settings, embedder=self.embedder, progress=progress)

    def remove_documents(self, name: str, doc_ids: list[str]) -> int:
        from ingest.pipeline import remove_documents

        return remove_documents(name, doc_ids, settings=self.settings)

    # -- retrieval and answers ----------------------------------------------------------------------
    def search(self, collection: str, query: str, *, mode: str | None = None, k: int | None = None):
        from rag.retrieve import get_retriever

        retriever = get_retriever(collection, settings=self.settings, embedder=self.embedder)
        return retriever.search(query, mode=mode, k=k)

    def answer(self, question: str, hits, **kwargs):
        fn = self._answer_fn
        if fn is None:
            from rag.answer import answer as fn
        if self._catalog is not None and "catalog" not in kwargs:
            kwargs["catalog"] = self._catalog
        return fn(question, hits, **kwargs)


__all__ = ["Backend", "event_kind", "meta_dict"]
