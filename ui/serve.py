"""`hybrid-rag serve`: serve the web app (127.0.0.1:7860 by default).

On first run (no collections in the data directory) it ingests the project's own documentation
(README and docs/) into the ``hybrid-rag-docs`` collection, readable by every signed-in user, so a newcomer can
ask the app about itself straight away, offline.

Everyone signs in. With no admin account yet, ``serve`` creates the first one (``admin.username``, ``admin``) when
``HYBRID_RAG_ADMIN_PASSWORD`` holds its password, and otherwise says how to create one
(``hybrid-rag users add NAME --role admin``). There is never a default password.
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
    try:  # every signed-in user may read the starter collection (an admin can change that in the Admin tab)
        backend.state.set_public(STARTER_COLLECTION, True)
    except Exception as e:
        print(f"warning: could not make '{STARTER_COLLECTION}' public: {user_message(e, 'The state database')}",
              file=sys.stderr)
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


def ensure_admin(settings, backend, environ=None) -> bool:
    """The first admin from ``admin.password_env`` when no admin exists; else a note on how to make one.
    False (and a message) when the variable holds a password the rules refuse."""
    from rag.state import StateError

    state = backend.state
    var = settings.admin.password_env or "HYBRID_RAG_ADMIN_PASSWORD"
    try:
        made = state.ensure_first_admin(environ)
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    if made is not None:
        print(f"Created the first admin account {made.name!r} with the password in {var}.", file=sys.stderr)
    elif not state.has_admin():
        print(f"note: no admin account exists yet, so nobody can manage users. Create one with "
              f"`hybrid-rag users add NAME --role admin`, or restart with {var} set (the first admin, "
              f"{settings.admin.username!r}, gets that password).", file=sys.stderr)
    return True


def _no_keys(backend) -> bool:
    try:
        return not backend.state.list_keys()
    except Exception:  # noqa: BLE001 - only a hint
        return False


def run(args, settings) -> int:
    """Serve the API and the web app on one port for ``hybrid-rag serve`` (``args``: host, port, no_starter)."""
    import uvicorn

    from api import create_app

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
    try:
        if not ensure_admin(settings, backend):
            return 2
    except Exception as e:  # the state database cannot be opened: say why, do not serve a page nobody can enter
        print(f"error: {user_message(e, 'Opening the state database')}", file=sys.stderr)
        return 2
    if not getattr(args, "no_starter", False):
        ensure_starter(settings, backend)
    threading.Thread(target=_warm, args=(backend,), name="warm-router", daemon=True).start()
    app = create_app(settings, backend=backend, server_name=host, server_port=port)
    if _no_keys(backend):
        print("note: the HTTP API (/v1) refuses every request until a key exists: "
              "`hybrid-rag keys create --name NAME --scope read|admin --user USER` (a key acts as its user).",
              file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"Serving hybrid-rag on http://{shown}:{port} (web app at /, API at /v1, docs at /docs; "
          f"data: {settings.data_dir})", file=sys.stderr, flush=True)
    # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-For/-Proto from 127.0.0.1 and replace the
    # peer address before the app sees it; the app reads those headers itself, only from auth.trusted_proxies
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                proxy_headers=False)
    return 0


__all__ = ["run", "ensure_starter", "ensure_admin", "starter_files"]
