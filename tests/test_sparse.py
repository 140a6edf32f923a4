import json

import numpy as np

from rag.sparse import SparseIndex, Tokenizer, top_k


def _sample_texts(sample_corpus):
    recs = [json.loads(l) for l in sample_corpus.read_text().splitlines()]
    return [f"{r['title']}\n{r['text']}" for r in recs]


def test_tokenizer_stems_and_drops_stopwords():
    tok = Tokenizer()
    assert tok("The running dogs are running") == ["run", "dog", "run"]
    assert Tokenizer(stopwords=None, stemmer=None)("The cats") == ["the", "cats"]


def test_parity_with_rank_bm25_on_few_hundred_documents(sample_corpus):
    """Same tokens, same BM25 (Robertson IDF, k1=1.5, b=0.75): the top-10 must equal rank_bm25.BM25Okapi's."""
    from rank_bm25 import BM25Okapi

    texts = _sample_texts(sample_corpus)
    assert len(texts) >= 300
    tok = Tokenizer()
    corpus_tokens = tok.many(texts)
    ref = BM25Okapi(corpus_tokens, k1=1.5, b=0.75)
    ours = SparseIndex(method="robertson", k1=1.5, b=0.75).build_from_tokens(corpus_tokens)
    queries = [json.loads(l)["text"] for l in (sample_corpus.parent / "queries.jsonl").read_text().splitlines()]
    queries += ["protein folding in yeast cells", "vitamin D deficiency and bone density", "cancer"]
    n_docs = len(corpus_tokens)
    doc_freq = {}
    for toks in corpus_tokens:
        for t in set(toks):
            doc_freq[t] = doc_freq.get(t, 0) + 1
    checked = 0
    for q in queries:
        qt = tok(q)
        # The one place the formulas differ: a term in over half the documents has a negative Robertson
        # IDF, which BM25Okapi floors at epsilon * mean IDF and bm25s at 0. Such queries are left out.
        if not qt or any(2 * doc_freq.get(t, 0) > n_docs for t in qt):
            continue
        ref_scores = np.asarray(ref.get_scores(qt))
        # bm25s leaves out the constant (k1 + 1) factor, which changes no ranking
        np.testing.assert_allclose(ours.scores_for_tokens(qt) * 2.5, ref_scores, rtol=1e-4, atol=1e-4)
        ref_top = [int(i) for i in np.argsort(-ref_scores, kind="stable")[:10] if ref_scores[i] > 0]
        rows, _ = ours.search_tokens(qt, 10)
        assert rows.tolist() == ref_top, q
        checked += 1
    assert checked >= 35


def test_search_ranks_matching_document_first():
    idx = SparseIndex().build(["the cat sat on the mat", "dogs chase cats", "quantum chromodynamics"])
    rows, scores = idx.search("quantum physics", 3)
    assert rows.tolist() == [2]
    assert scores[0] > 0
    rows, _ = idx.search("the of and", 3)  # stopwords only
    assert rows.tolist() == []
    rows, _ = idx.search("zzzunknown", 3)
    assert rows.tolist() == []


def test_save_load_roundtrip_without_pickle(tmp_path):
    idx = SparseIndex(k1=1.2, b=0.5).build(["alpha beta", "beta gamma", "gamma delta"])
    idx.save(tmp_path / "s")
    for f in (tmp_path / "s").rglob("*.npy"):
        np.load(f, allow_pickle=False)  # plain arrays only
    back = SparseIndex.load(tmp_path / "s")
    assert back.params == idx.params and back.size == 3
    np.testing.assert_allclose(back.scores("gamma"), idx.scores("gamma"))


def test_empty_index():
    idx = SparseIndex().build([])
    rows, _ = idx.search("anything", 5)
    assert idx.size == 0 and rows.size == 0


def test_top_k_breaks_ties_by_row():
    rows, vals = top_k(np.array([1.0, 3.0, 3.0, 0.0, 2.0], dtype=np.float32), 3)
    assert rows.tolist() == [1, 2, 4] and vals.tolist() == [3.0, 3.0, 2.0]
    # rows tied at the k-th score: the lowest ones make the cut
    tied = np.array([0.5, 2.0] + [1.0] * 200 + [3.0], dtype=np.float32)
    for k in (1, 2, 3, 50):
        rows, _ = top_k(tied, k)
        assert rows.tolist() == [202, 1, *range(2, k)][:k]
