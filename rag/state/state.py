"""The :class:`State` object and :func:`open_state`: one per database URL per process."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select

from . import db
from . import models as m
from .audit import AuditMixin
from .conversations import ConversationsMixin
from .keys import KeysMixin
from .rights import RightsMixin
from .sessions import SessionsMixin
from .users import UsersMixin

log = logging.getLogger(__name__)


class State(UsersMixin, SessionsMixin, RightsMixin, KeysMixin, ConversationsMixin, AuditMixin):
    """Users, sessions, rights, API keys, conversations, arena votes and the audit log, in one SQL database.

    Every method runs in one short transaction and is safe to call from many threads (and processes: SQLite in
    WAL mode with a busy timeout, or PostgreSQL). Use :func:`open_state` rather than the constructor.
    """

    def __init__(self, url: str, settings=None, *, migrate: bool = True):
        self._raw_url = url
        self.url = db.masked(url)
        self.settings = settings
        self.engine = db.make_engine(url)
        self.clock = time.time
        self._import_lock = threading.Lock()
        if migrate:
            db.upgrade(self.engine)

    def __repr__(self) -> str:
        return f"State({self.url!r})"

    __str__ = __repr__

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def settings_auth(self):
        from rag.config import AuthSettings

        return getattr(self.settings, "auth", None) or AuthSettings()

    @property
    def settings_admin(self):
        from rag.config import AdminSettings

        return getattr(self.settings, "admin", None) or AdminSettings()

    @contextlib.contextmanager
    def _tx(self, write: bool = False):
        with db.transaction(self.engine, write=write) as conn:
            yield conn

    def schema_revision(self) -> str | None:
        with self._tx() as c:
            row = c.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return row[0] if row else None

    def meta_get(self, key: str) -> str | None:
        with self._tx() as c:
            row = c.execute(select(m.meta_kv.c.value).where(m.meta_kv.c.key == key)).first()
        return row.value if row else None

    # -- one-time imports from files of earlier versions ---------------------------------------------------
    def import_legacy(self, data_dir) -> dict:
        """Import ``arena.sqlite`` and ``api_keys.json`` from ``data_dir`` once each (the files are renamed
        ``*.imported`` after); returns how many votes and keys came in."""
        out = {"votes": 0, "keys": 0}
        data_dir = Path(data_dir)
        if not (data_dir / "api_keys.json").is_file() and not (data_dir / "arena.sqlite").is_file():
            return out
        with self._import_lock:
            from rag.arena import import_arena_sqlite

            out["keys"] = self._import_legacy_keys(data_dir)
            out["votes"] = import_arena_sqlite(self, data_dir)
        return out

    def close(self) -> None:
        self.engine.dispose()


_STATES: dict[str, State] = {}
_LOCK = threading.Lock()


def open_state(settings, environ=None) -> State:
    """The state database of ``settings`` (cached per URL): ``$HYBRID_RAG_DATABASE_URL`` (the variable
    ``auth.database_url_env`` names), else SQLite at ``<data_dir>/state.sqlite``. The schema is created or upgraded
    on first open, and files of earlier versions in the data directory (``arena.sqlite``, ``api_keys.json``) are
    imported once. A database that cannot be opened raises :class:`StateError` naming the URL (password masked),
    the variable and what to do."""
    import os

    environ = os.environ if environ is None else environ
    auth = getattr(settings, "auth", None)
    url_env = auth.database_url_env if auth is not None else db.DEFAULT_URL_ENV
    url = db.database_url(settings.data_dir, environ, url_env)
    with _LOCK:
        state = _STATES.get(url)
        if state is None:
            from_env = bool(url_env and (environ.get(url_env) or "").strip())
            try:
                state = State(url, settings)
            except Exception as e:   # unreachable, refused, unsupported, unwritable: say which URL and what to do
                raise db.open_error(e, url, url_env, from_env) from None
            _STATES[url] = state
        elif settings is not None and getattr(settings, "auth", None) is not None:
            state.settings = settings   # the newest settings (session lifetimes, SSO) apply
    state.import_legacy(settings.data_dir)
    return state


def open_state_at(data_dir, environ=None) -> State:
    """:func:`open_state` for a data directory with default settings (the command line's old entry points)."""
    return open_state(SimpleNamespace(data_dir=Path(data_dir)), environ)


def close_all() -> None:
    """Dispose of every cached state (tests; a process about to fork)."""
    with _LOCK:
        for s in _STATES.values():
            s.close()
        _STATES.clear()


__all__ = ["State", "open_state", "open_state_at", "close_all"]
