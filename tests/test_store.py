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


def test_write_read_roundtrip(settings):
    with _writer(settings) as w:
        _add(w, "a", ["apples are red", "apples grow on trees"], 1)
        _add(w, "b", ["bananas are yellow"], 2)
        assert w.commit() == "v000001"
    col = open_collection("c", settings)
    assert col.size == 3 and col.dense.size == 3 and col.sparse.size == 3
    assert [c.id for c in col.chunks([2, 0])] == ["b#0", "a#0"]
    assert {d["doc_id"]: d["chunks"] for d in col.documents()} == {"a": 2, "b": 1}
    assert list_collections(settings.data_dir)[0]["chunks"] == 3
    manifest = json.loads((col.vdir / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["embedder"] == {"id": "test-embedder", "dim": DIM}


def test_replace_and_remove_keep_rows_consistent(settings):
    with _writer(settings) as w:
        _add(w, "a", ["alpha one", "alpha two"], 1)
        _add(w, "b", ["beta one"], 2)
        _add(w, "c", ["gamma one", "gamma two"], 3)
        w.commit()
    with _writer(settings) as w:
        assert w.existing_hash("a") == "sha-a-1"
        _add(w, "a", ["alpha new"], 4)  # replaces a's two chunks
        w.remove("b")
        w.commit()
    col = open_collection("c", settings)
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


def test_readers_keep_their_version(settings):
    with _writer(settings) as w:
        _add(w, "a", ["one"], 1)
        w.commit()
    old = open_collection("c", settings)
    with _writer(settings) as w:
        _add(w, "b", ["two"], 2)
        w.commit()
    new = open_collection("c", settings)
    assert old.size == 1 and new.size == 2
    assert old.chunks([0])[0].id == "a#0"


def test_embedder_mismatch_is_refused(settings):
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


def test_names_are_validated_and_missing_collections_explained(settings):
    for bad in ["../x", "", "a/b", ".hidden", "x" * 65, "a\x00b"]:
        with pytest.raises(CollectionError):
            validate_name(bad)
    with pytest.raises(CollectionNotFound, match="hybrid-rag ingest"):
        open_collection("nope", settings)


def test_delete(settings):
    with _writer(settings) as w:
        _add(w, "a", ["one"], 1)
        w.commit()
    delete_collection("c", settings.data_dir)
    assert list_collections(settings.data_dir) == []
    with pytest.raises(CollectionNotFound):
        delete_collection("c", settings.data_dir)
