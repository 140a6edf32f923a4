"""The project's error base and the one place that turns any exception into a message for users.

Every error the project raises on purpose derives from :class:`HybridRagError`, and its text is written
for the person who will read it: what went wrong and what to do. Anything else (a bug, a library's own
exception) is logged with its traceback under a short reference, and users see only that reference.
"""
from __future__ import annotations

import logging
import uuid

log = logging.getLogger(__name__)


class HybridRagError(Exception):
    """An expected failure; ``str(e)`` is a message fit for users."""


class InvalidInput(HybridRagError, ValueError):
    """A request argument is out of range or malformed; the message names it and the allowed values."""


class StoredDataError(HybridRagError, RuntimeError):
    """Files on disk are damaged or were written by another format version; the message says what to redo."""


class MissingDependency(HybridRagError, ImportError):
    """An optional package a setting asks for is not installed; the message names the install command."""


def user_message(exc: BaseException, action: str = "The request") -> str:
    """``str(exc)`` for the project's own errors; for anything else a reference to the server log."""
    if isinstance(exc, HybridRagError):
        return str(exc)
    ref = uuid.uuid4().hex[:8]
    log.error("%s failed (ref %s)", action, ref, exc_info=(type(exc), exc, exc.__traceback__))
    return f"{action} failed because of an internal error (ref {ref}); the server log has the details."


__all__ = ["HybridRagError", "InvalidInput", "StoredDataError", "MissingDependency", "user_message"]
