"""A fake OpenAI-compatible NIM on loopback: real HTTP/1.1, real SSE, scripted failures.

Used by the tests (the ``fake_nim`` fixture in ``tests/conftest.py``) and by the benchmarks
(``bench/ttft.py``, ``bench/concurrency.py``). It serves

- ``GET /v1/models``: the configured model ids;
- ``POST /v1/chat/completions`` with ``"stream": true``: SSE ``data: {...}`` chunks in the OpenAI format
  (role chunk, content chunks, a finish chunk, a usage chunk when ``stream_options.include_usage``),
  then ``data: [DONE]``, sent with chunked transfer encoding like uvicorn does.

- ``POST /v1/ranking``: the rerank NIM's ranking (``{"model", "query": {"text"}, "passages": [{"text"}]}`` →
  ``{"rankings": [{"index", "logit"}]}``, best first), each passage scored by how many of the query's words it
  has; ``server.ranking`` (a :class:`RankScript`) adds a delay, an HTTP error or a malformed body.

Each chat POST takes the next :class:`Script` from the queue (``server.queue(...)``), or ``server.default``:
a fixed delay before the first token, a delay between chunks, an HTTP error status (401, 429, 500 ...)
with an optional ``Retry-After``, or a disconnect after N content chunks (the socket is closed without
the terminating zero-length chunk, so the client sees a broken stream).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    tokens: list[str] = field(default_factory=lambda: ["The answer ", "is in ", "the sources ", "[1]."])
    status: int = 200
    ttft_s: float = 0.0            # delay before the first content chunk (after the headers)
    header_delay_s: float = 0.0    # delay before the response headers
    chunk_delay_s: float = 0.0     # delay between content chunks
    disconnect_after: int | None = None  # close the socket after this many content chunks
    retry_after: float | None = None
    error_body: dict | None = None
    finish_reason: str = "stop"
    usage: bool = True


@dataclass
class RankScript:
    """How ``POST /v1/ranking`` answers: after ``delay_s``, with ``status`` (an error body when not 200), or with
    ``body`` as it is (a malformed ranking) instead of the word-overlap ranking."""

    delay_s: float = 0.0
    status: int = 200
    body: dict | None = None


def overlap_ranking(query: str, passages: list[str]) -> list[dict]:
    """The fake's ranking: logit = the number of distinct query words (3+ letters) in the passage; ties by index."""
    import re

    words = set(re.findall(r"[a-z]{3,}", query.lower()))
    scores = [float(len(words & set(re.findall(r"[a-z]{3,}", p.lower())))) for p in passages]
    return [{"index": i, "logit": scores[i]} for i in sorted(range(len(passages)), key=lambda i: (-scores[i], i))]


class FakeNIM:
    """Start with ``start()`` (or as a context manager); ``base_url`` is ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, models: tuple[str, ...] = ("fake/model", "fake/big"), default: Script | None = None):
        self.models = list(models)
        self.default = default or Script()
        self.ranking = RankScript()
        self._queue: deque[Script] = deque()
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # control ---------------------------------------------------------------------------------------
    def queue(self, *scripts: Script) -> "FakeNIM":
        with self._lock:
            self._queue.extend(scripts)
        return self

    def next_script(self) -> Script:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    @property
    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    @property
    def rank_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].rstrip("/").endswith("/ranking")]

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake NIM is not running: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeNIM":
        handler = type("Handler", (_Handler,), {"nim": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-nim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeNIM":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError)):  # a client hanging up is normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    nim: FakeNIM

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.nim.record({"method": "GET", "path": self.path, "headers": dict(self.headers)})
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake", "root": m} for m in self.nim.models]})
        else:
            self._json(404, {"error": "not found"})

    def _ranking(self, body: dict) -> None:
        rs = self.nim.ranking
        self.nim.record({"method": "POST", "path": self.path, "headers": dict(self.headers), "json": body,
                         "t": time.perf_counter()})
        if rs.delay_s:
            time.sleep(rs.delay_s)
        try:
            if rs.status != 200:
                self._json(rs.status, {"status": rs.status, "title": "Error", "detail": "fake ranking failure"})
            elif rs.body is not None:
                self._json(200, rs.body)
            else:
                query = (body.get("query") or {}).get("text", "")
                passages = [p.get("text", "") for p in body.get("passages") or []]
                self._json(200, {"rankings": overlap_ranking(query, passages)})
        except (BrokenPipeError, ConnectionResetError):   # the client gave up (its timeout)
            self.close_connection = True

    def _chunk(self, payload: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def _event(self, obj) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj)
        self._chunk(f"data: {data}\n\n".encode())

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/").endswith("/ranking"):
            self._ranking(body)
            return
        script = self.nim.next_script()
        entry = {"method": "POST", "path": self.path, "headers": dict(self.headers), "json": body,
                 "t": time.perf_counter(), "sent": 0, "aborted": False}
        self.nim.record(entry)  # "sent" counts content chunks as they go; "aborted": the client hung up
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": "not found"})
            return
        if script.header_delay_s:
            time.sleep(script.header_delay_s)
        if script.status != 200:
            headers = {"Retry-After": f"{script.retry_after:g}"} if script.retry_after is not None else {}
            err = script.error_body or {"status": script.status, "title": {401: "Unauthorized", 429: "Too Many Requests",
                                                                            500: "Internal Server Error"}.get(script.status, "Error"),
                                        "detail": "fake failure"}
            self._json(script.status, err, headers)
            return
        model = body.get("model", "?")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

        def chunk(delta, finish=None):
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        try:
            if script.ttft_s:
                time.sleep(script.ttft_s)
            self._event(chunk({"role": "assistant", "content": ""}))
            for i, tok in enumerate(script.tokens):
                if script.disconnect_after is not None and i >= script.disconnect_after:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if i and script.chunk_delay_s:
                    time.sleep(script.chunk_delay_s)
                self._event(chunk({"content": tok}))
                entry["sent"] = i + 1
            self._event(chunk({}, script.finish_reason))
            if script.usage and (body.get("stream_options") or {}).get("include_usage"):
                n_prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                self._event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                             "choices": [], "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(script.tokens),
                                                      "total_tokens": n_prompt + len(script.tokens)}})
            self._event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            entry["aborted"] = True
            self.close_connection = True


def fake_catalog(base_url: str, *, environ: dict | None = None, context: int = 8192, attempts: int = 3,
                 read_s: float = 5.0, local_url: str | None = None, fallback_order=("local", "hosted", "embedded"),
                 ttl_s: float = 30.0):
    """A catalog whose ``local`` (no key) and ``hosted`` (key in ``FAKE_NIM_KEY``, OpenAI-compatible kind)
    endpoints both point at the fake server, plus the embedded model; every route uses ``fake/model``."""
    from rag.catalog import Catalog

    return Catalog.from_dict({
        "fallback_order": list(fallback_order),
        "routes": {"speed": "fake/model", "quality": "fake/big", "openusd": "fake/model"},
        "health": {"ttl_s": ttl_s, "probe_timeout_s": 1.0},
        "retries": {"attempts": attempts, "backoff_s": 0.01, "backoff_max_s": 0.05},
        "timeouts": {"connect_s": 2.0, "read_s": read_s},
        "endpoints": {
            "local": {"kind": "local_nim", "base_url": local_url or base_url},
            "hosted": {"kind": "openai_compatible", "base_url": base_url, "api_key_env": "FAKE_NIM_KEY"},
            "embedded": {"kind": "embedded"},
        },
        "models": [
            {"id": "fake/model", "name": "Fake 8k", "context": context,
             "params": {"temperature": 0.5, "top_p": 1.0, "max_tokens": 256},
             "serves": {"local": "fake/model", "hosted": "fake/model"}},
            {"id": "fake/big", "name": "Fake big", "context": 131072, "serves": {"hosted": "fake/big"}},
            {"id": "smollm2-135m-instruct", "name": "SmolLM2 (embedded)", "context": 2048, "embedded": True,
             "params": {"temperature": 0.2, "max_tokens": 64}, "serves": {"embedded": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
        ],
    }, environ={"FAKE_NIM_KEY": "sekrit-test-key-42"} if environ is None else environ)


def closed_port_url() -> str:
    """A loopback base URL where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


__all__ = ["FakeNIM", "Script", "RankScript", "overlap_ranking", "fake_catalog", "closed_port_url"]
