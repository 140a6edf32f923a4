"""The client for hosted NVIDIA, local NIM and other OpenAI-compatible endpoints, all through
langchain-nvidia-ai-endpoints' ``ChatNVIDIA``.

Nothing here touches the network at import or construction time: ``ChatNVIDIA`` is built per request
(it costs well under a millisecond), and models unknown to its hosted table are registered with a
templated endpoint so that it never lists models.
"""
from __future__ import annotations

import logging
import random
import re
import threading
import time
from http import HTTPStatus
from typing import Iterator

from ..catalog import Catalog, EndpointSpec, ModelSpec, SamplingParams
from .base import ChatClient, Stream
from .errors import EndpointError, LLMError, NeedsKey, StreamBroken, redact
from .health import timeout_session

log = logging.getLogger(__name__)

_REGISTER_LOCK = threading.Lock()
_STATUS_RE = re.compile(r"^\[(\d{3})\]")


def _ensure_known_hosted(api_model: str) -> None:
    """Keep ChatNVIDIA from listing the hosted catalog (a network call) for models missing from its table.

    Unknown names on the hosted endpoint make ChatNVIDIA's constructor call ``GET /v1/models``; registering
    the name with a ``{base_url}``-templated endpoint is the package's own mechanism for custom ids.
    """
    from langchain_nvidia_ai_endpoints import Model, register_model
    from langchain_nvidia_ai_endpoints._statics import lookup_model

    with _REGISTER_LOCK:
        if lookup_model(api_model) is None:
            register_model(Model(id=api_model, model_type="chat", client="ChatNVIDIA",
                                 endpoint="{base_url}/chat/completions"))


def _last_response(chat):
    return getattr(getattr(chat, "_client", None), "last_response", None)


def _status_of(chat, exc: BaseException) -> int | None:
    """The HTTP status of a failed call: from the last response, else from ChatNVIDIA's ``[NNN]`` prefix."""
    code = getattr(_last_response(chat), "status_code", None)
    if isinstance(code, int) and code >= 400:
        return code
    m = _STATUS_RE.match(str(exc))
    return int(m.group(1)) if m else None


def _retry_after(chat) -> float | None:
    """The last response's ``Retry-After`` in seconds, if it sent one as a number."""
    resp = _last_response(chat)
    try:
        v = resp.headers.get("Retry-After") if resp is not None else None
        return float(v) if v is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


class NIMClient(ChatClient):
    """Hosted, local NIM or OpenAI-compatible endpoint through ``ChatNVIDIA``.

    ``open`` retries 429, 5xx and connection failures (``retries.attempts`` tries, exponential backoff with
    jitter, ``Retry-After`` honoured up to ``backoff_max_s``) until the first chunk arrives; after that a
    failure raises :class:`StreamBroken` from the iterator. Timeouts: ``timeouts.connect_s`` on connect,
    ``timeouts.read_s`` between stream chunks (the first one included).
    """

    kind = "nim"

    def __init__(self, catalog: Catalog, endpoint: EndpointSpec, model: ModelSpec, sleep=time.sleep):
        super().__init__(catalog, endpoint, model)
        self.base_url = endpoint.resolved_base_url(catalog.environ)
        self._sleep = sleep

    def _key(self) -> str | None:
        key = self.catalog.api_key(self.endpoint)
        missing = self.catalog.key_missing(self.endpoint)
        if missing:
            raise NeedsKey(self.endpoint.name, missing)
        return key

    def _chat(self, key: str | None):
        from langchain_nvidia_ai_endpoints import ChatNVIDIA

        spec = self.catalog.spec
        if self.endpoint.kind == "nvidia_hosted":
            _ensure_known_hosted(self.api_model)
        chat = ChatNVIDIA(
            model=self.api_model, base_url=self.base_url,
            api_key=key or "no-key",  # local NIMs ignore it; ChatNVIDIA would otherwise read NVIDIA_API_KEY
            timeout=spec.timeouts.read_s, usage_telemetry_enabled=spec.telemetry,
        )
        timeouts = (spec.timeouts.connect_s, spec.timeouts.read_s)
        chat._client.get_session_fn = lambda: timeout_session(timeouts, self.base_url)
        return chat

    def _classify(self, chat, exc: BaseException) -> LLMError:
        import requests

        secrets = self.catalog.secrets()
        name = self.endpoint.name
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return EndpointError(name, f"{name}: no connection within {self.catalog.spec.timeouts.connect_s:g} s",
                                 retryable=True)
        if isinstance(exc, requests.exceptions.ReadTimeout) or (
                isinstance(exc, requests.exceptions.ConnectionError) and "timed out" in str(exc).lower()):
            return EndpointError(name, f"{name}: nothing received for {self.catalog.spec.timeouts.read_s:g} s",
                                 retryable=True)
        if isinstance(exc, requests.exceptions.ConnectionError):
            return EndpointError(name, f"{name}: connection failed ({type(exc).__name__})", retryable=True)
        status = _status_of(chat, exc)
        # the endpoint's own error text goes to the log (redacted), never into a message users see
        log.info("%s: %s", name, redact(str(exc).strip()[:500] or type(exc).__name__, secrets))
        if status in (401, 403):
            env = self.endpoint.api_key_env or "the endpoint's key variable"
            return NeedsKey(name, env, rejected=True, detail=f" (HTTP {status})")
        if status is not None:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "error"
            retryable = status == 429 or status >= 500
            return EndpointError(name, f"{name}: HTTP {status} {phrase}", status, retryable=retryable)
        return EndpointError(name, f"{name}: the request failed ({type(exc).__name__}; the server log has the "
                                   "details)")

    def _backoff(self, attempt: int, chat) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        r = self.catalog.spec.retries
        wait = min(r.backoff_max_s, r.backoff_s * (2 ** attempt)) * (0.5 + random.random() / 2)
        ra = _retry_after(chat)
        if ra is not None:
            wait = min(r.backoff_max_s, max(wait, ra))
        return wait

    def open(self, messages: list[dict], params: SamplingParams) -> Stream:
        key = self._key()
        fields = params.request_fields()
        stop = fields.pop("stop", None)
        attempts = self.catalog.spec.retries.attempts
        reasons: list[str] = []
        attempt = 1
        while True:
            chat = self._chat(key)
            it = chat.stream(messages, stop=stop, **fields)
            try:
                first = next(it, None)
            except Exception as exc:  # noqa: BLE001 - ChatNVIDIA raises bare Exception for HTTP errors
                err = self._classify(chat, exc)
                log.info("%s attempt %d/%d failed: %s", self.endpoint.name, attempt, attempts, err)
                if not (getattr(err, "retryable", False) and attempt < attempts):
                    if reasons:
                        err.args = (f"{err} after {attempt} attempts",)
                    raise err from None
                reasons.append(str(err))
                self._sleep(self._backoff(attempt - 1, chat))
                attempt += 1
                continue
            stream = Stream(iter(()), self.endpoint, self.model, self.api_model, attempts=attempt,
                            retry_reasons=reasons)
            stream.pieces = self._pieces(chat, first, it, stream)
            return stream

    def _pieces(self, chat, first, it, stream: Stream) -> Iterator[str]:
        chunk = first
        try:
            while chunk is not None:
                usage = getattr(chunk, "usage_metadata", None)
                if usage:
                    stream.prompt_tokens = usage.get("input_tokens") or stream.prompt_tokens
                    stream.completion_tokens = usage.get("output_tokens") or stream.completion_tokens
                    stream.usage_source = "server"
                fr = (getattr(chunk, "response_metadata", None) or {}).get("finish_reason")
                if fr:
                    stream.finish_reason = fr
                text = chunk.content if isinstance(chunk.content, str) else ""
                if text:
                    yield text
                chunk = next(it, None)
        except Exception as exc:  # noqa: BLE001
            err = self._classify(chat, exc)
            raise StreamBroken(f"the stream from {self.endpoint.name} broke mid-answer: {err}") from None
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # also when the consumer stopped early: the HTTP response is closed now
        if stream.finish_reason is None:
            raise StreamBroken(f"the stream from {self.endpoint.name} ended without a finish reason")


__all__ = ["NIMClient"]
