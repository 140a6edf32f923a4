"""`hybrid-rag migrate`: a collection copied between the store backends, vectors and chunks as they are."""
import numpy as np
import pytest
from reliability_kit import FakeEmbedder

from ingest.pipeline import ingest
from rag.cli import main
from rag.retrieve import Retriever
from rag.store import CollectionError, list_collections, open_collection

DOCS = {f"note-{i}.md": f"# Note {i}\n\nHerons and storks number {i}; the heron waits at dawn near reeds {i % 3}."
        for i in range(12)}


def _search(col, emb, settings, q, mode):
    return [(h.chunk.id, round(h.score, 4)) for h in Retriever(col, emb, settings.retrieval).search(q, mode=mode).hits]


def test_migrate_there_and_back_keeps_every_chunk_and_vector(settings, milvus_uri, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_RAG__STORE__MILVUS__URI", milvus_uri)
    settings.store.milvus.uri = milvus_uri
    emb = FakeEmbedder()
    ingest("kb", [(n, t.encode()) for n, t in DOCS.items()], settings=settings, embedder=emb)
    assert main(["--data-dir", str(settings.data_dir), "migrate", "kb", "--to", "milvus"]) == 0
    out = capsys.readouterr().out
    assert "copied 'kb' to 'kb-milvus' (milvus)" in out and "12 documents" in out and "source is unchanged" in out
    src, dst = open_collection("kb", settings), open_collection("kb-milvus", settings)
    assert (src.backend, dst.backend) == ("files", "milvus")
    def docs(col):  # added_at is the copy's own
        return [{k: v for k, v in d.items() if k != "added_at"} for d in col.documents()]

    assert dst.counts() == src.counts() and docs(dst) == docs(src)
    theirs = {r.doc_id: (r, c, v) for r, c, v in dst.export()}
    assert len(theirs) == 12
    for r1, c1, v1 in src.export():
        r2, c2, v2 = theirs[r1.doc_id]
        assert r1 == r2 and c1 == c2
        np.testing.assert_array_equal(v1, v2)  # not re-embedded
    # the same tokens and Lucene's BM25 with the source's k1 and b: the same sparse ranking (Milvus's scores carry
    # the constant (k1 + 1) factor that bm25s leaves out)
    for q in ("heron reeds 2", "storks number 7"):
        assert [i for i, _ in _search(dst, emb, settings, q, "sparse")] == [
            i for i, _ in _search(src, emb, settings, q, "sparse")]
        assert [i for i, _ in _search(dst, emb, settings, q, "dense")] == [
            i for i, _ in _search(src, emb, settings, q, "dense")]
    assert main(["--data-dir", str(settings.data_dir), "migrate", "kb-milvus", "--to", "files", "--as", "kb2"]) == 0
    back = open_collection("kb2", settings)
    assert back.backend == "files" and back.counts() == src.counts()
    assert _search(back, emb, settings, "heron reeds 2", "hybrid") == _search(src, emb, settings, "heron reeds 2",
                                                                                "hybrid")
    assert [(c["name"], c["backend"]) for c in list_collections(settings)] == [
        ("kb", "files"), ("kb-milvus", "milvus"), ("kb2", "files")]
    # a target that exists is refused, and nothing is touched
    assert main(["--data-dir", str(settings.data_dir), "migrate", "kb", "--to", "milvus"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(CollectionError, match="--as"):
        from rag.store import migrate

        migrate("kb", settings, "files", "kb2")
    from rag.store import delete_collection

    delete_collection("kb-milvus", settings)
