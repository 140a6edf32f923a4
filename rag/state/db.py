"""Engine and schema: which database, how it is opened, and upgrading it to the newest migration.

The URL is ``$HYBRID_RAG_DATABASE_URL`` (the variable ``auth.database_url_env`` names) when set, e.g.
``postgresql+psycopg://user:password@host/db``, else ``sqlite:///<data_dir>/state.sqlite``. SQLite is opened in
WAL mode with a busy timeout and writes take the lock at ``BEGIN IMMEDIATE``, so several processes (the web
app, the command line, more app workers) share one file without "database is locked" errors. PostgreSQL lets
several machines share the state.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url

from .errors import StateError, StateUnavailable

DEFAULT_URL_ENV = "HYBRID_RAG_DATABASE_URL"
SQLITE_NAME = "state.sqlite"
BUSY_TIMEOUT_MS = 15_000
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK = 7_212_012  # pg_advisory_xact_lock key: one process migrates at a time


def database_url(data_dir, environ=None, url_env: str = DEFAULT_URL_ENV) -> str:
    """The state database's URL: the variable's value when set, else SQLite in ``data_dir``."""
    environ = os.environ if environ is None else environ
    value = (environ.get(url_env) or "").strip() if url_env else ""
    if value:
        return value
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / SQLITE_NAME}"


def masked(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


SUPPORTED = ("sqlite", "postgresql")


def where(url, url_env: str | None = DEFAULT_URL_ENV, from_env: bool = True) -> str:
    """Which database, for messages: the URL with its password masked, and where it came from."""
    if from_env and url_env:
        return f"{masked(url)} (from {url_env})"
    return f"{masked(url)} (SQLite in the data directory{f'; {url_env} is unset' if url_env else ''})"


def open_error(exc: BaseException, url, url_env: str | None = DEFAULT_URL_ENV,
               from_env: bool = True) -> StateUnavailable:
    """A :class:`StateUnavailable` for a database that cannot be opened: which URL (password masked), which variable,
    why (the driver's first line, with the password taken out), and what to do."""
    var = url_env or DEFAULT_URL_ENV
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = reason[0] if reason else type(exc).__name__
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        reason = reason.replace(str(password), "***")
    if isinstance(exc, StateError):
        return StateUnavailable(f"The state database {where(url, url_env, from_env)} cannot be used: {exc}")
    if from_env:
        todo = (f"check that the database server is running and reachable from here and that the URL, user and "
                f"password in {var} are right (postgresql+psycopg://USER:PASSWORD@HOST/DB), or unset {var} to use "
                f"SQLite in the data directory.")
    else:
        todo = ("check that the data directory exists and is writable (--data-dir or HYBRID_RAG_DATA), or set "
                f"{var} to a PostgreSQL URL.")
    return StateUnavailable(f"Cannot open the state database {where(url, url_env, from_env)}: {reason[:300]}. What to "
                      f"do: {todo}")


def make_engine(url: str) -> Engine:
    try:
        u = make_url(url)
    except Exception:
        raise StateError("the URL cannot be parsed: set it like postgresql+psycopg://USER:PASSWORD@HOST/DB (or "
                         "unset it for SQLite in the data directory).") from None
    if u.get_backend_name() not in SUPPORTED:
        raise StateError(f"the database {u.get_backend_name()!r} is not supported: use PostgreSQL "
                         "(postgresql+psycopg://USER:PASSWORD@HOST/DB), or unset the variable for SQLite in the data "
                         "directory.")
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_con, _record):
            dbapi_con.isolation_level = None   # transactions are begun below, not by the driver
            cur = dbapi_con.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # a writer takes the lock at once (waiting up to the busy timeout), never halfway through
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":          # plain postgresql:// means psycopg 3, the driver we ship
            u = u.set(drivername="postgresql+psycopg")
    try:
        return create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except ImportError as e:   # e.g. postgresql+psycopg2:// without psycopg2 installed
        raise StateError(f"its driver {u.drivername!r} is not installed ({e}): use postgresql+psycopg:// (psycopg 3 "
                         "ships with hybrid-rag).") from None


@contextlib.contextmanager
def transaction(engine: Engine, write: bool = False):
    """A connection in one transaction, committed on success; ``write`` takes SQLite's write lock at BEGIN."""
    with engine.connect() as conn:
        if write:
            conn = conn.execution_options(write=True)
        with conn.begin():
            yield conn


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database); one process at a time."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with transaction(engine, write=True) as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


__all__ = ["database_url", "masked", "where", "open_error", "make_engine", "transaction", "upgrade", "head_revision", "DEFAULT_URL_ENV",
           "SQLITE_NAME"]
