"""The optional rerank stage: a rerank NIM reorders the fused top-N hits before the prompt is built.

NVIDIA's rerank NIM (``NVIDIARerank`` from langchain-nvidia-ai-endpoints; ``POST {base_url}/ranking`` with
``{"model", "query": {"text"}, "passages": [{"text"}]}``, answered with ``{"rankings": [{"index", "logit"}]}``)
scores each of the first ``rerank.top_n`` fused hits against the query. Hosted (NVIDIA's API catalog, needs the
key in ``rerank.api_key_env``) or local (``rerank.base_url``, e.g. ``http://localhost:8000/v1``). Off unless
``rerank.enabled``.

:meth:`Reranker.rerank` never raises: on any failure (no key, unreachable, HTTP error, ``rerank.timeout_s``
passed, a response that does not rank every passage exactly once) the hits keep the fused order and the
returned info says why. Reranked hits get ``rerank_score`` (the NIM's logit) and ``rerank_rank`` (1-based);
``score`` and the fused, dense and sparse ranks stay as retrieval set them.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

from .types import Hit

log = logging.getLogger(__name__)


class RerankFailed(Exception):
    """Why a rerank call gave no usable order (the message is shown in the answer's metadata); ``kind`` is its
    class for the fallbacks metric: key_missing, down, timeout, auth, rate_limited, error."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


def not_configured(settings, environ=None) -> str | None:
    """Why no rerank endpoint is configured (``settings``: the ``rerank`` settings), with what to set; None when
    ``rerank.base_url`` names a local NIM or the hosted key is set. Whether one answers is found out per call."""
    environ = os.environ if environ is None else environ
    if settings.base_url or environ.get(settings.api_key_env):
        return None
    return (f"no rerank endpoint is configured: set rerank.base_url to a local rerank NIM (e.g. "
            f"http://localhost:8000/v1), or set {settings.api_key_env} for NVIDIA's hosted rerank API")


class Reranker:
    """Built from the ``rerank`` settings (and ``models.telemetry``); thread-safe, one client per call."""

    def __init__(self, settings, *, telemetry: bool = False, environ=None):
        self.settings = settings
        self.telemetry = telemetry
        self.environ = os.environ if environ is None else environ

    @classmethod
    def from_settings(cls, settings) -> "Reranker":
        return cls(settings.rerank, telemetry=settings.models.telemetry)

    @property
    def where(self) -> str:
        return "local" if self.settings.base_url else "hosted"

    def _client(self, n: int):
        from langchain_nvidia_ai_endpoints import NVIDIARerank

        from .llm.health import timeout_session

        s = self.settings
        key = self.environ.get(s.api_key_env) or None
        if not s.base_url and not key:
            raise RerankFailed(f"{s.api_key_env} is not set: set it for NVIDIA's hosted rerank API, or point "
                               "rerank.base_url at a local rerank NIM", "key_missing")
        kwargs = {"base_url": s.base_url} if s.base_url else {}
        client = NVIDIARerank(model=s.model, api_key=key or "no-key", top_n=n, truncate="END",
                              usage_telemetry_enabled=self.telemetry, **kwargs)
        base = client._client.base_url
        client._client.get_session_fn = lambda: timeout_session((s.timeout_s, s.timeout_s), base)
        return client

    def _order(self, query: str, hits: list[Hit]) -> list[tuple[int, float]]:
        """[(index into hits, logit)], best first, or :class:`RerankFailed`."""
        import requests
        from langchain_core.documents import Document

        client = self._client(len(hits))
        docs = [Document(page_content=h.chunk.text or "", metadata={"i": i}) for i, h in enumerate(hits)]
        try:
            ranked = client.compress_documents(docs, query)
        except requests.exceptions.Timeout:
            raise RerankFailed(f"no answer within {self.settings.timeout_s:g} s (rerank.timeout_s)", "timeout") from None
        except requests.exceptions.ConnectionError as e:
            raise RerankFailed(f"not reachable ({type(e).__name__})", "down") from None
        except (KeyError, TypeError, ValueError, AssertionError) as e:   # pydantic and JSON errors are ValueErrors
            raise RerankFailed(f"the response was not a ranking ({type(e).__name__})") from None
        except Exception as e:  # the library raises a plain Exception for HTTP errors
            resp = getattr(client._client, "last_response", None)
            status = getattr(resp, "status_code", None)
            log.info("rerank failed: %s", str(e)[:300])
            kind = {401: "auth", 403: "auth", 429: "rate_limited"}.get(status, "error")
            raise RerankFailed(f"HTTP {status}" if status and status >= 400 else
                               f"the request failed ({type(e).__name__})", kind) from None
        order = [(d.metadata["i"], float(d.metadata["relevance_score"])) for d in ranked]
        if sorted(i for i, _ in order) != list(range(len(hits))):
            raise RerankFailed(f"the response ranked {len(order)} passages of {len(hits)}, not each once")
        return sorted(order, key=lambda o: -o[1])

    def rerank(self, query: str, hits: list[Hit], k: int | None = None) -> tuple[list[Hit], dict]:
        """The first ``top_n`` of ``hits`` in the reranker's order, then the rest in fused order, cut to ``k``;
        and the info for the metadata: {model, where (local | hosted), reranked (passages sent), ms, applied,
        reason (why not, or None), failure (its class, see :class:`RerankFailed`)}."""
        k = len(hits) if k is None else k
        top, rest = hits[: self.settings.top_n], hits[self.settings.top_n:]
        info = {"model": self.settings.model, "where": self.where, "reranked": len(top), "ms": 0.0,
                "applied": False, "reason": None, "failure": None}
        if not top:
            info["reason"] = "no hits to rerank"
            return hits[:k], info
        t0 = time.perf_counter()
        try:
            order = self._order(query, top)
        except RerankFailed as e:
            info["reason"], info["failure"] = f"rerank skipped, fused order kept: {e}", e.kind
            info["ms"] = round((time.perf_counter() - t0) * 1000, 2)
            return hits[:k], info
        except Exception as e:  # anything else in the client: the answer goes on in fused order
            log.exception("rerank failed")
            info["reason"] = f"rerank skipped, fused order kept: an internal error ({type(e).__name__})"
            info["failure"] = "error"
            info["ms"] = round((time.perf_counter() - t0) * 1000, 2)
            return hits[:k], info
        info["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        info["applied"] = True
        ranked = [dataclasses.replace(top[i], rerank_score=round(score, 4), rerank_rank=r)
                  for r, (i, score) in enumerate(order, 1)]
        return (ranked + rest)[:k], info


__all__ = ["Reranker", "RerankFailed", "not_configured"]
