"""Accounts: names, roles, argon2 password hashes, sign-in with throttling, the first admin.

Roles: ``admin`` (everything, user management), ``editor`` (manages the collections given to them, creates
collections), ``reader`` (reads the collections given to them, and public ones).

Wrong passwords are throttled per account and per client address (5 failures within 60 s lock that account,
or that address, for 30 s). The counts live in the database, so every app process and the command line share
them; the client address comes from :func:`rag.state.clients.client_address`, which believes
``X-Forwarded-For`` only from ``auth.trusted_proxies``.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import models as m
from .errors import AuthError, StateError

log = logging.getLogger(__name__)

ROLES = ("admin", "editor", "reader")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_FAILURES = 5        # failed sign-ins within FAILURE_WINDOW_S ...
FAILURE_WINDOW_S = 60.0
LOCKOUT_S = 30.0        # ... lock that account (or that client address) for this long
NAME_RULE = "use 1-64 letters, digits, '_', '-', '.' or '@', starting with a letter or digit"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

_HASHER = PasswordHasher()   # argon2id with the library's recommended parameters
_DUMMY_HASH: list[str] = []  # verified against when the account does not exist, so timing does not tell


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_editor(self) -> bool:
        """Admin or editor: may create collections and hold editor rights."""
        return self.role in ("admin", "editor")


def validate_user_name(name) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        shown = repr(name)[:80]
        raise StateError(f"Invalid user name {shown}: {NAME_RULE}.")
    return name


def validate_role(role) -> str:
    if role not in ROLES:
        raise StateError(f"Unknown role {str(role)[:40]!r}: use admin, editor or reader.")
    return role


def validate_password(password) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise StateError(f"The password is too short: use at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise StateError(f"The password is too long: use at most {MAX_PASSWORD} characters.")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise StateError("The password contains control characters (a newline or tab, say): type it again "
                         "without them.")
    return password


def _user(row) -> User | None:
    return None if row is None else User(int(row.id), row.name, row.role)


def _dummy_hash() -> str:
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(_HASHER.hash("not a password: timing filler"))
    return _DUMMY_HASH[0]


class UsersMixin:
    """User accounts and sign-in; part of :class:`rag.state.State`."""

    # -- reading -------------------------------------------------------------------------------------------
    def get_user(self, name) -> User | None:
        """The user named ``name`` (case-insensitive), or None."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            return None
        with self._tx() as c:
            return _user(c.execute(select(m.users).where(m.users.c.name_key == name.lower())).first())

    def user_by_id(self, user_id) -> User | None:
        try:
            user_id = int(user_id)
        except (TypeError, ValueError):
            return None
        with self._tx() as c:
            return _user(c.execute(select(m.users).where(m.users.c.id == user_id)).first())

    def list_users(self) -> list[User]:
        with self._tx() as c:
            return [_user(r) for r in c.execute(select(m.users).order_by(m.users.c.name_key))]

    def has_admin(self) -> bool:
        with self._tx() as c:
            return c.execute(select(m.users.c.id).where(m.users.c.role == "admin").limit(1)).first() is not None

    def require_user(self, name) -> User:
        """The user named ``name``, or :class:`StateError` saying how to list users."""
        user = self.get_user(name)
        if user is None:
            raise StateError(f"No user {str(name)[:64]!r}: list users with `hybrid-rag users list` (or the Admin "
                             "tab).")
        return user

    # -- changing ------------------------------------------------------------------------------------------
    def add_user(self, name, password, role="reader") -> User:
        """Create an account; the password is stored only as an argon2 hash."""
        validate_user_name(name)
        validate_role(role)
        digest = _HASHER.hash(validate_password(password))
        return self._insert_user(name, role, digest)

    def _insert_user(self, name: str, role: str, digest: str | None) -> User:
        now = self.clock()
        exists = StateError(f"A user named {name!r} exists already: pick another name, or change theirs with "
                            f"`hybrid-rag users set-role {name} ROLE` / `users reset-password {name}`.")
        try:
            with self._tx(write=True) as c:
                if c.execute(select(m.users.c.name).where(m.users.c.name_key == name.lower())).first() is not None:
                    raise exists
                uid = c.execute(insert(m.users).values(name=name, name_key=name.lower(), role=role,
                                                       password_hash=digest, created_at=now,
                                                       updated_at=now)).inserted_primary_key[0]
        except IntegrityError:   # added by another process at the same moment
            raise exists from None
        return User(int(uid), name, role)

    def _admin_count(self, c) -> int:
        ids = c.execute(select(m.users.c.id).where(m.users.c.role == "admin").with_for_update()).all()
        return len(ids)

    def set_role(self, name, role) -> User:
        """Change a user's role; refuses to demote the last admin."""
        validate_role(role)
        user = self.require_user(name)
        with self._tx(write=True) as c:
            if user.role == "admin" and role != "admin" and self._admin_count(c) <= 1:
                raise StateError(f"{user.name!r} is the last admin: make another user admin first "
                                 "(`hybrid-rag users set-role NAME admin`), then change this one.")
            c.execute(update(m.users).where(m.users.c.id == user.id).values(role=role, updated_at=self.clock()))
        return User(user.id, user.name, role)

    def reset_password(self, name, password) -> None:
        """Set a new password; every session of that user ends (their API keys stay)."""
        user = self.require_user(name)
        digest = _HASHER.hash(validate_password(password))
        with self._tx(write=True) as c:
            c.execute(update(m.users).where(m.users.c.id == user.id).values(password_hash=digest,
                                                                            updated_at=self.clock()))
            c.execute(delete(m.sessions).where(m.sessions.c.user_id == user.id))
            c.execute(delete(m.throttle).where(m.throttle.c.subject == _account(user.name)))

    def remove_user(self, name) -> None:
        """Delete an account: its sessions, API keys, rights and conversations go; collections it owned lose
        their owner (admins keep them); its votes and audit entries stay under its name. Refuses the last admin."""
        user = self.require_user(name)
        with self._tx(write=True) as c:
            if user.role == "admin" and self._admin_count(c) <= 1:
                raise StateError(f"{user.name!r} is the last admin and cannot be removed: make another user admin "
                                 "first (`hybrid-rag users set-role NAME admin`).")
            conv_ids = select(m.conversations.c.id).where(m.conversations.c.user_id == user.id)
            c.execute(delete(m.messages).where(m.messages.c.conversation_id.in_(conv_ids)))
            c.execute(delete(m.conversations).where(m.conversations.c.user_id == user.id))
            c.execute(delete(m.sessions).where(m.sessions.c.user_id == user.id))
            c.execute(delete(m.api_keys).where(m.api_keys.c.user_id == user.id))
            c.execute(delete(m.grants).where(m.grants.c.user_id == user.id))
            c.execute(update(m.collections).where(m.collections.c.owner_id == user.id).values(owner_id=None))
            c.execute(delete(m.users).where(m.users.c.id == user.id))

    def ensure_first_admin(self, environ=None) -> User | None:
        """With no admin yet and the first admin's password in the environment (``admin.password_env``,
        ``HYBRID_RAG_ADMIN_PASSWORD`` by default; else ``admin.password`` in the settings), create the admin
        ``admin.username`` (``admin``) with it, or make an existing user of that name admin with that password.
        Returns the admin made, or None (an admin exists, or no password is given)."""
        import os

        environ = os.environ if environ is None else environ
        if self.has_admin():
            return None
        admin = self.settings_admin
        password = environ.get(admin.password_env) if admin.password_env else None
        source = admin.password_env
        if not password and getattr(admin, "password", None):   # the settings file's admin.password, if set
            password, source = admin.password, "admin.password"
        if not password:
            return None
        name = admin.username
        try:
            validate_password(password)
        except StateError as e:
            raise StateError(f"{source}: {e}") from None
        if self.get_user(name) is None:
            user = self.add_user(name, password, "admin")
        else:
            self.reset_password(name, password)
            user = self.set_role(name, "admin")
        self.audit("system", "user.first_admin", detail=f"{user.name} made admin from {source}")
        log.warning("created the first admin %r from %s", user.name, source)
        return user

    def sso_user(self, name) -> User:
        """The user a trusted proxy's single sign-on header names; first seen: created with ``auth.sso_role``
        and no password (such a user signs in only through the proxy)."""
        user = self.get_user(name)
        if user is not None:
            return user
        validate_user_name(name)
        role = validate_role(self.settings_auth.sso_role)
        try:
            user = self._insert_user(name, role, None)
        except StateError:   # made by another request meanwhile
            return self.require_user(name)
        self.audit("sso", "user.add", detail=f"{name} ({role}) first seen through single sign-on")
        return user

    # -- signing in ----------------------------------------------------------------------------------------
    def authenticate(self, name, password, client: str = "-") -> User:
        """The user, when ``password`` is theirs; else :class:`AuthError`. Throttled per account and per client."""
        now = self.clock()
        client = str(client or "-")[:256]
        valid_name = isinstance(name, str) and _NAME_RE.fullmatch(name) is not None
        subjects = [_client(client)] + ([_account(name)] if valid_name else [])
        with self._tx() as c:
            locks = {r.subject: r.locked_until for r in c.execute(
                select(m.throttle.c.subject, m.throttle.c.locked_until).where(m.throttle.c.subject.in_(subjects)))}
            row = c.execute(select(m.users).where(m.users.c.name_key == name.lower())).first() if valid_name else None
        for subject in subjects:
            if locks.get(subject, 0) > now:
                what = "from your address" if subject.startswith("client:") else "for this account"
                raise AuthError(f"Too many failed sign-ins {what}: try again in {locks[subject] - now:.0f} s.")
        digest = row.password_hash if row is not None and row.password_hash else _dummy_hash()
        ok = False
        try:
            ok = isinstance(password, str) and 0 < len(password) <= MAX_PASSWORD and _HASHER.verify(digest, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        ok = ok and row is not None and bool(row.password_hash)
        if not ok:
            self._fail(subjects, now)
            raise AuthError("Wrong user name or password.")
        with self._tx(write=True) as c:
            c.execute(delete(m.throttle).where(m.throttle.c.subject == _account(name)))
            if _HASHER.check_needs_rehash(row.password_hash):
                c.execute(update(m.users).where(m.users.c.id == row.id).values(
                    password_hash=_HASHER.hash(password)))
        return _user(row)

    def _fail(self, subjects: list[str], now: float) -> None:
        for attempt in range(3):
            try:
                return self._count_failure(subjects, now)
            except IntegrityError:   # another process counted the first failure of a subject at the same moment
                if attempt == 2:
                    raise

    def _count_failure(self, subjects: list[str], now: float) -> None:
        with self._tx(write=True) as c:
            c.execute(delete(m.throttle).where(m.throttle.c.locked_until < now,
                                               m.throttle.c.window_start < now - FAILURE_WINDOW_S))
            for subject in subjects:
                r = c.execute(select(m.throttle).where(m.throttle.c.subject == subject).with_for_update()).first()
                if r is None:
                    c.execute(insert(m.throttle).values(subject=subject, window_start=now, failures=1, locked_until=0.0))
                    continue
                start, failures = (r.window_start, r.failures + 1) if now - r.window_start <= FAILURE_WINDOW_S \
                    else (now, 1)
                locked = r.locked_until
                if failures >= MAX_FAILURES:
                    locked, failures, start = now + LOCKOUT_S, 0, now
                    log.warning("sign-in: %d failures within %.0f s for %s; locked for %.0f s", MAX_FAILURES,
                                FAILURE_WINDOW_S, subject, LOCKOUT_S)
                c.execute(update(m.throttle).where(m.throttle.c.subject == subject).values(
                    window_start=start, failures=failures, locked_until=locked))

    def reset_throttle(self) -> None:
        """Forget every failed sign-in (tests; an admin after a lock-out storm)."""
        with self._tx(write=True) as c:
            c.execute(delete(m.throttle))

    def count_users(self) -> int:
        with self._tx() as c:
            return int(c.execute(select(func.count()).select_from(m.users)).scalar_one())


def _account(name: str) -> str:
    return "user:" + name.lower()


def _client(client: str) -> str:
    return "client:" + client


__all__ = ["User", "ROLES", "UsersMixin", "validate_user_name", "validate_role", "validate_password"]
