"""Generation errors and key redaction.

The errors are small domain exceptions whose ``str()`` is a message fit for users; the CLI and UI show
them as they are. Key values never appear in them: every message built from a server's reply passes
through :func:`redact`.
"""
from __future__ import annotations

import re

from ..errors import HybridRagError


class LLMError(HybridRagError, RuntimeError):
    """Base class of generation errors; ``str(e)`` is a message fit for users."""


class NeedsKey(LLMError):
    """An endpoint needs a key and none is set, or the key was rejected (401/403)."""

    def __init__(self, endpoint: str, env_var: str, rejected: bool = False, detail: str = ""):
        self.endpoint, self.env_var, self.rejected = endpoint, env_var, rejected
        if rejected:
            msg = (f"The key in {env_var} was rejected by the {endpoint} endpoint{detail}: "
                   f"check or regenerate it and set {env_var} again.")
        else:
            msg = f"No key for the {endpoint} endpoint: set the {env_var} environment variable."
        super().__init__(msg)


class EndpointError(LLMError):
    """An endpoint failed before the first token (HTTP error, refused connection, timeout)."""

    def __init__(self, endpoint: str, message: str, status: int | None = None, retryable: bool = False):
        self.endpoint, self.status, self.retryable = endpoint, status, retryable
        super().__init__(message)


class StreamBroken(LLMError):
    """The stream failed after some text arrived; the text so far is kept by the caller."""


class EmbeddedUnavailable(LLMError):
    """llama-cpp-python or the SmolLM2 weights are missing."""


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
_NVAPI = re.compile(r"nvapi-[A-Za-z0-9_\-]+")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove key values (the given ones, bearer tokens, ``nvapi-...``) from a message."""
    text = str(text)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = _BEARER.sub(r"\1***", text)
    return _NVAPI.sub("nvapi-***", text)


__all__ = ["LLMError", "NeedsKey", "EndpointError", "StreamBroken", "EmbeddedUnavailable", "redact"]
