"""Pure ASGI middlewares (streaming and disconnects pass through untouched):

- :class:`Guard`: body size caps (before and while reading) and, for ``/v1``, the key check (the key and its
  user, from the state database) before any body is read, so an unauthenticated client cannot make the server
  read or parse a large request;
- :class:`Metrics`: request counts and latency by route template, method and status.
"""
from __future__ import annotations

import json
import time

from starlette.exceptions import HTTPException
from starlette.requests import Request

from rag import metrics

from .errors import APIError, body

API_PREFIXES = ("/v1", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
JSON_CAP = 8 * 2**20   # bytes of any request that is not a multipart upload


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body passes its cap (FastAPI re-raises HTTPExceptions as they are)."""

    def __init__(self, cap: int):
        super().__init__(413, f"The request body is over {size_text(cap)}: send less (uploads: fewer or smaller "
                              "files, limits.max_files_per_upload and limits.max_file_bytes).")


def size_text(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


async def _send_json(send, status: int, payload: dict, headers: dict | None = None) -> None:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


class Guard:
    def __init__(self, app, *, service, upload_cap: int, json_cap: int = JSON_CAP):
        self.app, self.service, self.upload_cap, self.json_cap = app, service, upload_cap, json_cap

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
        cap = self.upload_cap if multipart else self.json_cap
        path = scope.get("path", "")
        if path == "/v1" or path.startswith("/v1/"):
            from starlette.concurrency import run_in_threadpool

            from .security import identify

            try:  # the route checks the scope and the user's rights, with this caller (request.state.api_key)
                scope.setdefault("state", {})["api_key"] = await run_in_threadpool(identify, request,
                                                                                   self.service.keys)
            except APIError as e:
                return await _send_json(send, e.status, body(e.message, e.type, e.code, e.param), e.headers)
            except Exception as e:  # noqa: BLE001 - e.g. the state database unreachable
                from .errors import error_response

                r = error_response(e, "Checking the API key")
                return await _send_json(send, r.status_code, json.loads(r.body))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return await _send_json(send, 413, body(BodyTooLarge(cap).detail, "invalid_request_error", "too_large"))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap)
            return message

        return await self.app(scope, counted, send)


class Metrics:
    """Counts and times every request by route template and status; paths outside the API count as ``ui``
    and unknown methods as ``other`` (so labels stay bounded whatever clients send)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_)
        finally:
            path = scope.get("path", "")
            if path.startswith(API_PREFIXES):
                label = getattr(scope.get("route"), "path", None) or "unmatched"
            else:
                label = "ui"
            method = scope.get("method", "")
            metrics.record_request(label, method if method in METHODS else "other", status[0],
                                   time.perf_counter() - t0)


__all__ = ["Guard", "Metrics", "BodyTooLarge", "JSON_CAP"]
