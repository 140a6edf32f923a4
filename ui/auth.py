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

log = logging.getLogger(__name__)

MAX_FAILURES = 5        # failed attempts within FAILURE_WINDOW_S ...
FAILURE_WINDOW_S = 60.0
LOCKOUT_S = 30.0        # ... lock admin actions for this long


class AdminDenied(PermissionError):
    """An admin action was refused; the message says why and what to do."""


class _Throttle:
    """Process-wide brake on password guessing."""

    def __init__(self):
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()
        self._locked_until = 0.0

    def check(self, now: float) -> None:
        with self._lock:
            if now < self._locked_until:
                raise AdminDenied(f"Too many wrong admin passwords: try again in {self._locked_until - now:.0f} s.")

    def fail(self, now: float) -> None:
        with self._lock:
            self._failures.append(now)
            while self._failures and now - self._failures[0] > FAILURE_WINDOW_S:
                self._failures.popleft()
            if len(self._failures) >= MAX_FAILURES:
                self._locked_until = now + LOCKOUT_S
                self._failures.clear()
                log.warning("admin: %d wrong passwords in %.0f s; admin actions locked for %.0f s",
                            MAX_FAILURES, FAILURE_WINDOW_S, LOCKOUT_S)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._locked_until = 0.0


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
                  environ=None) -> str:
    """Return the admin user name, or raise :class:`AdminDenied` with a message for the user.

    ``action`` completes "Only an admin can …", e.g. ``"upload files"``.
    """
    expected = admin_password(settings, environ)
    if expected is None:
        raise AdminDenied(not_configured_message(settings))
    now = time.monotonic()
    _THROTTLE.check(now)
    user = (username or "").strip()
    if not password:
        raise AdminDenied(f"Only an admin can {action}: sign in with the admin user name and password first.")
    ok_user = hmac.compare_digest(user.encode("utf-8", "replace"), settings.admin.username.encode("utf-8"))
    ok_pass = hmac.compare_digest(str(password).encode("utf-8", "replace"), expected.encode("utf-8"))
    if not (ok_user and ok_pass):
        _THROTTLE.fail(now)
        log.warning("admin: refused %s (wrong user name or password)", action)
        raise AdminDenied(f"Wrong admin user name or password: not allowed to {action}.")
    return user


def reset_throttle() -> None:
    """For tests."""
    _THROTTLE.reset()


__all__ = ["AdminDenied", "require_admin", "admin_password", "admin_configured", "not_configured_message"]
