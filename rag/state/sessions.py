"""Web sessions: a random token in the browser's cookie, only its SHA-256 in the database.

A session ends after ``auth.session_ttl_s`` without a request (each request slides that), at the latest
``auth.session_max_s`` after sign-in, at sign-out, when the user's password is reset, or when the user is removed.
"""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import delete, insert, or_, select, update

from . import models as m
from .errors import StateError
from .users import User, _user

MAX_TOKEN = 200


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class SessionsMixin:
    def create_session(self, user) -> str:
        """A new session for ``user`` (a :class:`User` or a name); returns the token, which is never stored."""
        user = user if isinstance(user, User) else self.require_user(user)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        ttl, max_s = self.settings_auth.session_ttl_s, self.settings_auth.session_max_s
        with self._tx(write=True) as c:
            if c.execute(select(m.users.c.id).where(m.users.c.id == user.id)).first() is None:
                raise StateError(f"No user {user.name!r} (removed meanwhile?): list users with `hybrid-rag users list`.")
            c.execute(delete(m.sessions).where(or_(m.sessions.c.last_seen < now - ttl,
                                                   m.sessions.c.created_at < now - max_s)))
            c.execute(insert(m.sessions).values(token_sha256=token_digest(token), user_id=user.id, created_at=now,
                                                last_seen=now))
        return token

    def session_user(self, token) -> User | None:
        """The user of a live session; None when the token is unknown, expired, or its user was removed."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            return None
        digest = token_digest(token)
        now = self.clock()
        ttl, max_s = self.settings_auth.session_ttl_s, self.settings_auth.session_max_s
        with self._tx() as c:
            row = c.execute(select(m.sessions.c.created_at, m.sessions.c.last_seen, m.users.c.id, m.users.c.name,
                                   m.users.c.role)
                            .join(m.users, m.users.c.id == m.sessions.c.user_id)
                            .where(m.sessions.c.token_sha256 == digest)).first()
        if row is None:
            return None
        if now - row.last_seen > ttl or now - row.created_at > max_s:
            self.end_session(token)
            return None
        if now - row.last_seen > min(60.0, ttl / 10):   # slide the idle expiry, at most one write a minute
            with self._tx(write=True) as c:
                c.execute(update(m.sessions).where(m.sessions.c.token_sha256 == digest).values(last_seen=now))
        return _user(row)

    def end_session(self, token) -> None:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            return
        with self._tx(write=True) as c:
            c.execute(delete(m.sessions).where(m.sessions.c.token_sha256 == token_digest(token)))

    def end_sessions(self, user) -> int:
        """End every session of ``user``; returns how many ended."""
        user = user if isinstance(user, User) else self.require_user(user)
        with self._tx(write=True) as c:
            return c.execute(delete(m.sessions).where(m.sessions.c.user_id == user.id)).rowcount or 0


__all__ = ["SessionsMixin", "token_digest"]
