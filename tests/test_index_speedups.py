"""The retrieval speed-ups against their references: the vectorised BM25 builder and the compiled top-k
against bm25s, stored token ids against a fresh build, IVF/quantised FAISS against brute force, the
incremental store write against a full one, the ONNX embedder against sentence-transformers."""
import json

import numpy as np
import pytest

from rag.config import DenseSettings
from rag.dense import DenseIndex
from rag.sparse import SparseIndex, Tokenizer, top_k
from rag.store import CollectionWriter, DocRecord, open_collection
from rag.store.writer import _write_vectors
from rag.types import Chunk


def _texts(sample_corpus):
    return [f"{r['title']}\n{r['text']}" for r in map(json.loads, sample_corpus.read_text().splitlines())]


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


QUERIES = ["protein folding in yeast cells", "vitamin D deficiency bone", "cancer cell", "the the cell cell",
           "zzzunknown", "T cells and the immune response to infection"]


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_vectorised_build_equals_bm25s_index(sample_corpus, method):
    import bm25s

    tok = Tokenizer()
    corpus = tok.many(_texts(sample_corpus))
    ours = SparseIndex(method=method, k1=1.2, b=0.75).build_from_tokens(corpus)
    ref = bm25s.BM25(method=method, k1=1.2, b=0.75)
    ref.index(corpus, show_progress=False)
    for q in QUERIES:
        qt = tok(q)
        want = ref.get_scores([t for t in qt if t in ref.vocab_dict]) if any(t in ref.vocab_dict for t in qt) \
            else np.zeros(len(corpus))
        np.testing.assert_allclose(ours.scores_for_tokens(qt), want, rtol=1e-5, atol=1e-5)


@pytest.fixture(params=["touched-rows", "whole-collection"])
def kernel_pass(request, monkeypatch):
    """Both compiled kernels: over the rows a query touches, and block by block over every row as queries with
    long posting lists go (forced here for every query, or never)."""
    import rag.sparse

    monkeypatch.setattr(rag.sparse, "DENSE_PASS_SHARE", 1e18 if request.param == "touched-rows" else 0.0)
    return request.param


def _passes_took_effect(index, kernel_pass, queries):
    assert index.dense_passes == (queries if kernel_pass == "whole-collection" else 0)


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
def test_compiled_top_k_equals_numpy_top_k(sample_corpus, kernel_pass, method):
    texts = _texts(sample_corpus)
    fast = SparseIndex(method=method, backend="numba").build(texts)
    slow = SparseIndex(method=method, backend="numpy").build(texts)
    rng = np.random.default_rng(0)
    vocab = list(fast._bm25.vocab_dict)
    queries = [fast.tokenizer(q) for q in QUERIES] + [list(rng.choice(vocab, 4)) for _ in range(30)]
    for qt in queries:
        for k in (1, 10, 1000):
            r1, s1 = fast.search_tokens(qt, k)
            r2, s2 = slow.search_tokens(qt, k)
            assert r1.tolist() == r2.tolist()
            np.testing.assert_allclose(s1, s2, rtol=1e-6)
    _passes_took_effect(fast, kernel_pass, 3 * sum(bool(fast.query_ids(qt)) for qt in queries))
    # ties are broken by the lower row, as top_k does
    tied = SparseIndex(backend="numba").build(["alpha beta", "alpha beta", "gamma", "alpha beta"])
    assert tied.search("alpha", 2)[0].tolist() == [0, 1]
    # ... also when a lower row with the heap root's score comes later (touched rows go term by term)
    tied = SparseIndex(backend="numba").build(["alpha", "beta", "alpha", "beta", "gamma"])
    assert tied.search("beta alpha", 2)[0].tolist() == [0, 1]
    assert tied.search("beta alpha", 3)[0].tolist() == [0, 1, 2]


def test_compiled_fusion_inputs_equal_the_full_score_array(sample_corpus, kernel_pass):
    """The kernel's score moments are what fusion would read off the full array."""
    texts = _texts(sample_corpus)
    fast = SparseIndex(backend="numba").build(texts)
    for q in QUERIES:
        qt = fast.tokenizer(q)
        full = fast.scores_for_tokens(qt)
        rows, vals, (mean, std) = fast.search_tokens_moments(qt, 25)
        np.testing.assert_allclose([mean, std], [full.astype(np.float64).mean(), full.astype(np.float64).std()],
                                   rtol=1e-5, atol=1e-9)
        want_rows, want_vals = top_k(full, 25)
        assert rows.tolist() == want_rows.tolist()
        slow = SparseIndex(backend="numpy").build(texts).search_tokens_moments(qt, 25)
        assert slow[0].tolist() == rows.tolist()
        np.testing.assert_allclose(slow[2], (mean, std), rtol=1e-5, atol=1e-9)
    _passes_took_effect(fast, kernel_pass, sum(bool(fast.query_ids(fast.tokenizer(q))) for q in QUERIES))


def test_compiled_kernels_across_blocks(kernel_pass):
    """A collection of several kernel blocks (``rag.sparse.BLOCK`` rows each): top-k and the moments equal the
    full score array's, also with ties across blocks; ``scores_of`` rows spread over every block too."""
    import rag.sparse

    rng = np.random.default_rng(3)
    n = 2 * rag.sparse.BLOCK + 123
    words = [f"w{i:03d}x" for i in range(300)]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    docs = [list(rng.choice(words, rng.integers(1, 12), p=zipf / zipf.sum())) for _ in range(n)]
    docs[5] = docs[rag.sparse.BLOCK + 7] = docs[n - 1] = ["w299x", "w298x"]  # equal scores in three blocks
    fast = SparseIndex(backend="numba", stopwords=None, stemmer=None).build_from_tokens(docs)
    rows_of = np.concatenate([rng.choice(n, 50, replace=False), [0, rag.sparse.BLOCK, n - 1]])
    queries = [["w000x"], ["w001x", "w002x", "w050x"], ["w299x", "w298x"], ["w010x", "w010x", "w200x"]]
    for qt in queries:
        full = fast.scores_for_tokens(qt).astype(np.float64)
        np.testing.assert_allclose(fast.scores_of(qt, rows_of), full[rows_of], rtol=1e-6)
        for k in (1, 3, 100):
            rows, vals, (mean, std) = fast.search_tokens_moments(qt, k)
            assert rows.tolist() == top_k(full, k)[0].tolist()
            np.testing.assert_allclose([mean, std], [full.mean(), full.std()], rtol=1e-5, atol=1e-9)
    assert fast.search_tokens(["w299x", "w298x"], 2)[0].tolist() == [5, rag.sparse.BLOCK + 7]
    _passes_took_effect(fast, kernel_pass, 3 * len(queries) + 1)


@pytest.mark.parametrize("method", ["lucene", "bm25l"])
def test_scores_of_rows_equal_the_full_score_array(sample_corpus, method):
    """``scores_of`` (a binary search per term, for the dense candidates BM25's top list missed) gives the full
    array's value at every row asked for: rows with and without the terms, repeated rows, repeated terms."""
    texts = _texts(sample_corpus)
    rng = np.random.default_rng(2)
    for backend in ("numba", "numpy"):
        idx = SparseIndex(method=method, backend=backend).build(texts)
        for q in QUERIES + ["zzzunknownword", ""]:
            qt = idx.tokenizer(q)
            full = idx.scores_for_tokens(qt)
            rows = np.concatenate([rng.choice(len(texts), 60, replace=False), np.flatnonzero(full)[:20], [0, 0]])
            got = idx.scores_of(qt, rows)
            assert got.dtype == np.float32 and got.shape == rows.shape
            np.testing.assert_allclose(got, full[rows], rtol=1e-6, atol=1e-7)
        assert idx.scores_of(idx.tokenizer(QUERIES[0]), []).shape == (0,)


def test_rebuild_from_stored_token_ids_equals_fresh_build(tmp_path, sample_corpus):
    texts = _texts(sample_corpus)
    old = SparseIndex().build(texts[:200])
    old.save(tmp_path / "s")
    stored = SparseIndex.load_token_ids(tmp_path / "s")
    keep = np.array([i for i in range(200) if i % 7])
    new = SparseIndex().rebuilt(keep, SparseIndex().tokenizer.many(texts[200:260]), stored=stored)
    fresh = SparseIndex().build([texts[i] for i in keep] + texts[200:260])
    assert new.size == fresh.size == len(keep) + 60
    for q in QUERIES:
        np.testing.assert_allclose(new.scores(q), fresh.scores(q), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("approx,storage", [("ivf", "flat"), ("ivf", "fp16"), ("ivf", "sq8"), ("ivf", "pq"),
                                            ("hnsw", "sq8"), ("hnsw", "fp16")])
def test_approximate_indexes_have_high_recall(approx, storage, tmp_path):
    rng = np.random.default_rng(1)
    # pq: 4-bit codes lose the order of isotropic noise inside a cluster (a few dozen big clusters: recall@10
    # 0.34), which chunk embeddings do not look like; many small topics, queries near the data, do
    topics = 400 if storage == "pq" else 40
    centres = _unit(rng, topics, 32)
    X = centres[rng.integers(0, topics, 4000)] + 0.3 * _unit(rng, 4000, 32)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    Q = _unit(rng, 40, 32) if storage != "pq" else X[rng.integers(0, 4000, 40)] + 0.3 * _unit(rng, 40, 32)
    idx = DenseIndex(32, DenseSettings(exact_max=1000, approx=approx, storage=storage, ivf_nprobe=16, hnsw_ef_search=128)).build(X)
    assert idx.kind == approx
    want = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    _, rows = idx.search(Q, 10)
    top = rows
    if storage == "pq":  # the codes find the candidates; the collection ranks them by the stored vectors
        _, cand = idx.search(Q, idx.candidates(10))
        top = np.array([c[np.argsort(-(X[c] @ q), kind="stable")[:10]] for c, q in zip(cand, Q)])
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, want)]) >= 0.9
    idx.save(tmp_path / "d")
    back = DenseIndex.load(tmp_path / "d", DenseSettings(ivf_nprobe=16, hnsw_ef_search=128))
    assert (back.kind, back.storage, back.approx) == (approx, storage, approx)
    np.testing.assert_array_equal(back.search(Q, 10)[1], rows)
    assert back.memory_bytes() > 0


@pytest.mark.parametrize("pool_free", [True, False])
def test_one_ivf_query_in_two_halves_finds_what_one_scan_finds(pool_free, monkeypatch):
    """A single query's cells are scanned in two halves (one on a pool thread when one is free, else both on
    the caller's): the merged list is the list of one scan over all the cells."""
    import threading

    import rag.parallel
    from rag.dense import _single_thread_search

    if not pool_free:
        monkeypatch.setattr(rag.parallel, "_SLOTS", threading.BoundedSemaphore(1))
        rag.parallel._SLOTS.acquire()
    rng = np.random.default_rng(3)
    X = _unit(rng, 4000, 32)
    idx = DenseIndex(32, DenseSettings(exact_max=1000, approx="ivf", storage="sq8", ivf_nprobe=9)).build(X)
    assert idx.kind == "ivf"
    for q in _unit(rng, 20, 32):
        s1, r1 = idx.search(q, 50)
        s2, r2 = _single_thread_search(idx.index, q[None], 50)
        assert sorted(r1[0].tolist()) == sorted(r2[0].tolist()) and (np.diff(s1[0]) <= 0).all()
        np.testing.assert_allclose(s1[0], s2[0], rtol=1e-6)
    # fewer rows than k in the scanned cells: no -1 rows come back
    tiny = DenseIndex(32, DenseSettings(exact_max=10, approx="ivf", storage="sq8", ivf_nprobe=2)).build(X[:400])
    _, rows = tiny.search(X[0], 400)
    assert (rows >= 0).all() and 0 < rows.shape[1] < 400


@pytest.mark.parametrize("storage", ["sq8", "pq"])
def test_quantised_candidates_are_ranked_by_their_stored_vectors(storage, store_settings):
    """An IVF-SQ8 or IVF-PQ collection: the codes find the candidates (for pq, half as many again as asked), the
    stored float32 vectors give their scores and order (exact scores: fusion reuses them), k rows come back."""
    if store_settings.store.backend != "files":
        return
    store_settings.dense.exact_max, store_settings.dense.storage = 100, storage
    rng = np.random.default_rng(4)
    X = _unit(rng, 1200, 32)
    with CollectionWriter(storage, store_settings, embedder_id="test-embedder", dim=32) as w:
        for i in range(0, 1200, 100):
            chunks = [Chunk(id=f"d{i}#{j}", doc_id=f"d{i}", source=f"d{i}.md", text=f"text {i} {j}", start=0, end=5)
                      for j in range(100)]
            w.add(DocRecord(f"d{i}", f"d{i}.md", "", f"h{i}"), chunks, X[i:i + 100])
        w.commit()
    col = open_collection(storage, store_settings)
    assert (col.dense.kind, col.dense.storage) == ("ivf", storage) and col.exact_dense_scores
    assert col.dense.candidates(20) == (100 if storage == "pq" else 20) and col.dense.candidates(200) == (
        300 if storage == "pq" else 200)
    for q in _unit(rng, 10, 32):
        rows, scores = col.dense_search(q, 20)
        assert len(rows) == 20
        np.testing.assert_allclose(scores, np.asarray(col._vectors)[rows] @ q, rtol=1e-5, atol=1e-6)
        assert (np.diff(scores) <= 0).all()
        _, found = col.dense.search(q, col.dense.candidates(20))
        exact = np.asarray(col._vectors)[found[0]] @ q  # the best 20 of the candidates, by exact score
        assert sorted(rows) == sorted(found[0][np.argsort(-exact, kind="stable")[:20]].tolist())


def test_pq_storage_needs_ivf():
    with pytest.raises(ValueError, match="needs approx ivf"):
        DenseSettings(approx="hnsw", storage="pq")
    assert DenseIndex(32, DenseSettings(approx="hnsw")).storage == "sq8"  # auto with HNSW


def test_ivf_grows_in_place_until_it_needs_retraining():
    rng = np.random.default_rng(2)
    idx = DenseIndex(16, DenseSettings(exact_max=100, approx="ivf")).build(_unit(rng, 1000, 16))
    assert idx.fits(3000) and not idx.fits(5000) and not idx.fits(50)
    idx.add(_unit(rng, 10, 16))
    assert idx.size == 1010


def test_write_vectors_streams_the_base_file(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", base)
    new = rng.standard_normal((3, 8)).astype(np.float32)
    _write_vectors(tmp_path / "b.npy", tmp_path / "a.npy", np.zeros(0, np.int64), new, 8)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.concatenate([base, new]))
    _write_vectors(tmp_path / "c.npy", tmp_path / "a.npy", np.array([0, 7]), new, 8)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.concatenate([np.delete(base, [0, 7], 0), new]))


def test_incremental_commit_equals_a_full_build(settings, sample_corpus):
    texts = _texts(sample_corpus)[:120]
    rng = np.random.default_rng(4)
    vecs = _unit(rng, len(texts), 8)

    def write(name, batches):
        for batch in batches:
            with CollectionWriter(name, settings, embedder_id="e", dim=8) as w:
                for i in batch:
                    c = Chunk(id=f"d{i}#0", doc_id=f"d{i}", source=f"d{i}", text=texts[i], start=0, end=1)
                    w.add(DocRecord(f"d{i}", f"d{i}", "", f"h{i}"), [c], vecs[i:i + 1])
                w.commit()
        return open_collection(name, settings)

    inc = write("inc", [range(0, 100), range(100, 120)])
    full = write("full", [range(0, 120)])
    build = inc.manifest["build"]
    assert build["sparse_tokens_reused"] and build["dense_grown_in_place"]
    assert set(build["seconds"]) >= {"chunk_store", "tokenise", "vectors", "dense", "sparse"}
    for q in QUERIES:
        r1, s1 = inc.sparse.search(q, 20)
        r2, s2 = full.sparse.search(q, 20)
        assert r1.tolist() == r2.tolist()
        np.testing.assert_allclose(s1, s2, rtol=1e-5)
    np.testing.assert_array_equal(np.load(inc.vdir / "vectors.npy"), np.load(full.vdir / "vectors.npy"))


@pytest.mark.slow
def test_onnx_embedder_matches_sentence_transformers(tmp_path):
    from rag.embed import OnnxEmbedder, get_embedder

    embedder = get_embedder("local", backend="torch")

    texts = ["Vitamin D deficiency is linked to bone loss.", "short",
             "A much longer passage about T cells, cytokines and the immune response " * 8]
    ref = embedder.encode_documents(texts)
    fp32 = OnnxEmbedder(cache_dir=tmp_path, quantize=False)
    np.testing.assert_allclose(fp32.encode_documents(texts), ref, atol=2e-4)
    int8 = OnnxEmbedder(cache_dir=tmp_path, quantize=True)
    cos = (int8.encode_queries(texts) * ref).sum(1)
    assert cos.min() > 0.97
    assert fp32.model_id == embedder.model_id and fp32.dim == embedder.dim
    assert fp32.tokenizer("hello")["input_ids"] == embedder.tokenizer("hello")["input_ids"]


@pytest.mark.gpu("torch")
def test_gpu_embedding_matches_cpu():
    from rag.embed import LocalEmbedder

    texts = ["GPU embedding path", "same vectors as on the CPU"]
    gpu = LocalEmbedder(device="cuda").encode_documents(texts)
    cpu = LocalEmbedder(device="cpu").encode_documents(texts)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)


def test_staging_many_documents_dedupes_in_constant_time(settings):
    """Staging uses dicts, not scans: replacing, removing and hash lookups still behave as before."""
    with CollectionWriter("many", settings, embedder_id="e", dim=8) as w:
        vec = np.ones((1, 8), np.float32)
        for i in range(3000):
            c = Chunk(id=f"d{i}#0", doc_id=f"d{i}", source="s", text=f"text number {i}", start=0, end=1)
            w.add(DocRecord(f"d{i}", "s", "", f"h{i}"), [c], vec)
        assert w.existing_hash("d2999") == "h2999" and w.doc_with_hash("h5") == "d5"
        c = Chunk(id="d5#0", doc_id="d5", source="s", text="replaced", start=0, end=1)
        w.add(DocRecord("d5", "s", "", "h5b"), [c], vec)
        assert w.existing_hash("d5") == "h5b" and w.doc_with_hash("h5") is None
        w.remove("d7")
        assert not w.has_document("d7") and w.doc_with_hash("h7") is None
        w.commit()
    col = open_collection("many", settings)
    assert col.size == 2999 and col.chunks([col.size - 1])[0].text == "replaced"
