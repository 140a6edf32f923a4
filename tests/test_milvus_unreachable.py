"""A Milvus server that cannot be reached (a closed loopback port, a real connection attempt through pymilvus):
the files collections still list and serve, the reason names the uri and the setting, and /readyz says so."""
import httpx
import numpy as np
import pytest

from rag.store import CollectionError, CollectionWriter, DocRecord, list_collections
from rag.types import Chunk

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


def _files_collection(settings):
    with CollectionWriter("kb", settings, embedder_id="e", dim=4) as w:
        w.add(DocRecord("a", "a.txt", "", "sha-a"), [Chunk(id="a#0", doc_id="a", source="a.txt", text="alpha", start=0,
                                                           end=5)], np.eye(4, dtype=np.float32)[:1])
        w.commit()


def test_files_collections_still_list_and_the_reason_says_what_to_set(settings):
    _files_collection(settings)  # store.backend is files: made before Milvus is configured
    settings.store.milvus.uri = CLOSED
    with pytest.raises(CollectionError) as e:
        list_collections(settings)
    assert CLOSED in str(e.value) and "store.milvus.uri" in str(e.value)
    errors: list[str] = []
    assert [c["name"] for c in list_collections(settings, errors=errors)] == ["kb"]
    assert len(errors) == 1 and CLOSED in errors[0]

    from ui.backend import Backend

    assert Backend(settings).collection_names() == ["kb"]  # the UI's drop-downs keep working


def test_readiness_reports_an_unreachable_milvus(settings, fake_nim):
    from reliability_kit import FakeEmbedder

    from api import create_app
    from rag.engine import Engine
    from rag.testing.server import ServerThread
    from ui.backend import Backend

    _files_collection(settings)
    settings.store.milvus.uri = CLOSED
    backend = Backend(settings, engine=Engine(settings, embedder=FakeEmbedder()))
    with ServerThread(create_app(settings, backend=backend, ui=False)) as srv:
        r = httpx.get(srv.url + "/readyz", timeout=30)
    backend.jobs.close(timeout=10)
    assert r.status_code == 503, r.text
    checks = r.json()["checks"]
    assert CLOSED in checks["milvus"] and checks["collections"]["count"] == 1 and not checks["collections"]["unreadable"]
