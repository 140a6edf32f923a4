import numpy as np
import pytest

from rag.retrieve import Retriever, convex, rrf
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


def test_convex_by_hand():
    fused = convex({"dense": ([1, 2], np.array([1.0, 0.0])), "sparse": ([2, 3], np.array([4.0, 2.0]))},
                   {"dense": 0.5, "sparse": 0.5})
    # z-scores: dense 1 -> +1, 2 -> -1 ; sparse 2 -> +1, 3 -> -1 ; absent -> the list's minimum (-1)
    assert fused[1] == pytest.approx(0.5 * 1 + 0.5 * -1)
    assert fused[2] == pytest.approx(0.5 * -1 + 0.5 * 1)
    assert fused[3] == pytest.approx(0.5 * -1 + 0.5 * -1)


@pytest.fixture
def retriever(settings, embedder):
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


def test_corpus_level_convex_matches_brute_force(retriever):
    """Default fusion: z-scores over the whole collection, computed exactly for every candidate."""
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
