"""One ASGI app on one port: FastAPI serves /v1, health, readiness and metrics; Gradio is mounted at /."""
from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rag import metrics

from . import chat, documents, errors
from .errors import APIError
from .keys import KeyStore
from .security import GenerationSlots
from .service import Service

log = logging.getLogger(__name__)

_API_PREFIXES = ("/v1", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc")


class MetricsMiddleware:
    """Counts and times every request by route template and status (a pure ASGI middleware, so streaming
    responses and client disconnects pass through untouched). Paths outside the API count as ``ui``."""

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
            if path.startswith(_API_PREFIXES):
                route = scope.get("route")
                label = getattr(route, "path", None) or "unmatched"
            else:
                label = "ui"
            metrics.record_request(label, scope.get("method", "?"), status[0], time.perf_counter() - t0)


def readiness(svc: Service) -> tuple[bool, dict]:
    """(ready, checks): the embedder is loaded and every collection opens."""
    from rag.store.layout import collections_root

    checks: dict = {}
    loaded = svc.engine._embedder is not None  # loading it here would make the probe itself slow
    checks["embedder"] = "loaded" if loaded else "loading (the server warms it at start)"
    root = collections_root(svc.settings.data_dir)
    try:
        names = sorted(d.name for d in root.iterdir() if (d / "CURRENT").exists()) if root.is_dir() else []
    except OSError as e:
        checks["collections"] = f"cannot list {root}: {e.strerror or e}"
        return False, checks
    bad = []
    for n in names:
        try:
            svc.backend.open(n)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            bad.append({"collection": n, "error": json.loads(errors.error_response(e).body)["error"]["message"]})
    checks["collections"] = {"count": len(names), "unreadable": bad}
    return loaded and not bad, checks


def create_app(settings, *, backend=None, ui: bool = True, server_name: str = "127.0.0.1",
               server_port: int = 7860) -> FastAPI:
    """The API (and, with ``ui``, the Gradio app at /) over one :class:`ui.backend.Backend`."""
    from ui.backend import Backend

    backend = backend or Backend(settings)
    metrics.watch_jobs(backend.jobs)
    svc = Service(settings=settings, backend=backend, keys=KeyStore(settings.data_dir),
                  slots=GenerationSlots(settings.api.max_generations_per_key, settings.api.retry_after_s))
    app = FastAPI(title="hybrid-rag API", version=_version(), docs_url="/docs", redoc_url=None,
                  description="OpenAI-compatible chat with citations over hybrid (FAISS + BM25) retrieval, plus "
                              "search, collections and ingest jobs. Authenticate with `Authorization: Bearer KEY` "
                              "(keys: `hybrid-rag keys create`). See docs/api.md.")
    app.state.service = svc
    errors.install(app)
    app.add_middleware(MetricsMiddleware)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Collections readable and the embedder loaded (else 503)")
    def readyz():
        ready, checks = readiness(svc)
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    def prometheus():
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.include_router(chat.router)
    app.include_router(documents.router)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown(rest: str, request: Request):
        raise APIError(404, f"No such endpoint: {request.method} /v1/{rest}. See /docs for the API.",
                       type="not_found_error", code="not_found")

    if ui:
        import gradio as gr

        from ui.app import build_app

        demo, launch_kwargs = build_app(settings, backend=backend)
        app = gr.mount_gradio_app(app, demo, path="/", server_name=server_name, server_port=server_port,
                                   **launch_kwargs)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hybrid-rag")
    except PackageNotFoundError:
        return "0"


__all__ = ["create_app", "readiness"]
