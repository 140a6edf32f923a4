"""One path from a question to a cited answer: retrieve → route → budget → stream → citations.

The Chat tab, Compare, ``hybrid-rag ask`` and the HTTP API all call :meth:`Engine.ask` (or
``rag.ask``, the same on a shared engine)::

    engine = Engine(load_settings())
    for ev in engine.ask("How do I upload?", collection="docs"):
        if isinstance(ev, Retrieved): show_searching_done(ev.result)   # every retrieved hit, ranked
        elif isinstance(ev, Sources): show(ev.hits)                     # exactly the chunks sent, [1]..[n]
        elif isinstance(ev, Token): print(ev.text, end="")
        elif isinstance(ev, Done): show(ev.meta, ev.meta["citations"])  # route, model, timings, usage ...
        elif isinstance(ev, Verified): mark(ev.report["unsupported"], ev.report["uncited"])  # after Done

Compare retrieves once (:meth:`Engine.search`) and passes the result to several ``ask`` calls, so every
model sees the same passages. ``ask`` validates its arguments (question, route, model, sampling
parameters, history, the collection) before it returns the iterator, so callers can refuse bad input
before they start streaming.

After ``Done`` comes one :class:`Verified` (unless ``verify.enabled`` is off): each sentence of the answer
checked against the passage it cites (:func:`rag.verify.check`). It runs once the stream is over, so it never
delays a token. With ``rerank.enabled``, retrieval takes ``max(k, rerank.top_n)`` fused hits and a rerank NIM
reorders the first ``top_n`` (:class:`rag.rerank.Reranker`) before the prompt is built; any failure keeps the
fused order, with the reason in ``Done.meta["rerank"]``.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Iterator

from . import metrics, verify
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
from .rerank import Reranker
from .retrieve import RetrievalResult, Retriever
from .router import Router
from .store import open_collection

log = logging.getLogger(__name__)


@dataclass
class Retrieved:
    """Retrieval is done: ``result.hits`` are every hit, best first (the prompt may take fewer)."""

    result: RetrievalResult


@dataclass
class Verified:
    """After ``Done``: the citation check of the answer (:func:`rag.verify.check`'s report, or
    :func:`rag.verify.skipped`'s when it could not run); also put in ``Done.meta["verification"]``."""

    report: dict


Event = Retrieved | Sources | Token | Done | Verified


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
        return self.search_reranked(collection, query, mode=mode, k=k)[0]

    def search_reranked(self, collection: str, query: str, *, mode: str | None = None,
                        k: int | None = None) -> tuple[RetrievalResult, dict | None]:
        """:meth:`search` and what the rerank stage did: None when ``rerank.enabled`` is off, else
        {model, where, reranked, ms, applied, reason, failure} (:meth:`rag.rerank.Reranker.rerank`)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("The query is empty: type something to search for.")
        return self._retrieve(self.retriever(collection), query, mode, k)

    def _retrieve(self, retriever: Retriever, query: str, mode, k) -> tuple[RetrievalResult, dict | None]:
        """Retrieval, then the rerank stage when it is on: (result, rerank info or None)."""
        rr = self.settings.rerank
        if not rr.enabled:
            result = retriever.search(query, mode=mode, k=k)
            metrics.record_retrieval(result.mode, result.retrieval_ms)
            return result, None
        want = self.settings.retrieval.k if k is None else int(k)
        if not 1 <= want <= 1000:
            raise InvalidInput(f"k must be between 1 and 1000, got {want}.")
        result = retriever.search(query, mode=mode, k=max(want, rr.top_n))
        hits, info = Reranker.from_settings(self.settings).rerank(query, result.hits, k=want)
        if info["reason"]:
            metrics.FALLBACKS.labels("rerank", info["failure"] or "error").inc()
        result = dataclasses.replace(result, hits=hits, retrieval_ms=result.retrieval_ms + info["ms"],
                                     timings={**result.timings, "rerank_ms": info["ms"]})
        metrics.record_retrieval(result.mode, result.retrieval_ms)
        return result, info

    # -- the one question-to-answer path -------------------------------------------------------------
    def ask(self, question: str, *, collection: str | None = None, retrieval: RetrievalResult | None = None,
            history: list[dict] | None = None, route: str = "auto", model: str | None = None,
            params: dict | None = None, mode: str | None = None, k: int | None = None) -> Iterator[Event]:
        """Answer ``question`` from ``collection`` (or from an earlier ``retrieval``), streaming events.

        ``route``: auto | speed | quality | openusd; ``model``: a catalog id or alias (overrides the route);
        ``params``: sampling overrides (temperature, top_p, max_tokens, stop, seed, ...); ``mode``/``k``:
        retrieval mode and chunks (settings by default). ``Done.meta`` is :func:`rag.answer.answer`'s plus
        ``citations`` ({used: [n], unknown: [n]}), ``answer`` (the whole text), ``rerank`` (None when the stage
        is off, else {model, where, reranked, ms, applied, reason}) and, once :class:`Verified` comes after
        ``Done``, ``verification`` (its report).
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
            retrieval, rerank = self._retrieve(retriever, question, mode, k)
        else:  # reranked (or not) by the search that made it
            rerank = _rerank_of(retrieval.hits) if self.settings.rerank.enabled else None
        yield Retrieved(retrieval)
        router = self.router if route == "auto" and not model else None
        if router is not None and retrieval.query_vector is None:  # sparse-only search did not embed the query
            retrieval = dataclasses.replace(retrieval, query_vector=self.embedder.encode_queries([question])[0])
        sent, parts, done = [], [], None
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
                    ev.meta["rerank"] = rerank
                    metrics.record_answer(ev.meta)
                    done = ev
                yield ev
        except NoModelAvailable as e:
            metrics.record_no_answer(e.fallbacks)
            raise
        finally:
            events.close()  # a consumer that stops early (a client gone) ends the model's stream now
        if done is not None and self.settings.verify.enabled:   # after the stream: it never delays a token
            done.meta["verification"] = report = self.verify(done.meta["answer"], sent)
            yield Verified(report)

    def verify(self, text: str, hits) -> dict:
        """:func:`rag.verify.check` of an answer with the app's embedder and ``verify.threshold``; never raises."""
        threshold = self.settings.verify.threshold
        if not text.strip():
            return verify.skipped("the answer is empty", threshold)
        if not hits:
            return verify.skipped("no passages were sent to the model", threshold)
        try:
            return verify.check(text, hits, self.embedder, threshold)
        except Exception as e:  # the embedder failed (a hosted one unreachable, say): the answer stands unchecked
            log.warning("citation check failed: %s: %s", type(e).__name__, e)
            return verify.skipped(f"the check failed ({type(e).__name__})", threshold)


def _rerank_of(hits) -> dict:
    """The rerank info of hits an earlier :meth:`Engine.search` returned (what the hits themselves show)."""
    n = sum(h.rerank_rank is not None for h in hits)
    return {"applied": n > 0, "reranked": n, "reason": None if n else "not reranked by the search these hits came from"}


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


__all__ = ["Engine", "ask", "Retrieved", "Sources", "Token", "Done", "Verified", "Event"]
