"""One path from a question to a cited answer: retrieve → route → budget → stream → citations.

The Chat tab, Compare, ``hybrid-rag ask`` and the HTTP API all call :meth:`Engine.ask` (or
``rag.ask``, the same on a shared engine)::

    engine = Engine(load_settings())
    for ev in engine.ask("How do I upload?", collection="docs"):
        if isinstance(ev, Retrieved): show_searching_done(ev.result)   # every retrieved hit, ranked
        elif isinstance(ev, Sources): show(ev.hits)                     # exactly the chunks sent, [1]..[n]
        elif isinstance(ev, Token): print(ev.text, end="")
        elif isinstance(ev, Done): show(ev.meta, ev.meta["citations"])  # route, model, timings, usage ...

Compare retrieves once (:meth:`Engine.search`) and passes the result to several ``ask`` calls, so every
model sees the same passages. ``ask`` validates its arguments (question, route, model, sampling
parameters, history, the collection) before it returns the iterator, so callers can refuse bad input
before they start streaming.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

from . import metrics
from .answer import (
    Done,
    NoModelAvailable,
    Sources,
    Token,
    answer,
    parse_citations,
    validate_request,
)
from .catalog import Catalog
from .errors import InvalidInput
from .llm import HealthCache
from .retrieve import RetrievalResult, Retriever
from .router import Router
from .store import open_collection


@dataclass
class Retrieved:
    """Retrieval is done: ``result.hits`` are every hit, best first (the prompt may take fewer)."""

    result: RetrievalResult


Event = Retrieved | Sources | Token | Done


class Engine:
    """The parts every request shares, built from one :class:`~rag.config.Settings`: the embedder, the
    model catalog, the auto router and the endpoint health cache. Heavy parts load on first use, once.
    Thread-safe; build one per process (or per settings) and share it."""

    def __init__(self, settings, *, embedder=None, catalog: Catalog | None = None, router: Router | None = None,
                 health: HealthCache | None = None):
        self.settings = settings
        self._embedder, self._catalog, self._router, self._health = embedder, catalog, router, health
        self._lock = threading.RLock()

    # -- shared parts, built lazily ------------------------------------------------------------
    def _once(self, attr: str, build):
        """``self.<attr>``, built by ``build()`` the first time any thread asks for it."""
        value = getattr(self, attr)
        if value is None:
            with self._lock:
                value = getattr(self, attr)
                if value is None:
                    value = build()
                    setattr(self, attr, value)
        return value

    @property
    def embedder(self):
        from .embed import make_embedder

        return self._once("_embedder", lambda: make_embedder(self.settings.embedder))

    @property
    def catalog(self) -> Catalog:
        return self._once("_catalog", lambda: Catalog.from_settings(self.settings))

    @property
    def health(self) -> HealthCache:
        """Endpoint health, trusted for the catalog's ``health.ttl_s``."""
        return self._once("_health", lambda: HealthCache(ttl_s=self.catalog.spec.health.ttl_s))

    def live_catalog(self) -> Catalog:
        """The catalog with what local endpoints serve (``GET /v1/models``, cached for the health TTL): catalog
        models they list are used there too, and models only they offer are extra entries."""
        from .llm import discover

        return discover(self.catalog, self.health)

    @property
    def router(self) -> Router:
        return self._once("_router", lambda: Router.from_settings(self.settings, embedder=self.embedder))

    # -- retrieval -------------------------------------------------------------------------------
    def retriever(self, collection: str) -> Retriever:
        return Retriever(open_collection(collection, self.settings), self.embedder, self.settings.retrieval)

    def search(self, collection: str, query: str, *, mode: str | None = None, k: int | None = None) -> RetrievalResult:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("The query is empty: type something to search for.")
        result = self.retriever(collection).search(query, mode=mode, k=k)
        metrics.record_retrieval(result.mode, result.retrieval_ms)
        return result

    # -- the one question-to-answer path -------------------------------------------------------------
    def ask(self, question: str, *, collection: str | None = None, retrieval: RetrievalResult | None = None,
            history: list[dict] | None = None, route: str = "auto", model: str | None = None,
            params: dict | None = None, mode: str | None = None, k: int | None = None) -> Iterator[Event]:
        """Answer ``question`` from ``collection`` (or from an earlier ``retrieval``), streaming events.

        ``route``: auto | speed | quality | openusd; ``model``: a catalog id or alias (overrides the route);
        ``params``: sampling overrides (temperature, top_p, max_tokens, stop, seed, ...); ``mode``/``k``:
        retrieval mode and chunks (settings by default). ``Done.meta`` is :func:`rag.answer.answer`'s plus
        ``citations`` ({used: [n], unknown: [n]}) and ``answer`` (the whole text).
        """
        if retrieval is None and not collection:
            raise InvalidInput("No collection given: choose the collection to search.")
        catalog = self.live_catalog() if model else self.catalog  # a model only a local server offers is valid
        params = validate_request(question, route=route, model=model, params=params, history=history,
                                  catalog=catalog)  # SamplingParams: answer() does not validate them again
        retriever = self.retriever(collection) if retrieval is None else None  # an unknown collection fails now
        return self._stream(question, retriever, retrieval, history, route, model, params, mode, k)

    def _stream(self, question, retriever, retrieval, history, route, model, params, mode, k) -> Iterator[Event]:
        if retrieval is None:
            retrieval = retriever.search(question, mode=mode, k=k)
            metrics.record_retrieval(retrieval.mode, retrieval.retrieval_ms)
        yield Retrieved(retrieval)
        router = self.router if route == "auto" and not model else None
        sent, parts = [], []
        events = answer(question, retrieval.hits, history=history, route=route, model=model, params=params,
                        query_vector=retrieval.query_vector, retrieval_ms=retrieval.retrieval_ms,
                        catalog=self.live_catalog(), router=router, health=self.health,
                        embedded_options=self.settings.offline_llm.model_dump())
        try:
            for ev in events:
                if isinstance(ev, Sources):
                    sent = ev.hits
                elif isinstance(ev, Token):
                    parts.append(ev.text)
                elif isinstance(ev, Done):
                    text = "".join(parts)
                    cites = parse_citations(text, sent)
                    ev.meta["citations"] = {"used": sorted(cites.used), "unknown": list(cites.unknown)}
                    ev.meta["answer"] = text
                    metrics.record_answer(ev.meta)
                yield ev
        except NoModelAvailable as e:
            metrics.record_no_answer(e.fallbacks)
            raise
        finally:
            events.close()  # a consumer that stops early (a client gone) ends the model's stream now


_ENGINES: list[Engine] = []   # the few most recently used, newest last
_ENGINES_MAX = 4
_ENGINES_LOCK = threading.Lock()


def ask(question: str, collection: str, *, settings, **kwargs) -> Iterator[Event]:
    """:meth:`Engine.ask` on an engine shared by every call with the same ``settings`` object."""
    with _ENGINES_LOCK:
        engine = next((e for e in _ENGINES if e.settings is settings), None)
        if engine is None:
            engine = Engine(settings)
        else:
            _ENGINES.remove(engine)
        _ENGINES.append(engine)
        del _ENGINES[:-_ENGINES_MAX]
    return engine.ask(question, collection=collection, **kwargs)


__all__ = ["Engine", "ask", "Retrieved", "Sources", "Token", "Done", "Event"]
