import json

import numpy as np
import pytest

from rag.store import (
    CollectionError,
    CollectionNotFound,
    CollectionWriter,
    DocRecord,
    delete_collection,
    list_collections,
    open_collection,
    validate_name,
)
from rag.types import Chunk

DIM = 8


def _chunks(doc_id, texts):
    return [Chunk(id=f"{doc_id}#{i}", doc_id=doc_id, source=f"{doc_id}.txt", text=t, start=0, end=len(t))
            for i, t in enumerate(texts)]


def _vecs(n, seed):
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _writer(settings, name="c"):
    return CollectionWriter(name, settings, embedder_id="test-embedder", dim=DIM)


def _add(w, doc_id, texts, seed=0, sha=None):
    w.add(DocRecord(doc_id, f"{doc_id}.txt", "", sha or f"sha-{doc_id}-{seed}"), _chunks(doc_id, texts), _vecs(len(texts), seed))


def _ids(col, rows):
    return [c.id for c in col.chunks(rows)]


def test_write_read_roundtrip(store_settings, backend):
    settings = store_settings
    with _writer(settings) as w:
        _add(w, "a", ["apples are red", "apples grow on trees"], 1)
        _add(w, "b", ["bananas are yellow"], 2)
        assert w.commit() == ("v000001" if backend == "files" else "g000001")
    col = open_collection("c", settings)
    assert col.backend == backend and col.size == 3 and col.counts() == {"chunks": 3, "documents": 2}
    rows, scores = col.dense_search(_vecs(1, 2)[0], 3)
    assert _ids(col, rows)[0] == "b#0" and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert _ids(col, rows[::-1]) == _ids(col, rows)[::-1]  # chunks() keeps the order asked for
    assert {d["doc_id"]: d["chunks"] for d in col.documents()} == {"a": 2, "b": 1}
    assert [c.id for c in col.document_chunks("a")] == ["a#0", "a#1"]
    assert [(c["name"], c["backend"], c["chunks"]) for c in list_collections(settings)] == [("c", backend, 3)]
    assert col.manifest["embedder"] == {"id": "test-embedder", "dim": DIM}
    exported = list(col.export())
    assert [(r.doc_id, [c.id for c in ch]) for r, ch, _ in exported] == [("a", ["a#0", "a#1"]), ("b", ["b#0"])]
    np.testing.assert_allclose(exported[0][2], _vecs(2, 1), atol=1e-6)
    if backend == "files":
        assert col.dense.size == 3 and col.sparse.size == 3
        assert [c.id for c in col.chunks([2, 0])] == ["b#0", "a#0"]
        manifest = json.loads((col.vdir / "manifest.json").read_text())
        assert manifest["format"] == 1 and manifest["embedder"] == {"id": "test-embedder", "dim": DIM}


def test_sparse_search_and_the_scores_of_other_rows(store_settings):
    with _writer(store_settings) as w:
        _add(w, "a", ["gamma rays", "delta wing"], 1)
        _add(w, "b", ["gamma gamma burst", "nothing here"], 2)
        w.commit()
    col = open_collection("c", store_settings)
    by_id = {c.id: r for r, c in zip(*_all_rows(col))}
    hits = col.sparse_search("gamma", 1)
    assert _ids(col, hits.rows) == ["b#0"] and hits.scores[0] > 0
    # the scores of rows outside the top list (what hybrid search asks for once its BM25 and dense lists are in)
    of = col.sparse_scores("gamma", [by_id["a#0"], by_id["a#1"], by_id["b#0"]])
    assert 0 < of[0] < hits.scores[0] and of[1] == 0  # a#0 has the term once, a#1 not at all
    np.testing.assert_allclose(of[2], hits.scores[0], rtol=1e-5)
    assert col.sparse_scores("gamma", []).shape == (0,) and col.sparse_scores("unknownword", [by_id["a#0"]])[0] == 0


def _all_rows(col):
    rows, _ = col.dense_search(_vecs(1, 0)[0], col.size)
    return rows, col.chunks(rows)


def test_replace_and_remove_keep_rows_consistent(store_settings, backend):
    settings = store_settings
    with _writer(settings) as w:
        _add(w, "a", ["alpha one", "alpha two"], 1)
        _add(w, "b", ["beta one"], 2)
        _add(w, "c", ["gamma one", "gamma two"], 3)
        w.commit()
    with _writer(settings) as w:
        assert w.existing_hash("a") == "sha-a-1" and w.doc_with_hash("sha-b-2") == "b"
        _add(w, "a", ["alpha new"], 4)  # replaces a's two chunks
        w.remove("b")
        assert w.doc_with_hash("sha-b-2") is None
        w.commit()
    col = open_collection("c", settings)
    assert col.size == 3 and col.counts() == {"chunks": 3, "documents": 2}
    rows, _ = col.dense_search(_vecs(1, 4)[0], 1)
    assert _ids(col, rows) == ["a#0"] and col.chunks(rows)[0].text == "alpha new"
    assert sorted(c.id for c in col.chunks(col.sparse_search("gamma", 5).rows)) == ["c#0", "c#1"]
    assert col.sparse_search("beta", 5).rows == []
    if backend == "milvus":
        assert col.version == "g000002"
        return
    assert col.version == "v000002"
    assert col.size == 3 == col.dense.size == col.sparse.size
    ids = [c.id for c in col.chunks(range(col.size))]
    assert ids == ["c#0", "c#1", "a#0"]
    # every row's vector is the one that was written for that chunk
    vecs = np.load(col.vdir / "vectors.npy")
    np.testing.assert_allclose(vecs[2], _vecs(1, 4)[0])
    np.testing.assert_allclose(vecs[0:2], _vecs(2, 3))
    _, rows = col.dense.search(_vecs(1, 4), 1)
    assert rows[0, 0] == 2
    srows, _ = col.sparse.search("gamma", 5)
    assert sorted(srows.tolist()) == [0, 1]


def test_interrupted_save_leaves_previous_version_loadable(settings, monkeypatch):
    with _writer(settings) as w:
        _add(w, "a", ["first version"], 1)
        w.commit()
    from rag.store import reader, writer

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(writer.SparseIndex, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        with _writer(settings) as w:
            _add(w, "b", ["second version"], 2)
            w.commit()
    monkeypatch.undo()
    reader._CACHE.clear()
    col = open_collection("c", settings)
    assert col.version == "v000001" and col.size == 1
    # a crash can also leave a half-written directory behind: it is ignored and cleaned by the next write
    half = col.path / ".tmp-v000002-999"
    half.mkdir()
    (half / "manifest.json").write_text("{")
    assert open_collection("c", settings).version == "v000001"
    with _writer(settings) as w:
        _add(w, "b", ["second version"], 2)
        assert w.commit() == "v000002"
    assert not half.exists()


def test_only_last_two_versions_are_kept(settings):
    for i in range(4):
        with _writer(settings) as w:
            _add(w, f"d{i}", [f"text {i}"], i)
            w.commit()
    col = open_collection("c", settings)
    assert sorted(p.name for p in col.path.iterdir() if p.name.startswith("v")) == ["v000003", "v000004"]
    assert col.size == 4


def test_readers_keep_their_version(store_settings):
    settings = store_settings
    with _writer(settings) as w:
        _add(w, "a", ["one"], 1)
        w.commit()
    old = open_collection("c", settings)
    with _writer(settings) as w:
        _add(w, "b", ["two"], 2)
        w.commit()
    new = open_collection("c", settings)
    assert old.size == 1 and new.size == 2 and old.version != new.version
    assert [d["doc_id"] for d in old.documents()] == ["a"]
    assert [d["doc_id"] for d in new.documents()] == ["a", "b"]


def test_embedder_mismatch_is_refused(store_settings):
    settings = store_settings
    with _writer(settings) as w:
        _add(w, "a", ["one"], 1)
        w.commit()
    w = CollectionWriter("c", settings, embedder_id="other", dim=DIM)
    with pytest.raises(CollectionError, match="new collection"):
        with w:
            pass


def test_every_failure_releases_the_writer_lock(settings):
    """A refused or failed writer never leaves the collection locked: the next writer gets in at once."""
    from rag.store.layout import writer_lock

    with _writer(settings) as w:
        _add(w, "a", ["one"], 1)
        w.commit()
    for make in (lambda: CollectionWriter("c", settings, embedder_id="other", dim=DIM),  # embedder mismatch
                 lambda: CollectionWriter("new", settings)):  # no embedder for a new collection
        with pytest.raises(CollectionError):
            with make():
                pass
    (settings.data_dir / "collections" / "c" / "v000001" / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError):
        with _writer(settings):
            pass
    for name in ("c", "new"):
        with writer_lock(settings.data_dir / "collections" / name, timeout=0.5):
            pass  # CollectionError("being written by another ingest") if a lock had leaked


def test_names_are_validated_and_missing_collections_explained(store_settings):
    settings = store_settings
    for bad in ["../x", "", "a/b", ".hidden", "x" * 65, "a\x00b"]:
        with pytest.raises(CollectionError):
            validate_name(bad)
    with pytest.raises(CollectionNotFound, match="hybrid-rag ingest"):
        open_collection("nope", settings)


def test_delete(store_settings):
    settings = store_settings
    with _writer(settings) as w:
        _add(w, "a", ["one"], 1)
        w.commit()
    delete_collection("c", settings)
    assert list_collections(settings) == []
    with pytest.raises(CollectionNotFound):
        delete_collection("c", settings)
    with pytest.raises(CollectionNotFound):
        open_collection("c", settings)
    with _writer(settings) as w:  # the name can be used again
        _add(w, "b", ["two"], 2)
        w.commit()
    assert [d["doc_id"] for d in open_collection("c", settings).documents()] == ["b"]


def test_a_collection_keeps_its_backend(settings, milvus_uri):
    """store.backend only decides where new collections go: both kinds are listed, opened and written."""
    settings.store.milvus.uri = milvus_uri
    try:
        with _writer(settings, "in-files") as w:
            _add(w, "a", ["one"], 1)
            w.commit()
        settings.store.backend = "milvus"
        with _writer(settings, "in-milvus") as w:
            _add(w, "b", ["two"], 2)
            w.commit()
        with _writer(settings, "in-files") as w:  # an existing files collection stays in files
            _add(w, "c", ["three"], 3)
            w.commit()
        settings.store.backend = "files"
        assert [(c["name"], c["backend"], c["documents"]) for c in list_collections(settings)] == [
            ("in-files", "files", 2), ("in-milvus", "milvus", 1)]
        assert open_collection("in-milvus", settings).backend == "milvus"
        assert open_collection("in-files", settings).backend == "files"
    finally:
        delete_collection("in-milvus", settings)


def test_a_gpu_index_on_milvus_lite_is_refused_with_the_fix(settings, milvus_uri):
    settings.store.backend, settings.store.milvus.uri = "milvus", milvus_uri
    settings.store.milvus.index_type = "GPU_CAGRA"
    with pytest.raises(CollectionError, match="Milvus Lite .* is CPU-only: use one of HNSW"):
        with _writer(settings, "gpu"):
            pass
