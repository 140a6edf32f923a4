"""Who is calling: ``Authorization: Bearer KEY`` checked against the state's keys, the key's scope, the user
it acts as, and the per-key limit on simultaneous generations.

    401  no key, a wrong or revoked key, a key whose user is gone, or no key exists at all (the message says
         how to create one)
    403  a right key whose scope does not allow the action (what the user may do on a collection is
         :mod:`api.rights`)
    429  a key already running ``api.max_generations_per_key`` answers (``Retry-After`` set)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from fastapi import Request

from .errors import APIError
from .keys import KeyStore, create_hint

_BEARER = "bearer "


@dataclass(frozen=True)
class Caller:
    """The key of one request and the user it acts as (both read from the state for this request)."""

    key: object   # rag.state's key record: name, scope, prefix, created_at, user
    user: object  # rag.state.User

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def scope(self) -> str:
        return self.key.scope

    def allows(self, scope: str) -> bool:
        """``read`` always; ``admin`` with an admin key whose user is still an admin or editor."""
        return self.key.allows(scope)


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, type="authentication_error", code=code,
                    headers={"WWW-Authenticate": 'Bearer realm="hybrid-rag"'})


def authenticate(request: Request, keys: KeyStore, scope: str) -> Caller:
    """The caller if its key allows ``scope``; else raise the 401/403 :class:`APIError`. The caller found by
    the guard middleware for this request (``request.state.api_key``) is used, not looked up again."""
    caller = getattr(request.state, "api_key", None) or identify(request, keys)
    if not caller.allows(scope):
        if caller.scope == scope:  # an admin key whose user has become a reader
            why = (f"The key {caller.name!r} has scope {scope!r}, but its user {caller.user.name!r} is now a "
                   f"{caller.user.role}, who only reads; ask an admin for the editor role.")
        else:
            why = f"The key {caller.name!r} has scope {caller.scope!r}; this needs an {scope!r} key."
        raise APIError(403, why, type="permission_error", code="insufficient_scope")
    return caller


def identify(request: Request, keys: KeyStore) -> Caller:
    """The caller, or the 401 :class:`APIError` (no key sent, an unknown or revoked key, a key of no user,
    no keys at all). Blocking (a state query): call it from a worker thread in async code."""
    header = request.headers.get("authorization", "")
    sent = header[len(_BEARER):].strip() if header.lower().startswith(_BEARER) else ""
    record = keys.verify(sent) if sent else None
    if record is not None and getattr(record, "user", None) is not None:
        return Caller(record, record.user)
    if keys.empty():
        raise _unauthorized(
            "This server has no API keys yet, so the API refuses every request. On the server, create one for a "
            f"user: {create_hint()}, then send it as `Authorization: Bearer KEY`.", "no_api_keys")
    if not sent:
        raise _unauthorized(f"Missing API key: send `Authorization: Bearer KEY` (keys come from {create_hint()} "
                            "on the server).", "missing_api_key")
    if record is None:
        raise _unauthorized("Invalid API key: it is unknown or was revoked. Ask the server's admin for a key "
                            f"({create_hint()}).", "invalid_api_key")
    from rag.state import AuthError

    try:
        record.require_user()  # raises, saying to re-create it with --user and revoke this one
    except AuthError as e:
        raise _unauthorized(str(e), "key_without_user") from None
    raise _unauthorized("The API key has no user.", "key_without_user")  # not reached


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


__all__ = ["Caller", "authenticate", "identify", "GenerationSlots"]
