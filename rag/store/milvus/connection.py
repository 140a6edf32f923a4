"""Milvus connections: one shared ``MilvusClient`` per uri and token in this process; Milvus Lite (a file, one
process at a time) or a server at ``store.milvus.uri``."""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

from ..layout import CollectionError
from .records import _ensure_meta

# Milvus Lite has no server timestamps: pymilvus asks for one at every query_iterator, Lite's in-process gRPC server
# logs the refusal, pymilvus the fallback to a client-side one (harmless there); neither is shown
logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(lambda r: "mvccTs" not in r.getMessage())
logging.getLogger("grpc._server").addFilter(lambda r: "Method not implemented" not in r.getMessage())


def uri_of(settings) -> str:
    return settings.store.milvus.uri or str(Path(settings.data_dir) / "milvus.db")


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def in_use(settings) -> bool:
    """Whether Milvus can hold collections here: the backend is milvus, a server is configured, or the Milvus Lite
    file exists (so the files backend alone never starts Milvus)."""
    uri = uri_of(settings)
    return settings.store.backend == "milvus" or not is_lite(uri) or Path(uri).exists()


_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()


def client_args(settings) -> dict:
    return {"uri": uri_of(settings), "token": os.environ.get(settings.store.milvus.token_env, "")}


def client(settings):
    """The shared MilvusClient for ``store.milvus.uri`` (one per uri and token in this process)."""
    args = client_args(settings)
    key = f"{args['uri']}\0{args['token']}"
    with _CLIENTS_LOCK:
        c = _CLIENTS.get(key)
        if c is None:
            c = _CLIENTS[key] = _connect(**args)
        return c


def _connect(uri: str, token: str):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise CollectionError("The Milvus backend needs pymilvus and milvus-lite: "
                              "`pip install pymilvus milvus-lite` (both are dependencies of hybrid-rag).") from None
    how = ("set store.milvus.uri (HYBRID_RAG__STORE__MILVUS__URI) to a reachable server, e.g. http://host:19530, "
           "or back to null for Milvus Lite; docs/scale.md has a docker compose file for Milvus Standalone")
    if is_lite(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        if _locked_elsewhere(Path(uri)):
            raise CollectionError(
                f"The Milvus Lite file {uri} is open in another process, and Milvus Lite serves one process at a "
                "time: stop that process (a running `hybrid-rag serve`, say) and try again, or run Milvus "
                "Standalone for several processes (docs/scale.md).")
    try:
        c = MilvusClient(uri=uri, token=token, timeout=15)
        _ensure_meta(c)
        return c
    except CollectionError:
        raise
    except Exception as e:  # pymilvus raises MilvusException and ConnectionConfigException, grpc its own
        raise CollectionError(f"Milvus at {uri} cannot be used ({_reason(e)}): {how}.") from None


def _locked_elsewhere(path: Path) -> bool:
    """Whether another process holds the Milvus Lite data directory's LOCK (this process's own server is fine)."""
    if str(path.resolve()) in _lite_servers() or not (path / "LOCK").exists():
        return False
    fd = os.open(path / "LOCK", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _lite_servers() -> dict:
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return {}
    return server_manager_instance._servers


def _reason(e: Exception) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0][:300]


__all__ = ["client", "client_args", "in_use", "is_lite", "uri_of"]
