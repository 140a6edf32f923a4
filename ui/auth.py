"""Admin credentials: the one place where an admin action is allowed or refused.

Every admin handler (create/delete collection, upload, delete document) calls :func:`require_admin`
with the user name and password typed in the Documents tab, on the server, for every action.
Hiding a button in the browser is cosmetic; this check is the access control.

The password comes from the environment variable named by ``admin.password_env`` in the config
(``HYBRID_RAG_ADMIN_PASSWORD`` by default), else ``admin.password``. With neither set, every admin
action is refused with a message that names the variable.
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections import deque

from rag.errors import HybridRagError

log = logging.getLogger(__name__)

MAX_FAILURES = 5        # failed attempts within FAILURE_WINDOW_S ...
FAILURE_WINDOW_S = 60.0
LOCKOUT_S = 30.0        # ... lock admin actions for this long


class AdminDenied(HybridRagError, PermissionError):
    """An admin action was refused; the message says why and what to do."""


class _Throttle:
    """Brake on password guessing, per client address: one guesser cannot lock the real admin out
    from another machine. (Behind a reverse proxy every client shares the proxy's address.)"""

    MAX_CLIENTS = 10_000  # addresses remembered; the oldest is forgotten first

    def __init__(self):
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[deque, list]] = {}  # client -> (failure times, [locked until])

    def _state(self, client: str):
        st = self._clients.get(client)
        if st is None:
            st = self._clients[client] = (deque(), [0.0])
            while len(self._clients) > self.MAX_CLIENTS:
                self._clients.pop(next(iter(self._clients)))
        return st

    def check(self, now: float, client: str = "-") -> None:
        with self._lock:
            st = self._clients.get(client)
            if st is not None and now < st[1][0]:
                raise AdminDenied(f"Too many wrong admin passwords: try again in {st[1][0] - now:.0f} s.")

    def fail(self, now: float, client: str = "-") -> None:
        with self._lock:
            failures, locked = self._state(client)
            failures.append(now)
            while failures and now - failures[0] > FAILURE_WINDOW_S:
                failures.popleft()
            if len(failures) >= MAX_FAILURES:
                locked[0] = now + LOCKOUT_S
                failures.clear()
                log.warning("admin: %d wrong passwords in %.0f s from %s; admin actions locked there for %.0f s",
                            MAX_FAILURES, FAILURE_WINDOW_S, client, LOCKOUT_S)

    def reset(self) -> None:
        with self._lock:
            self._clients.clear()


_THROTTLE = _Throttle()


def admin_password(settings, environ=None) -> str | None:
    environ = os.environ if environ is None else environ
    a = settings.admin
    value = environ.get(a.password_env) if a.password_env else None
    return value or a.password or None


def admin_configured(settings, environ=None) -> bool:
    return admin_password(settings, environ) is not None


def not_configured_message(settings) -> str:
    var = settings.admin.password_env or "HYBRID_RAG_ADMIN_PASSWORD"
    return (f"Admin actions are disabled: no admin password is set. Set the {var} environment variable "
            f"(named by admin.password_env in the config) and restart the app.")


def require_admin(username: str | None, password: str | None, settings, *, action: str = "do this",
                  environ=None, client: str | None = None) -> str:
    """Return the admin user name, or raise :class:`AdminDenied` with a message for the user.

    ``action`` completes "Only an admin can …", e.g. ``"upload files"``. ``client`` (the caller's
    address) keys the guessing brake.
    """
    expected = admin_password(settings, environ)
    if expected is None:
        raise AdminDenied(not_configured_message(settings))
    now = time.monotonic()
    client = client or "-"
    _THROTTLE.check(now, client)
    user = (username or "").strip()
    if not password:
        raise AdminDenied(f"Only an admin can {action}: sign in with the admin user name and password first.")
    ok_user = hmac.compare_digest(user.encode("utf-8", "replace"), settings.admin.username.encode("utf-8"))
    ok_pass = hmac.compare_digest(str(password).encode("utf-8", "replace"), expected.encode("utf-8"))
    if not (ok_user and ok_pass):
        _THROTTLE.fail(now, client)
        log.warning("admin: refused %s (wrong user name or password)", action)
        raise AdminDenied(f"Wrong admin user name or password: not allowed to {action}.")
    return user


def client_of(request) -> str:
    """The client address of a Gradio request ("-" when there is none, as in direct calls)."""
    host = getattr(getattr(request, "client", None), "host", None)
    return str(host) if host else "-"


def reset_throttle() -> None:
    """For tests."""
    _THROTTLE.reset()


__all__ = ["AdminDenied", "require_admin", "admin_password", "admin_configured", "not_configured_message"]
