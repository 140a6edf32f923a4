"""What every chat client shares: the :class:`Stream` an answer arrives in, the :class:`ChatClient`
base class, and the token estimate used for models whose tokenizer the app does not have."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from ..catalog import Catalog, EndpointSpec, ModelSpec, SamplingParams

MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators per chat message


def estimate_tokens(text: str) -> int:
    """A conservative token count for models whose tokenizer we do not have: UTF-8 bytes / 3.

    English runs at about 4 characters per token in the Llama 3 and Mistral tokenizers, so this
    over-counts by a third there; CJK text (3 bytes a character, about one token each) comes out right.
    Over-counting only wastes context, it never overflows it.
    """
    return len(text.encode("utf-8")) // 3 + 1


@dataclass
class Stream:
    """An open answer stream: iterate for text pieces; ``usage`` and ``finish_reason`` fill in as it ends.

    ``prompt_tokens``/``completion_tokens`` come from the server when it reports usage
    (``usage_source == "server"``); otherwise they are estimates.
    """

    pieces: Iterator[str]
    endpoint: EndpointSpec
    model: ModelSpec
    api_model: str
    attempts: int = 1
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_source: str = "estimate"
    finish_reason: str | None = None
    retry_reasons: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        return self.pieces


class ChatClient:
    """Base class: an endpoint serving one model."""

    kind = "base"

    def __init__(self, catalog: Catalog, endpoint: EndpointSpec, model: ModelSpec):
        self.catalog, self.endpoint, self.model = catalog, endpoint, model
        self.api_model = model.serves[endpoint.name]

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def count_messages(self, messages: list[dict]) -> int:
        return sum(self.count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + 4

    def open(self, messages: list[dict], params: SamplingParams) -> Stream:  # pragma: no cover
        raise NotImplementedError


__all__ = ["Stream", "ChatClient", "estimate_tokens", "MESSAGE_OVERHEAD_TOKENS"]
