"""Errors in the OpenAI shape, ``{"error": {"message", "type", "param", "code"}}``, for every /v1 failure.

The project's own exceptions map to statuses here, in one table; anything else is a 500 whose message
carries a reference to the server log (never the exception text).
"""
from __future__ import annotations

import logging
import re
import uuid

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import HybridRagError, InvalidInput, user_message

log = logging.getLogger(__name__)
_PATH = re.compile(r"(?<![\w.:])/(?:[^\s'\"/]+/)*[^\s'\",;:)]+")
_URL = re.compile(r"\bhttps?://\S+?(?=[\s),;]|$)")


class APIError(Exception):
    """Raise from an endpoint to answer with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


def body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _status_of(exc: HybridRagError) -> tuple[int, str, str | None]:
    """(status, type, code) for a project exception."""
    from ingest.jobs import JobNotFound
    from rag.answer import NoModelAvailable, PromptTooLong
    from rag.catalog import UnknownModelError
    from rag.state import AccessDenied, AuthError, StateError, StateUnavailable
    from rag.store import CollectionError, CollectionNotFound

    if isinstance(exc, AuthError):
        return 401, "authentication_error", "unauthenticated"
    if isinstance(exc, AccessDenied):
        return 403, "permission_error", "permission_denied"
    if isinstance(exc, (CollectionNotFound, JobNotFound)):
        return 404, "not_found_error", "not_found"
    if isinstance(exc, UnknownModelError):
        return 404, "invalid_request_error", "model_not_found"
    if isinstance(exc, PromptTooLong):
        return 422, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, InvalidInput):
        return 422, "invalid_request_error", "invalid_value"
    if isinstance(exc, NoModelAvailable) and exc.too_long:
        return 422, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, NoModelAvailable):
        return 503, "service_unavailable", "no_model_available"
    if isinstance(exc, StateUnavailable):   # names the database server: logged, the client gets a reference
        return 503, "service_unavailable", "state_unavailable"
    if isinstance(exc, StateError):
        return 422, "invalid_request_error", "invalid_value"
    if isinstance(exc, CollectionError):
        msg = str(exc)
        if "already exists" in msg:
            return 409, "invalid_request_error", "conflict"
        if "Invalid collection name" in msg:
            return 422, "invalid_request_error", "invalid_value"
        if "being written" in msg:
            return 409, "invalid_request_error", "busy"
        return 500, "server_error", "collection_unreadable"
    return 500, "server_error", None


def _message(exc: HybridRagError, status: int, action: str) -> str:
    """What an API client is told: the project's message, except where it would show server paths."""
    from rag.answer import NoModelAvailable
    from rag.errors import StoredDataError
    from rag.store import CollectionError, CollectionNotFound

    if isinstance(exc, NoModelAvailable):  # each endpoint's reason, without the URLs of internal endpoints
        reasons = "; ".join(f"{f['endpoint']} ({f['model']}): {_URL.sub('<url>', str(f['reason']))}"
                            for f in exc.fallbacks)
        return f"No model could answer. {reasons}"
    if isinstance(exc, CollectionNotFound):
        name = getattr(exc, "name", None)
        return (f"No collection named {name!r}: " if name else "No such collection: ") + (
            "list them with GET /v1/collections, or create it with POST /v1/collections.")
    if isinstance(exc, CollectionError) and status >= 500:  # damaged: what to do, without the server's paths
        return _PATH.sub("<data dir>", str(exc))
    if isinstance(exc, StoredDataError) or status >= 500:  # may name server files: logged, the client gets a ref
        ref = uuid.uuid4().hex[:8]
        log.error("%s failed (ref %s): %s", action, ref, exc)
        return f"{action} failed because of a problem on the server (ref {ref}); the server log has the details."
    return str(exc)


def error_response(exc: BaseException, action: str = "The request") -> JSONResponse:
    """The JSON response for any exception raised while serving a request."""
    if isinstance(exc, APIError):
        return JSONResponse(body(exc.message, exc.type, exc.code, exc.param), exc.status, headers=exc.headers)
    if isinstance(exc, HybridRagError):
        status, type_, code = _status_of(exc)
        headers = {"WWW-Authenticate": 'Bearer realm="hybrid-rag"'} if status == 401 else None
        return JSONResponse(body(_message(exc, status, action), type_, code, getattr(exc, "param", None)), status,
                            headers=headers)
    return JSONResponse(body(user_message(exc, action), "server_error"), 500)


def field_name(loc) -> str:
    """``("body", "temperature")`` -> ``temperature``; ``("body", "messages", 0, "role")`` -> ``messages[0].role``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def install(app) -> None:
    """Register the handlers on a FastAPI app."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(HybridRagError)
    async def _domain(request: Request, exc: HybridRagError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return JSONResponse(body("The request body is not valid JSON: send a JSON object with "
                                     "Content-Type: application/json.", "invalid_request_error", "invalid_json"), 422)
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        problems = "; ".join(f"{field_name(e.get('loc', ()))}: {e.get('msg')}" for e in errs[:5])
        return JSONResponse(body(f"Invalid request: {problems}.", "invalid_request_error", "invalid_value",
                                 field_name(first.get("loc", ()))), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        msg = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and request.url.path.startswith("/v1"):
            msg = f"No such endpoint: {request.method} {request.url.path}. See /docs for the API."
        return JSONResponse(body(msg, type_), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(exc, f"{request.method} {request.url.path}")


__all__ = ["APIError", "install", "error_response", "body", "field_name"]
