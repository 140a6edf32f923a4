"""Endpoint health: a per-endpoint cache with a TTL, and the probe of local endpoints.

Local NIM endpoints are probed with ``GET {base_url}/models`` only when an answer needs them, and the
result is cached for the catalog's ``health.ttl_s``; any endpoint whose call fails is marked down for
the same time. Also home of :func:`timeout_session`, the ``requests`` session every HTTP call here
uses (fixed connect/read timeouts, no proxies for loopback).
"""
from __future__ import annotations

import threading
import time
from urllib.parse import urlparse

from ..catalog import Catalog, EndpointSpec


class HealthCache:
    """Per-endpoint health with a TTL: local endpoints are probed, every endpoint is marked down on failure.

    Thread-safe. :class:`rag.engine.Engine` keeps one, with the catalog's ``health.ttl_s``; :data:`HEALTH`
    (the default TTL) serves callers that pass none.
    """

    def __init__(self, ttl_s: float = 30.0, clock=time.monotonic):
        self.ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[bool, str, float, frozenset]] = {}

    @staticmethod
    def _key(ep: EndpointSpec, base_url: str | None, model: str | None = None) -> str:
        return f"{ep.name}|{base_url}|{model or ''}"

    def get(self, ep: EndpointSpec, base_url: str | None, model: str | None = None):
        """(ok, reason, served model ids) if known and fresh, else None.

        ``model=None`` is the endpoint as a whole (probe, connection failures); with a model name, the
        state of that model on the endpoint (HTTP errors are per model: hosted models fail separately).
        """
        with self._lock:
            v = self._state.get(self._key(ep, base_url, model))
        if v and self._clock() - v[2] < self.ttl_s:
            return v[0], v[1], v[3]
        return None

    def set(self, ep: EndpointSpec, base_url: str | None, ok: bool, reason: str = "",
            models: frozenset = frozenset(), model: str | None = None) -> None:
        with self._lock:
            self._state[self._key(ep, base_url, model)] = (ok, reason, self._clock(), models)

    def clear(self) -> None:
        with self._lock:
            self._state.clear()


HEALTH = HealthCache()


def _loopback(url: str | None) -> bool:
    host = urlparse(url or "").hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def timeout_session(timeout: tuple[float, float], base_url: str | None):
    """A requests session that applies (connect, read) timeouts to every call; no proxies for loopback."""
    import requests

    class _TimeoutSession(requests.Session):
        def request(self, method, url, **kwargs):  # noqa: D401
            kwargs["timeout"] = timeout
            return super().request(method, url, **kwargs)

    s = _TimeoutSession()
    if _loopback(base_url):
        s.trust_env = False
    return s


def probe(ep: EndpointSpec, catalog: Catalog, health: HealthCache = HEALTH) -> tuple[bool, str, frozenset]:
    """Is a local endpoint up? ``GET {base_url}/models``, cached for the catalog's health TTL.

    Hosted and other remote endpoints are not probed (that would cost a round trip per answer); they
    count as up until a call fails, which marks them down for the TTL.
    """
    base_url = ep.resolved_base_url(catalog.environ)
    cached = health.get(ep, base_url)
    if cached is not None:
        return cached
    if ep.kind != "local_nim":
        return True, "", frozenset()
    import requests

    t = catalog.spec.health.probe_timeout_s
    try:
        with timeout_session((t, t), base_url) as s:
            r = s.get(f"{base_url}/models", headers={"Accept": "application/json"})
        if r.status_code != 200:
            ok, why, models = False, f"GET /models answered HTTP {r.status_code}", frozenset()
        else:
            models = frozenset(str(m.get("id")) for m in (r.json().get("data") or []) if isinstance(m, dict))
            ok, why = True, ""
    except (requests.RequestException, ValueError) as e:
        ok, why, models = False, f"not reachable at {base_url} ({type(e).__name__})", frozenset()
    health.set(ep, base_url, ok, why, models)
    return ok, why, models


__all__ = ["HealthCache", "HEALTH", "probe", "timeout_session"]
