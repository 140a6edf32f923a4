"""One ASGI app on one port: FastAPI serves /v1, health, readiness and metrics; Gradio is mounted at /."""
from __future__ import annotations

import contextlib
import json
import logging
import threading

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rag import metrics

from . import chat, documents, errors
from .errors import APIError
from .keys import KeyStore
from .middleware import Guard, Metrics
from .security import GenerationSlots
from .service import Service

log = logging.getLogger(__name__)


def readiness(svc: Service) -> tuple[bool, dict]:
    """(ready, checks): the embedder is loaded, every collection opens and Milvus (where in use) answers."""
    from rag.store.layout import collections_root

    checks: dict = {}
    loaded = svc.engine._embedder is not None  # loading it here would make the probe itself slow
    checks["embedder"] = "loaded" if loaded else "loading"
    if not loaded:
        _warm_embedder(svc)
    root = collections_root(svc.settings.data_dir)
    try:
        names = sorted(d.name for d in root.iterdir() if (d / "CURRENT").exists()) if root.is_dir() else []
    except OSError as e:
        checks["collections"] = f"cannot list the collections: {e.strerror or type(e).__name__}"
        return False, checks
    from rag.store import list_collections

    unreachable: list[str] = []
    names += [c["name"] for c in list_collections(svc.settings, errors=unreachable) if c["backend"] == "milvus"]
    if unreachable:
        checks["milvus"] = unreachable[0]
    bad = []
    for n in names:
        try:
            svc.backend.open(n)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            bad.append({"collection": n, "error": json.loads(errors.error_response(e).body)["error"]["message"]})
    checks["collections"] = {"count": len(names), "unreadable": bad}
    return loaded and not bad and not unreachable, checks


def _for_caller(request: Request, svc: Service, checks: dict) -> dict:
    """``checks`` as this caller may see them: the names (and reasons) of damaged collections only with the key
    of an admin user (the probe itself needs no key, and must not say which collections exist)."""
    bad = (checks.get("collections") or {}).get("unreadable") if isinstance(checks.get("collections"), dict) else None
    if not bad:
        return checks
    if request.headers.get("authorization"):
        from .security import identify

        try:
            if identify(request, svc.keys).user.is_admin:
                return checks
        except APIError:
            pass
    hidden = [{"collection": None, "error": "A collection cannot be opened; send an admin's API key "
                                            "(Authorization: Bearer KEY) to see which one and why."} for _ in bad]
    return {**checks, "collections": {**checks["collections"], "unreadable": hidden}}


_WARMING: set[int] = set()


def _warm_embedder(svc: Service) -> None:
    """Load the embedder in the background (once per engine), so readiness comes even if start-up warming failed."""
    if id(svc.engine) in _WARMING:
        return
    _WARMING.add(id(svc.engine))

    def load():
        try:
            svc.engine.embedder
        except Exception:  # noqa: BLE001 - readiness keeps saying "loading"; the log says why
            log.exception("loading the embedder failed")
        finally:
            _WARMING.discard(id(svc.engine))

    threading.Thread(target=load, name="warm-embedder", daemon=True).start()


def create_app(settings, *, backend=None, ui: bool = True, server_name: str = "127.0.0.1",
               server_port: int = 7860) -> FastAPI:
    """The API (and, with ``ui``, the Gradio app at /) over one :class:`ui.backend.Backend`."""
    from ui.backend import Backend

    backend = backend or Backend(settings)
    metrics.watch_jobs(backend.jobs)
    svc = Service(settings=settings, backend=backend, keys=KeyStore(backend.state),
                  slots=GenerationSlots(settings.api.max_generations_per_key, settings.api.retry_after_s))
    svc.engine.catalog  # loaded now, not inside the first async request that names a model

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        backend.jobs.close(timeout=10)  # queued uploads are marked cancelled ("the server stopped") on the way out

    app = FastAPI(title="hybrid-rag API", version=_version(), docs_url="/docs", redoc_url=None, lifespan=lifespan,
                  description="OpenAI-compatible chat with citations over hybrid (FAISS + BM25) retrieval, plus "
                              "search, collections and ingest jobs. Authenticate with `Authorization: Bearer KEY` "
                              "(keys: `hybrid-rag keys create --user USER`); a key acts as its user, with that "
                              "user's rights on each collection. See docs/api.md.")
    app.state.service = svc
    errors.install(app)
    lim = settings.limits
    app.add_middleware(Guard, service=svc, upload_cap=lim.max_files_per_upload * lim.max_file_bytes + 2**20)
    app.add_middleware(Metrics)  # outermost: refusals by the guard are counted too

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Collections readable and the embedder loaded (else 503)")
    def readyz(request: Request):
        ready, checks = readiness(svc)
        return JSONResponse({"ready": ready, "checks": _for_caller(request, svc, checks)},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    def prometheus():
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.include_router(chat.router)
    app.include_router(documents.router)

    routes = [r for r in (*chat.router.routes, *documents.router.routes) if isinstance(r, APIRoute)]

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                   include_in_schema=False)
    def unknown(rest: str, request: Request):
        allowed = sorted({m for r in routes if r.path_regex.match(request.url.path) for m in r.methods})
        if allowed:
            raise APIError(405, f"{request.method} is not allowed on /v1/{rest}: use {', '.join(allowed)}.",
                           code="method_not_allowed", headers={"Allow": ", ".join(allowed)})
        raise APIError(404, f"No such endpoint: {request.method} /v1/{rest}. See /docs for the API.",
                       type="not_found_error", code="not_found")

    if ui:
        import gradio as gr

        from ui.app import build_app
        from ui.signin import install

        demo, launch_kwargs = build_app(settings, backend=backend)
        auth_dependency = install(app, settings, backend)  # /login, /logout, GET / -> /login when signed out
        app = gr.mount_gradio_app(app, demo, path="/", server_name=server_name, server_port=server_port,
                                   auth_dependency=auth_dependency, **launch_kwargs)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hybrid-rag")
    except PackageNotFoundError:
        return "0"


__all__ = ["create_app", "readiness"]
