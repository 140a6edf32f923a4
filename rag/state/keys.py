"""API keys for the HTTP API: each belongs to a user and acts with that user's rights.

A key is ``hr_`` + 43 URL-safe characters (256 random bits); only its SHA-256 and first characters are stored.
Scopes: ``read`` (read what the user may read) and ``admin`` (also the changes the user may make); ``admin`` is
only given to admins and editors, and a key's admin scope lapses at once when its user becomes a reader.
Keys from the old ``api_keys.json`` are imported once without a user and refused with a message that says
how to re-create them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from . import models as m
from .errors import AuthError, StateError
from .users import User

log = logging.getLogger(__name__)

SCOPES = ("read", "admin")
PREFIX = "hr_"
LEGACY_FILE = "api_keys.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ApiKeyRecord:
    name: str
    scope: str
    prefix: str
    created_at: float
    user: User | None

    def allows(self, scope: str) -> bool:
        """Whether this key may act at ``scope`` ("read" or "admin"): admin needs an admin key whose user is still
        an admin or editor. Rights on each collection are checked apart, as the user's."""
        if self.user is None:
            return False
        return scope == "read" or (self.scope == "admin" and self.user.is_editor)

    def require_user(self) -> User:
        """The key's user; :class:`AuthError` for a key imported from before accounts existed."""
        if self.user is None:
            raise AuthError(f"The API key {self.name!r} belongs to no user (it was made before accounts existed): "
                            f"create a new one with `hybrid-rag keys create --name NAME --scope {self.scope} --user "
                            f"USER` and revoke this one (`hybrid-rag keys revoke {self.name}`).")
        return self.user

    def public(self) -> dict:
        return {"name": self.name, "scope": self.scope, "prefix": self.prefix + "…", "created_at": self.created_at,
                "user": self.user.name if self.user else None}


class KeysMixin:
    def create_key(self, name, scope, user_name) -> str:
        """Create a key acting as ``user_name``; returns it (the only time it is ever shown)."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise StateError(f"Invalid key name {repr(name)[:80]}: use 1-64 letters, digits, '_', '-', '.' or '@', "
                             "starting with a letter or digit.")
        if scope not in SCOPES:
            raise StateError(f"Unknown scope {str(scope)[:40]!r}: use read or admin.")
        user = self.require_user(user_name)
        if scope == "admin" and not user.is_editor:
            raise StateError(f"An admin key needs an admin or editor, and {user.name!r} is a reader: make a read key, "
                             f"or change the role first (`hybrid-rag users set-role {user.name} editor`).")
        key = PREFIX + secrets.token_urlsafe(32)
        exists = StateError(f"A key named {name!r} exists already: revoke it first (`hybrid-rag keys revoke {name}`) "
                            "or pick another name.")
        try:
            with self._tx(write=True) as c:
                if c.execute(select(m.api_keys.c.id).where(m.api_keys.c.name == name)).first() is not None:
                    raise exists
                c.execute(insert(m.api_keys).values(name=name, scope=scope, sha256=key_digest(key), prefix=key[:7],
                                                    created_at=round(self.clock(), 3), user_id=user.id))
        except IntegrityError:   # made by another process meanwhile
            raise exists from None
        return key

    def verify_key(self, key) -> ApiKeyRecord | None:
        """The key's record (with its user as of now), or None for an unknown or revoked key."""
        if not isinstance(key, str) or not key.startswith(PREFIX) or len(key) > 200:
            return None
        with self._tx() as c:
            row = c.execute(self._key_query().where(m.api_keys.c.sha256 == key_digest(key))).first()
        return None if row is None else _record(row)

    def list_keys(self) -> list[ApiKeyRecord]:
        with self._tx() as c:
            return [_record(r) for r in c.execute(self._key_query().order_by(m.api_keys.c.name))]

    def revoke_key(self, name) -> ApiKeyRecord:
        """Delete a key by name; a running server refuses it from its next request."""
        with self._tx(write=True) as c:
            row = c.execute(self._key_query().where(m.api_keys.c.name == str(name))).first()
            if row is None:
                known = ", ".join(r.name for r in c.execute(select(m.api_keys.c.name).order_by(m.api_keys.c.name)))
                raise StateError(f"No key named {str(name)[:64]!r} (keys: {known or 'none'}); list them with "
                                 "`hybrid-rag keys list`.")
            c.execute(delete(m.api_keys).where(m.api_keys.c.name == str(name)))
        return _record(row)

    def _key_query(self):
        return (select(m.api_keys.c.name, m.api_keys.c.scope, m.api_keys.c.prefix, m.api_keys.c.created_at,
                       m.users.c.id, m.users.c.name.label("user_name"), m.users.c.role)
                .select_from(m.api_keys.outerjoin(m.users, m.users.c.id == m.api_keys.c.user_id)))

    def _import_legacy_keys(self, data_dir) -> int:
        """Import ``<data_dir>/api_keys.json`` once (then renamed ``api_keys.json.imported``); its keys have no user."""
        path = Path(data_dir) / LEGACY_FILE
        if not path.is_file():
            return 0
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            keys = [k for k in raw.get("keys", []) if isinstance(k, dict)]
        except (OSError, ValueError, AttributeError) as e:
            log.warning("the old API key file %s cannot be read (%s); its keys are not imported", path, e)
            return 0
        n = 0
        marker = f"imported:api_keys:{path.resolve()}"
        with self._tx(write=True) as c:
            if c.execute(select(m.meta_kv.c.key).where(m.meta_kv.c.key == marker)).first() is not None:
                keys = []
            else:
                c.execute(insert(m.meta_kv).values(key=marker, value=str(len(keys))))
            have = {(r.name, r.sha256) for r in c.execute(select(m.api_keys.c.name, m.api_keys.c.sha256))}
            names, hashes = {h[0] for h in have}, {h[1] for h in have}
            for k in keys:
                name, digest = str(k.get("name", ""))[:64], str(k.get("sha256", ""))
                if not name or len(digest) != 64 or name in names or digest in hashes:
                    continue
                c.execute(insert(m.api_keys).values(
                    name=name, scope=k.get("scope") if k.get("scope") in SCOPES else "read", sha256=digest,
                    prefix=str(k.get("prefix", ""))[:16], created_at=float(k.get("created_at") or 0), user_id=None))
                names.add(name)
                hashes.add(digest)
                n += 1
        try:
            path.rename(path.with_name(LEGACY_FILE + ".imported"))
        except FileNotFoundError:   # renamed by another process
            pass
        self.audit("system", "key.import", detail=f"{n} keys from {path} (no user: refused until re-created)")
        log.warning("imported %d API keys from %s; they have no user and are refused until re-created with --user",
                    n, path)
        return n


def _record(row) -> ApiKeyRecord:
    user = User(int(row.id), row.user_name, row.role) if row.id is not None else None
    return ApiKeyRecord(row.name, row.scope, row.prefix, float(row.created_at), user)


__all__ = ["KeysMixin", "ApiKeyRecord", "SCOPES", "key_digest"]
