"""The state layer's errors: each message says what is wrong and what to do."""
from __future__ import annotations

from rag.errors import HybridRagError


class AccessDenied(HybridRagError, PermissionError):
    """The user lacks a right on a collection (or an admin-only action); the message says which and whom to ask."""


class AuthError(HybridRagError, PermissionError):
    """Sign-in failed: wrong password, throttled, expired or unknown session, a key without a user."""


class StateError(HybridRagError, ValueError):
    """A bad name or value, an unknown user, or a change that would leave no admin."""


class StateUnavailable(StateError):
    """The state database cannot be opened (unreachable, refused, unsupported, unwritable). The message names the
    URL (password masked) and the variable, for the command line and the server's log; not for web clients."""


__all__ = ["AccessDenied", "AuthError", "StateError", "StateUnavailable"]
