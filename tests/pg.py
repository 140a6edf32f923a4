"""A throw-away PostgreSQL server for tests: Debian's ``postgresql`` binaries, a cluster in a temporary
directory, a unix socket there and TCP on a free 127.0.0.1 port, a random password, stopped at the end.

    server = PgServer.start()          # or PgServer.start() raises PgUnavailable(reason)
    url = server.new_database()        # postgresql+psycopg://postgres:PW@127.0.0.1:PORT/t_1
    ...
    server.stop()

PostgreSQL refuses to run as root, so when the tests run as root (CI containers, this machine) the cluster's
directory belongs to the ``postgres`` user (made by the Debian package; else ``nobody``) and initdb, pg_ctl and
the server run as that user (``subprocess``'s ``user=``; no sudo needed). The directory sits directly under
the system temp directory because pytest's own temp directories are private to root.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = "install Debian's postgresql package (`apt-get install postgresql`; `make test` does)"


class PgUnavailable(RuntimeError):
    """The binaries are absent (or the server did not start); the message says why."""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl (or ``$PG_BIN_DIR``)."""
    env = os.environ.get("PG_BIN_DIR")
    candidates = [env] if env else sorted(glob.glob(BIN_GLOB), key=lambda p: _version(p), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The user to run PostgreSQL as: None when we are not root, else ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PgUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


class PgServer:
    def __init__(self, bin_dir: Path, root: Path, port: int, password: str, user: str | None):
        self.bin_dir, self.root, self.port, self.password, self.user = bin_dir, root, port, password, user
        self.data = root / "data"
        self.log = root / "server.log"
        self._n = 0
        self._lock = threading.Lock()

    # -- life cycle ----------------------------------------------------------------------------------------
    @classmethod
    def start(cls) -> "PgServer":
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PgUnavailable(f"PostgreSQL binaries not found in {BIN_GLOB}: {INSTALL_HINT}")
        user = _run_as()
        root = Path(tempfile.mkdtemp(prefix="hr-pg-"))
        password = secrets.token_urlsafe(16)
        server = cls(bin_dir, root, _free_port(), password, user)
        try:
            server._init()
            server._start()
        except BaseException:
            server.stop()
            raise
        return server

    def _chown(self, path: Path) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _cmd(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.user:
            pw = pwd.getpwnam(self.user)
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "HOME": str(self.root),
               "TZ": "UTC"}
        p = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], capture_output=True, text=True, env=env,
                           cwd=self.root, timeout=timeout, **kwargs)
        if p.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise PgUnavailable(f"{args[0]} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}"
                                + (f"\nserver log:\n{log}" if log else ""))
        return p

    def _init(self) -> None:
        self.root.chmod(0o700)
        self._chown(self.root)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        self._cmd("initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile), "-E", "UTF8",
                  "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        pwfile.unlink()

    def _start(self) -> None:
        opts = (f"-k {self.root} -p {self.port} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").is_file():
                self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        except (PgUnavailable, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                             dbname="postgres", autocommit=True, connect_timeout=10) as con:
            con.execute(sql)

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        with self._lock:
            self._n += 1
            name = f"t_{os.getpid()}_{self._n}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


__all__ = ["PgServer", "PgUnavailable", "find_bin_dir"]
