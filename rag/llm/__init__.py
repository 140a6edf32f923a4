"""Chat clients: one per endpoint kind, each ``open(messages, params) -> Stream`` (an iterator of text pieces).

- :mod:`.nim`: :class:`NIMClient` serves the hosted NVIDIA API catalog, local NIM containers and any other
  OpenAI-compatible base URL, all through langchain-nvidia-ai-endpoints' ``ChatNVIDIA``.
- :mod:`.embedded`: :class:`EmbeddedClient` runs SmolLM2-135M-Instruct with llama-cpp-python: no network,
  no key, weak answers.
- :mod:`.health`: the per-endpoint health cache and the probe of local endpoints.
- :mod:`.discover`: local endpoints matched to the catalog by what their ``/v1/models`` lists.
- :mod:`.errors`: the domain exceptions (messages fit for users, keys redacted) and :func:`redact`.
- :mod:`.base`: :class:`Stream`, the :class:`ChatClient` base class and the token estimate.

:func:`make_client` picks the client for an endpoint; it makes no network call.
"""
from __future__ import annotations

from ..catalog import Catalog, ModelSpec
from .base import ChatClient, Stream, estimate_tokens
from .discover import discover, found_note
from .embedded import EmbeddedClient, load_embedded, smollm2_path
from .errors import (
    EmbeddedUnavailable,
    EndpointError,
    LLMError,
    NeedsKey,
    StreamBroken,
    redact,
)
from .health import HEALTH, HealthCache, probe
from .nim import NIMClient


def make_client(catalog: Catalog, endpoint_name: str, model: ModelSpec, **kwargs) -> ChatClient:
    """The client for ``model`` on ``endpoint_name`` (no network call).

    ``kwargs`` go to the client's constructor: ``threads``/``repack`` for an embedded endpoint,
    ``sleep`` for the others.
    """
    ep = catalog.endpoint(endpoint_name)
    if ep.kind == "embedded":
        return EmbeddedClient(catalog, ep, model, **kwargs)
    return NIMClient(catalog, ep, model, **kwargs)


__all__ = ["ChatClient", "NIMClient", "EmbeddedClient", "Stream", "make_client", "probe", "HealthCache",
           "HEALTH", "LLMError", "NeedsKey", "EndpointError", "StreamBroken", "EmbeddedUnavailable",
           "redact", "estimate_tokens", "smollm2_path", "load_embedded", "discover", "found_note"]
