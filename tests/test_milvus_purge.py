"""Milvus has no transactions: a commit hides the rows it replaced or removed at once, and deletes them only
``rag.store.milvus.writer.PURGE_AFTER_S`` later, so a search that began on the generation before still reads every
row it found (the race the reader/writer stress test in test_reliability_crash.py hit: a reader's rows deleted
between its search and its chunk fetch). A real embedded Milvus (Milvus Lite); no mocks."""
import numpy as np
import pytest

from rag.store import CollectionWriter, DocRecord, milvus, open_collection
from rag.types import Chunk

DIM = 8


@pytest.fixture
def backend():
    return "milvus"


def _add(w, doc_id, texts, seed):
    chunks = [Chunk(id=f"{doc_id}#{i}", doc_id=doc_id, source=f"{doc_id}.txt", text=t, start=0, end=len(t))
              for i, t in enumerate(texts)]
    x = np.random.default_rng(seed).standard_normal((len(texts), DIM)).astype(np.float32)
    w.add(DocRecord(doc_id, f"{doc_id}.txt", "", f"sha-{doc_id}-{seed}"), chunks,
          x / np.linalg.norm(x, axis=1, keepdims=True))


def _rows_of(settings, doc_id) -> int:
    col = open_collection("p", settings)
    return len(milvus.client(settings).query(col._mname, filter=f'doc_id == "{doc_id}"', output_fields=["pk"]))


def test_replaced_rows_stay_readable_until_the_purge_is_due(store_settings, monkeypatch):
    settings = store_settings
    with CollectionWriter("p", settings, embedder_id="e", dim=DIM) as w:
        _add(w, "a", ["alpha one", "alpha two"], 1)
        _add(w, "b", ["beta one"], 2)
        w.commit()
    old = open_collection("p", settings)
    old_rows = old.sparse_search("alpha", 5).rows
    assert len(old_rows) == 2

    with CollectionWriter("p", settings, embedder_id="e", dim=DIM) as w:  # a replace and a removal
        _add(w, "a", ["alpha new"], 3)
        w.remove("b")
        w.commit()
    new = open_collection("p", settings)
    assert new.counts() == {"chunks": 1, "documents": 1}
    assert [c.text for c in new.chunks(new.sparse_search("alpha", 5).rows)] == ["alpha new"]
    assert new.sparse_search("beta", 5).rows == []
    assert [d["doc_id"] for d in new.documents()] == ["a"]
    # the search begun on the generation before still reads what it found
    assert sorted(c.text for c in old.chunks(old_rows)) == ["alpha one", "alpha two"]
    assert _rows_of(settings, "a") == 3 and _rows_of(settings, "b") == 1  # hidden, not yet deleted

    with CollectionWriter("p", settings, embedder_id="e", dim=DIM) as w:  # dedupe sees the visible state only
        assert w.existing_hash("a") == "sha-a-3" and not w.has_document("b")
    monkeypatch.setattr(milvus.writer, "PURGE_AFTER_S", 0.0)
    with CollectionWriter("p", settings, embedder_id="e", dim=DIM):  # a writer purges what is due
        pass
    assert _rows_of(settings, "a") == 1 and _rows_of(settings, "b") == 0
    latest = open_collection("p", settings)
    assert latest.manifest["pending"] == [] and latest.counts() == {"chunks": 1, "documents": 1}
