"""Who is calling: ``Authorization: Bearer KEY`` checked against the key store, scopes, and the per-key
limit on simultaneous generations.

    401  no key, a wrong key, or no key exists at all (the message says how to create one)
    403  a right key whose scope does not allow the action
    429  a key already running ``api.max_generations_per_key`` answers (``Retry-After`` set)
"""
from __future__ import annotations

import threading

from fastapi import Request

from .errors import APIError
from .keys import ApiKey, KeyStore

_BEARER = "bearer "


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, type="authentication_error", code=code,
                    headers={"WWW-Authenticate": 'Bearer realm="hybrid-rag"'})


def authenticate(request: Request, keys: KeyStore, scope: str) -> ApiKey:
    """The caller's key if it allows ``scope``; else raise the 401/403 :class:`APIError`. The key found by
    the guard middleware for this request (``request.state.api_key``) is used, not looked up again."""
    key = getattr(request.state, "api_key", None) or identify(request, keys)
    if not key.allows(scope):
        raise APIError(403, f"The key {key.name!r} has scope {key.scope!r}; this needs an {scope!r} key.",
                       type="permission_error", code="insufficient_scope")
    return key


def identify(request: Request, keys: KeyStore) -> ApiKey:
    """The caller's key, or the 401 :class:`APIError` (no keys at all, no key sent, an unknown key)."""
    if keys.empty():
        raise _unauthorized(
            "This server has no API keys yet, so the API refuses every request. On the server, create one: "
            "`hybrid-rag keys create --name NAME --scope read` (or --scope admin), then send it as "
            "`Authorization: Bearer KEY`.", "no_api_keys")
    header = request.headers.get("authorization", "")
    if not header.lower().startswith(_BEARER) or not header[len(_BEARER):].strip():
        raise _unauthorized("Missing API key: send `Authorization: Bearer KEY` (keys come from "
                            "`hybrid-rag keys create` on the server).", "missing_api_key")
    key = keys.verify(header[len(_BEARER):].strip())
    if key is None:
        raise _unauthorized("Invalid API key: it is unknown or was revoked. Ask the server's admin for a key "
                            "(`hybrid-rag keys create`).", "invalid_api_key")
    return key


class GenerationSlots:
    """At most ``limit`` simultaneous generations per key name."""

    def __init__(self, limit: int, retry_after_s: int):
        self.limit, self.retry_after_s = limit, retry_after_s
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, name: str) -> None:
        """Take a slot or raise the 429."""
        with self._lock:
            n = self._busy.get(name, 0)
            if n >= self.limit:
                raise APIError(429, f"The key {name!r} already has {n} answers in progress (the limit is "
                                    f"{self.limit}, api.max_generations_per_key); retry after "
                                    f"{self.retry_after_s} s.", type="rate_limit_error",
                               code="too_many_concurrent_requests",
                               headers={"Retry-After": str(self.retry_after_s)})
            self._busy[name] = n + 1

    def release(self, name: str) -> None:
        with self._lock:
            n = self._busy.get(name, 0) - 1
            if n > 0:
                self._busy[name] = n
            else:
                self._busy.pop(name, None)

    def busy(self, name: str) -> int:
        with self._lock:
            return self._busy.get(name, 0)


__all__ = ["authenticate", "identify", "GenerationSlots"]
