import numpy as np
import pytest

from rag.retrieve import Retriever, rrf
from rag.store import CollectionWriter, DocRecord, open_collection
from rag.types import Chunk

DOCS = {
    "cats": "Cats are small domesticated carnivorous mammals that purr and hunt mice.",
    "gpu": "A graphics processing unit accelerates matrix multiplication for deep learning.",
    "bread": "Sourdough bread is leavened with a fermented starter of flour and water.",
    "usd": "OpenUSD stages compose layers; prims are addressed by Sdf paths.",
    "rust": "The Rust borrow checker prevents data races at compile time.",
}


def test_rrf_by_hand():
    fused = rrf({"dense": [1, 2, 3], "sparse": [3, 1]}, {"dense": 1.0, "sparse": 1.0}, k=60)
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    weighted = rrf({"dense": [1], "sparse": [2]}, {"dense": 2.0, "sparse": 1.0}, k=0)
    assert weighted == {1: 2.0, 2: 1.0}


@pytest.fixture
def retriever(store_settings, embedder):
    settings = store_settings
    with CollectionWriter("tiny", settings, embedder_id=embedder.model_id, dim=embedder.dim) as w:
        for doc_id, text in DOCS.items():
            c = Chunk(id=f"{doc_id}#0", doc_id=doc_id, source=f"{doc_id}.md", text=text, start=0, end=len(text))
            w.add(DocRecord(doc_id, c.source, "", doc_id), [c], embedder.encode_documents([text]))
        w.commit()
    return Retriever(open_collection("tiny", settings), embedder, settings.retrieval)


@pytest.mark.parametrize("mode", ["sparse", "dense", "hybrid"])
def test_modes_find_the_right_document(retriever, mode):
    res = retriever.search("which processor speeds up neural network training matrix", mode=mode, k=3)
    assert res.hits[0].chunk.doc_id == "gpu"
    assert res.mode == mode and res.retrieval_ms > 0
    if mode == "sparse":  # sparse-only search does not embed the query (tests/test_query_path.py)
        assert res.query_vector is None
    else:
        assert res.query_vector is not None and res.query_vector.shape == (retriever.embedder.dim,)


def test_hits_carry_their_explanation(retriever):
    for fusion in ("convex", "rrf"):
        retriever.settings = retriever.settings.model_copy(update={"fusion": fusion})
        res = retriever.search("bread flour starter", mode="hybrid", k=5)
        top = res.hits[0]
        assert top.chunk.doc_id == "bread"
        assert top.fused_rank == 1 and top.dense_rank and top.sparse_rank
        assert top.dense_score is not None and top.sparse_score is not None
        assert [h.fused_rank for h in res.hits] == list(range(1, len(res.hits) + 1))
        assert all(a.score >= b.score for a, b in zip(res.hits, res.hits[1:]))
    # a chunk only the dense side found has no sparse rank
    res = retriever.search("feline pets", mode="hybrid", k=5)
    cat = next(h for h in res.hits if h.chunk.doc_id == "cats")
    assert cat.sparse_rank is None and cat.dense_rank is not None


def test_bad_parameters_are_clear_errors(retriever):
    with pytest.raises(ValueError, match="mode"):
        retriever.search("x", mode="fuzzy")
    with pytest.raises(ValueError, match="k must be"):
        retriever.search("x", k=0)


def test_rrf_is_the_same_on_both_backends(retriever):
    """RRF over the two lists each backend returns (with weights and k from the settings)."""
    retriever.settings = retriever.settings.model_copy(update={"fusion": "rrf", "dense_weight": 2.0, "rrf_k": 10})
    res = retriever.search("bread flour starter and purring cats", mode="hybrid", k=5)
    for h in res.hits:
        want = sum(w / (10 + r) for w, r in ((2.0, h.dense_rank), (0.3, h.sparse_rank)) if r is not None)
        assert h.score == pytest.approx(want)


def test_convex_on_milvus_uses_the_union_moments(retriever, backend):
    """Milvus cannot give corpus moments: z-scores over the union of both lists, exact scores on both sides."""
    if backend == "files":
        return  # the files backend's corpus-level z-scores: the test below
    retriever.settings = retriever.settings.model_copy(update={"fusion": "convex", "depth": 3})
    q = "pets that purr and bread made with flour"
    res = retriever.search(q, mode="hybrid", k=3)
    col, emb = retriever.collection, retriever.embedder
    by_doc = {c.doc_id: r for r, c in zip(*_all_rows(col))}
    qv = emb.encode_queries([q])[0]
    union = sorted(set(col.dense_search(qv, 3)[0]) | set(col.sparse_search(q, 3).rows))
    dense = col.dense_scores(qv, union)
    sparse = col.sparse_scores(q, union).astype(np.float64)
    s = retriever.settings
    z = s.dense_weight * (dense - dense.mean()) / dense.std() + s.sparse_weight * (sparse - sparse.mean()) / sparse.std()
    want = dict(zip(union, z))
    assert len(res.hits) == min(3, len(union))  # the hits come from the union of the two top-3 lists
    for h in res.hits:
        assert h.score == pytest.approx(want[by_doc[h.chunk.doc_id]], abs=1e-4)
        assert h.dense_score is not None and h.sparse_score is not None


def _all_rows(col):
    rows, _ = col.dense_search(np.ones(384, np.float32) / np.sqrt(384), col.size)
    return rows, col.chunks(rows)


def test_corpus_level_convex_matches_brute_force(retriever, backend):
    """Default fusion: z-scores over the whole collection, computed exactly for every candidate."""
    if backend == "milvus":
        return  # corpus moments are the files backend's; Milvus: the test above
    col, emb = retriever.collection, retriever.embedder
    retriever.settings = retriever.settings.model_copy(update={"fusion": "convex", "depth": 2})
    q = "pets that purr and bread made with flour"
    res = retriever.search(q, mode="hybrid", k=5)
    vecs = np.load(col.vdir / "vectors.npy")
    qv = emb.encode_queries([q])[0]
    dense = vecs @ qv
    sparse = col.sparse.scores(q)
    s = retriever.settings
    z = s.dense_weight * (dense - dense.mean()) / dense.std() + s.sparse_weight * (sparse - sparse.mean()) / sparse.std()
    got = {h.chunk.doc_id: h.score for h in res.hits}
    ids = [c.doc_id for c in col.chunks(range(col.size))]
    # every returned hit has its exact corpus-level fused score, and dense scores even where dense missed it
    for row, doc in enumerate(ids):
        if doc in got:
            assert got[doc] == pytest.approx(z[row], rel=1e-4, abs=1e-4)
    assert all(h.dense_score is not None and h.sparse_score is not None for h in res.hits)
    assert any(h.dense_rank is None or h.sparse_rank is None for h in res.hits)  # depth 2: some came from one side


def test_hybrid_runs_bm25_beside_the_query_embedding(retriever, monkeypatch):
    """Hybrid search hands BM25 to a pool thread while it embeds the query and searches the dense index; the
    hits are exactly those of the same search on one thread, and when every pool thread is taken the BM25 call
    runs on the caller's thread."""
    import threading

    import rag.parallel

    col, seen = retriever.collection, []
    search = col.sparse_search

    def spy(*args):
        seen.append(threading.current_thread())
        return search(*args)

    monkeypatch.setattr(col, "sparse_search", spy)
    q = "pets that purr and bread made with flour"
    for fusion in ("convex", "rrf"):
        retriever.settings = retriever.settings.model_copy(update={"fusion": fusion, "depth": 3})
        seen.clear()
        res = retriever.search(q, mode="hybrid", k=4)
        assert seen and seen[0] is not threading.current_thread() and "sparse_wait_ms" in res.timings
        monkeypatch.setattr(rag.parallel, "_SLOTS", threading.BoundedSemaphore(1))
        rag.parallel._SLOTS.acquire()  # every pool thread busy: the call runs here, when its result is asked for
        seen.clear()
        inline = retriever.search(q, mode="hybrid", k=4)
        assert seen == [threading.current_thread()]
        monkeypatch.undo()
        monkeypatch.setattr(col, "sparse_search", spy)

        def explain(r):
            return [(h.chunk.id, round(h.score, 6), h.dense_rank, h.sparse_rank, h.sparse_score) for h in r.hits]
        assert explain(res) == explain(inline) and len(res.hits) >= 3
