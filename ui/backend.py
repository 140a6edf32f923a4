"""What the tabs call: collections, ingest, search, answers and the arena, behind one object.

The UI never builds prompts, routes or calls models itself: answers come from
:meth:`rag.engine.Engine.ask`, the one question-to-answer path. Heavy parts (the embedder, the catalog,
the router) load on first use, once per process, inside the engine.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from rag.engine import Engine

log = logging.getLogger(__name__)

STARTER_COLLECTION = "hybrid-rag-docs"


class Backend:
    def __init__(self, settings, *, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine or Engine(settings)
        self._arena = None
        self._jobs = None
        self._lock = threading.Lock()

    @property
    def embedder(self):
        return self.engine.embedder

    @property
    def catalog(self):
        return self.engine.catalog

    def live_catalog(self):
        """The catalog with what local NIMs serve (``Engine.live_catalog``): the models a user can pick."""
        return self.engine.live_catalog()

    @property
    def state(self):
        """The state database (:mod:`rag.state`): users, rights, sessions, keys, conversations, votes, audit."""
        from rag.state import open_state

        return open_state(self.settings)

    @property
    def arena(self):
        if self._arena is None:
            with self._lock:
                if self._arena is None:
                    from rag.arena import Arena

                    self._arena = Arena.for_data_dir(self.settings.data_dir)
        return self._arena

    @property
    def jobs(self):
        """The background ingest jobs (:class:`ingest.jobs.JobManager`) shared by the API and the Documents tab."""
        if self._jobs is None:
            with self._lock:
                if self._jobs is None:
                    from ingest.jobs import JobManager

                    self._jobs = JobManager(
                        lambda c, files, progress, cancelled: self.ingest(c, files, progress=progress,
                                                                          cancelled=cancelled),
                        staging_root=self.settings.data_dir / "uploads", keep=self.settings.jobs.keep,
                        on_finish=self._on_job_finish)
        return self._jobs

    def _on_job_finish(self, job) -> None:
        """Called once per job after it reaches a final state (done, failed or cancelled): ingest metrics."""
        if job.state == "done" and job.started_at and job.finished_at:
            from rag.metrics import record_ingest

            record_ingest(job.chunks, job.finished_at - job.started_at)

    # -- collections --------------------------------------------------------------------------------
    def collections(self) -> list[dict]:
        from rag.store import list_collections

        errors: list[str] = []
        try:
            found = list_collections(self.settings, errors=errors)
        except OSError as e:
            log.warning("cannot list collections: %s", e)
            return []
        for e in errors:  # Milvus unreachable: the files collections still serve
            log.warning("cannot list the Milvus collections: %s", e)
        return found

    def collection_names(self) -> list[str]:
        return [c["name"] for c in self.collections()]

    def default_collection(self, names: list[str] | None = None) -> str | None:
        names = self.collection_names() if names is None else names
        if STARTER_COLLECTION in names:
            return STARTER_COLLECTION
        return names[0] if names else None

    def open(self, name: str):
        from rag.store import open_collection

        return open_collection(name, self.settings)

    def create_collection(self, name: str) -> None:
        from rag.store import CollectionError, validate_name

        validate_name(name)
        if name in self.collection_names():
            raise CollectionError(f"A collection named {name!r} already exists.")
        self.ingest(name, [])

    def delete_collection(self, name: str) -> None:
        from rag.store import delete_collection

        delete_collection(name, self.settings)

    def ingest(self, name: str, files: list[tuple[str, bytes | Path]], progress=None, cancelled=None):
        from ingest.pipeline import ingest

        return ingest(name, files, settings=self.settings, embedder=self.embedder, progress=progress,
                      cancelled=cancelled)

    def remove_documents(self, name: str, doc_ids: list[str]) -> int:
        from ingest.pipeline import remove_documents

        return remove_documents(name, doc_ids, settings=self.settings)

    # -- retrieval and answers ----------------------------------------------------------------------
    def search(self, collection: str, query: str, *, mode: str | None = None, k: int | None = None):
        return self.engine.search(collection, query, mode=mode, k=k)

    def ask(self, question: str, **kwargs):
        """:meth:`rag.engine.Engine.ask`: validates now, then streams Retrieved, Sources, Token…, Done."""
        return self.engine.ask(question, **kwargs)


__all__ = ["Backend", "STARTER_COLLECTION"]
