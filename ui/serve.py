"""`hybrid-rag serve`: serve the web app (127.0.0.1:7860 by default).

On first run (no collections in the data directory) it ingests the project's own documentation
(README and docs/) into the ``hybrid-rag-docs`` collection, so a newcomer can ask the app about itself
straight away, offline.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

from rag.errors import user_message

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)


def starter_files(root: Path) -> list[tuple[str, Path]]:
    """README(s) and docs/ (recursively) with a file type the config accepts."""
    from ingest.pipeline import iter_paths

    paths = [p for p in sorted(root.glob("README*")) if p.is_file()]
    if (root / "docs").is_dir():
        paths.append(root / "docs")
    out = []
    for name, p in iter_paths(paths):
        if p.suffix.lower() in (".md", ".markdown", ".txt", ".rst", ".html"):
            out.append((name if p.parent == root else f"docs/{name}", p))
    return out


def ensure_starter(settings, backend, root: Path | None = None) -> str | None:
    """Ingest the docs into the starter collection when there is no collection at all; return its name."""
    from rag.config import SOURCE_ROOT

    from .backend import STARTER_COLLECTION

    root = root or SOURCE_ROOT
    if backend.collection_names() or root is None:  # an installed package has no docs to index
        return None
    files = starter_files(root)
    if not files:
        log.info("first run: no README or docs/ found, so no starter collection")
        return None
    print(f"First run: indexing {len(files)} documentation files into '{STARTER_COLLECTION}'…", file=sys.stderr,
          flush=True)
    try:
        results = backend.ingest(STARTER_COLLECTION, files)
    except Exception as e:  # never block the app on this
        print(f"warning: could not build the starter collection: {user_message(e, 'The starter collection')}",
              file=sys.stderr)
        return None
    chunks = sum(r.chunks for r in results)
    print(f"'{STARTER_COLLECTION}' ready: {sum(r.ok for r in results)} files, {chunks} chunks.", file=sys.stderr)
    return STARTER_COLLECTION


def _warm(backend) -> None:
    """Load the embedder and embed the router's exemplars while the page loads, so the first answer (and
    ``/readyz``) does not wait."""
    try:
        backend.engine.embedder
        backend.engine.router.warm()
    except Exception as e:  # the first answer will try again and report it
        log.warning("router warm-up: %s", user_message(e, "Warming the router"))


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def run(args, settings) -> int:
    """Serve the API and the web app on one port for ``hybrid-rag serve`` (``args``: host, port, no_starter)."""
    import uvicorn

    from api import create_app

    from .auth import admin_configured, not_configured_message
    from .backend import Backend

    host, port = args.host, int(args.port)
    if not 1 <= port <= 65535:
        print(f"error: --port must be 1-65535, got {port}", file=sys.stderr)
        return 2
    if not _port_free(host, port):
        print(f"error: {host}:{port} is in use: stop the other server or pass --port N", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backend = Backend(settings)
    if not getattr(args, "no_starter", False):
        ensure_starter(settings, backend)
    if not admin_configured(settings):
        print(f"note: {not_configured_message(settings)}", file=sys.stderr)
    threading.Thread(target=_warm, args=(backend,), name="warm-router", daemon=True).start()
    app = create_app(settings, backend=backend, server_name=host, server_port=port)
    if app.state.service.keys.empty():
        print("note: the HTTP API (/v1) refuses every request until a key exists: "
              "`hybrid-rag keys create --name NAME --scope read|admin`.", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"Serving hybrid-rag on http://{shown}:{port} (web app at /, API at /v1, docs at /docs; "
          f"data: {settings.data_dir})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return 0


__all__ = ["run", "ensure_starter", "starter_files"]
