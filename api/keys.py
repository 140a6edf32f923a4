"""API keys, as the API sees them: they live in the state database (:mod:`rag.state`) and each belongs to a
user, whose rights it carries.

A key is ``hr_`` + 43 URL-safe characters (256 random bits); the state stores only its SHA-256 and first
characters. Keys are made on the command line (``hybrid-rag keys create --name NAME --scope read|admin
--user USER``); a running server sees a key created, revoked, or its user's rights changed from the next
request, because every request asks the state again.

Scopes cap what a key may do whatever its user may: ``read`` (models, chat, search, list collections and
documents) and ``admin`` (also create and delete collections, upload, delete documents, jobs). Within the
scope, the user's rights on each collection decide (:mod:`api.rights`).

:class:`KeyStore` is the thin adapter the middleware and ``serve`` use; it keeps the earlier names
(``verify``, ``empty``, ``create``, ``revoke``, ``list``).
"""
from __future__ import annotations

SCOPES = ("read", "admin")
PREFIX = "hr_"
MAX_KEY_CHARS = 200


def create_hint(user: str = "USER") -> str:
    """The command that makes a key, as every message that asks for one spells it."""
    return f"`hybrid-rag keys create --name NAME --scope read|admin --user {user}`"


class KeyStore:
    """The keys of one state database (:func:`rag.state.open_state`)."""

    def __init__(self, state):
        self.state = state

    def verify(self, key: str):
        """The key's record (name, scope, prefix, created_at, user), or None for an unknown or revoked key."""
        if not isinstance(key, str) or not key.startswith(PREFIX) or len(key) > MAX_KEY_CHARS:
            return None
        return self.state.verify_key(key)

    def empty(self) -> bool:
        """No key exists at all (the API then refuses everything and says how to make one)."""
        return not self.state.list_keys()

    def list(self) -> list:
        return self.state.list_keys()

    def create(self, name: str, scope: str, user: str) -> str:
        """A new key for ``user`` (shown this once)."""
        return self.state.create_key(name, scope, user)

    def revoke(self, name: str) -> None:
        self.state.revoke_key(name)


__all__ = ["KeyStore", "SCOPES", "PREFIX", "create_hint"]
