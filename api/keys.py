"""API keys: created on the command line, stored hashed in the data directory, checked per request.

    <data_dir>/api_keys.json   {"version": 1, "keys": [{name, scope, sha256, prefix, created_at}]}

A key is ``hr_`` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored (a key that
random needs no slow hash) and the first characters, so that ``keys list`` can tell keys apart. The
file is written atomically with mode 0600; a server notices changes (a key created or revoked from the
command line) on the next request, without a restart.

Scopes: ``read`` (models, chat, search, list collections and documents) and ``admin`` (also create and
delete collections, upload, delete documents, jobs).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rag.errors import HybridRagError, InvalidInput, StoredDataError

FORMAT = 1
FILE_NAME = "api_keys.json"
SCOPES = ("read", "admin")
PREFIX = "hr_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class KeyStoreError(HybridRagError, ValueError):
    """A key cannot be created or revoked; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: str
    sha256: str
    prefix: str
    created_at: float

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or scope == "read"

    def public(self) -> dict:
        return {"name": self.name, "scope": self.scope, "prefix": self.prefix + "…", "created_at": self.created_at}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """The keys of one data directory. Thread-safe; re-reads the file when it changes."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / FILE_NAME
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._keys: list[ApiKey] = []
        self._by_hash: dict[str, ApiKey] = {}

    # -- reading -----------------------------------------------------------------------------------
    def _load(self) -> list[ApiKey]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._keys, self._by_hash = None, [], {}
            return self._keys
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                if raw.get("version") != FORMAT:
                    raise ValueError(f"version {raw.get('version')!r}, expected {FORMAT}")
                keys = [ApiKey(**k) for k in raw["keys"]]
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise StoredDataError(f"The API key file {self.path} cannot be read ({e}); restore it from a "
                                      "backup, or delete it and create the keys again.") from None
            self._stamp, self._keys, self._by_hash = stamp, keys, {k.sha256: k for k in keys}
        return self._keys

    def list(self) -> list[ApiKey]:
        with self._lock:
            return list(self._load())

    def verify(self, key: str) -> ApiKey | None:
        """The key's record, or None for an unknown key."""
        if not key or not key.startswith(PREFIX) or len(key) > 200:
            return None
        with self._lock:
            self._load()
            return self._by_hash.get(_digest(key))

    def empty(self) -> bool:
        return not self.list()

    # -- writing -----------------------------------------------------------------------------------
    def create(self, name: str, scope: str) -> str:
        """Create a key; return it (the only time it is ever shown)."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidInput(f"Invalid key name {name!r}: use 1-64 letters, digits, '_', '-', '.' or '@', "
                               "starting with a letter or digit.")
        if scope not in SCOPES:
            raise InvalidInput(f"Unknown scope {scope!r}: use read or admin.")
        key = PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            keys = self._load()
            if any(k.name == name for k in keys):
                raise KeyStoreError(f"A key named {name!r} exists already: revoke it first "
                                f"(`hybrid-rag keys revoke {name}`) or pick another name.")
            self._write([*keys, ApiKey(name, scope, _digest(key), key[:7], round(time.time(), 3))])
        return key

    def revoke(self, name: str) -> ApiKey:
        with self._lock:
            keys = self._load()
            gone = [k for k in keys if k.name == name]
            if not gone:
                known = ", ".join(k.name for k in keys) or "none"
                raise KeyStoreError(f"No key named {name!r} (keys: {known}).")
            self._write([k for k in keys if k.name != name])
        return gone[0]

    def _write(self, keys: list[ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".api_keys.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": FORMAT, "keys": [asdict(k) for k in keys]}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None  # re-read on next use
        self._load()


__all__ = ["KeyStore", "ApiKey", "SCOPES", "KeyStoreError"]
