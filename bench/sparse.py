"""BM25 search and build against other BM25 libraries, on one collection's own index and query tokens.

``ours``, ``ours_touched_only`` and ``bm25s_numba`` take turns query by query (load falls on them alike).
Every row gets the same pre-tokenised queries (the app's tokenizer: stopwords, stemming), the same k (the
retrieval depth) and runs on one thread, with warm-up calls (JIT compilation) left out of the timing:

- ``ours``: ``SparseIndex.search_tokens``, the app's numba posting-list top-k kernel;
- ``ours_touched_only``: the app's touched-rows kernel for every query, as every query was scored before
  issue 14 (queries with long posting lists now go block by block over every row instead);
- ``bm25s_numba``: bm25s' own numba backend, ``bm25s.BM25.load(dir, backend="numba")`` then
  ``retrieve(..., n_threads=1, backend_selection="numba")`` (its serial compiled path);
- ``bm25s_numpy``: ``bm25s.BM25.load(dir)`` (numpy backend) then ``retrieve(..., n_threads=0,
  backend_selection="numpy")``: in the calling thread (``n_threads=1`` would start a one-thread pool per call);
- ``rank_bm25``: rank-bm25's ``BM25Okapi(k1, b)`` (pure Python, rescans the corpus per query),
  ``get_scores`` then ``argpartition`` for the top k; on the first ``--rank-bm25-queries`` queries only, and
  skipped when the previous size predicts it would take over ``--rank-bm25-bound`` seconds. Its IDF is
  Okapi's, not Lucene's, so its scores differ; its cost does not.

Both bm25s rows load the very matrix the app saved (``<version>/sparse/bm25s``). Each baseline row carries
``x_ours_faster_p50``: its p50 over ours on the same queries.
"""
from __future__ import annotations

import time

import numpy as np

from .common import ratio, summary, timed, timed_interleaved


def query_tokens(col, queries: list[str]) -> list[list[str]]:
    """The queries as the app tokenises them, less those with no term in the index (they cost nothing)."""
    return [t for t in map(col.sparse.tokenizer, queries) if col.sparse.query_ids(t)]


def _bm25s(col, backend: str):
    import bm25s

    return bm25s.BM25.load(str(col.vdir / "sparse" / "bm25s"), backend=backend, show_progress=False)


def _vs(ours_ms: list[float], row: dict, ms: list[float]) -> dict:
    row.update(summary(ms))
    row["x_ours_faster_p50"] = ratio(float(np.median(ms)), float(np.median(ours_ms[:len(ms)])))
    return row


def search(col, q_tokens: list[list[str]], depth: int) -> dict:
    """The app's kernel and both bm25s backends; ``ours_ms`` (per query) is for :func:`rank_bm25`'s ratio.
    ``q_tokens``: queries with at least one term in the index (see :func:`query_tokens`)."""
    k = min(depth, col.size)
    numba_bm, numpy_bm = _bm25s(col, "numba"), _bm25s(col, "numpy")

    def ours(q):
        return col.sparse.search_tokens(q, k)

    def bm25s_numba(q):
        return numba_bm.retrieve([q], k=k, n_threads=1, backend_selection="numba", show_progress=False)

    def bm25s_numpy(q):
        return numpy_bm.retrieve([q], k=k, n_threads=0, backend_selection="numpy", show_progress=False)

    def ours_touched_only(q):  # every query over the rows it touches: the kernel's one pass before issue 14
        import rag.sparse

        share, rag.sparse.DENSE_PASS_SHARE = rag.sparse.DENSE_PASS_SHARE, float("inf")
        try:
            return col.sparse.search_tokens(q, k)
        finally:
            rag.sparse.DENSE_PASS_SHARE = share

    passes = col.sparse.dense_passes
    ms = timed_interleaved({"ours": ours, "ours_touched_only": ours_touched_only, "bm25s_numba": bm25s_numba},
                           q_tokens)
    ours_ms = ms["ours"]
    out: dict = {"k": k, "queries": len(q_tokens), "ours": summary(ours_ms), "ours_ms": ours_ms,
                 "ours_whole_collection_passes": f"{col.sparse.dense_passes - passes} of "
                                                 f"{3 + len(q_tokens)} calls (3 warm-up)",
                 "ours_touched_only": _vs(ours_ms, {}, ms["ours_touched_only"]),
                 "bm25s_numba": _vs(ours_ms, {}, ms["bm25s_numba"]),
                 "bm25s_numpy": _vs(ours_ms, {}, timed(bm25s_numpy, q_tokens))}
    # the same scores at every rank (rows may differ only among equal scores at the cut-off)
    same = 0
    for q in q_tokens[:50]:
        _, s = ours(q)
        ref = bm25s_numpy(q).scores[0][:10]
        m = min(10, len(s))
        same += bool(np.allclose(s[:m], ref[:m], rtol=1e-5))
    out["same_top10_scores_as_bm25s"] = f"{same}/{min(50, len(q_tokens))}"
    return out


def _token_lists(col) -> list[list[str]]:
    from rag.sparse import SparseIndex

    ids, offsets, vocab = SparseIndex.load_token_ids(col.vdir / "sparse")
    inv = np.empty(len(vocab), dtype=object)
    for tok, i in vocab.items():
        inv[i] = tok
    ids = np.asarray(ids)
    return [inv[ids[offsets[i]:offsets[i + 1]]].tolist() for i in range(len(offsets) - 1)]


def rank_bm25(col, q_tokens, depth: int, ours_ms, bound_s: float, prev: dict | None) -> dict:
    """rank-bm25 BM25Okapi, skipped when the previous size predicts it would take over ``bound_s``."""
    n = col.size
    k = min(depth, n)
    if prev and "skipped" in prev:
        return {"skipped": "skipped at a smaller size", "size": n}
    if prev and prev.get("p50_ms"):
        predicted = prev["p50_ms"] / 1000 * (n / prev["size"]) * len(q_tokens) + prev["build_s"] * n / prev["size"]
        if predicted > bound_s:
            return {"skipped": f"predicted {predicted:.0f}s (build + {len(q_tokens)} queries) > bound {bound_s:.0f}s",
                    "size": n}
    from rank_bm25 import BM25Okapi

    p = col.sparse.params
    lists = _token_lists(col)
    t = time.perf_counter()
    ref = BM25Okapi(lists, k1=p["k1"], b=p["b"])
    build = time.perf_counter() - t
    del lists

    def one(q):
        s = np.asarray(ref.get_scores(q))
        return np.argpartition(-s, k - 1)[:k]

    one(q_tokens[0])  # warm-up
    ms, deadline = [], time.perf_counter() + bound_s
    for q in q_tokens:
        t = time.perf_counter()
        one(q)
        ms.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() > deadline:
            break
    return _vs(ours_ms, {"build_s": round(build, 2), "size": n}, ms)


def build_times(col, max_bm25s: int) -> dict:
    """The BM25 matrix from the stored token ids: the app's vectorised builder against ``bm25s.BM25.index``
    (the latter up to ``max_bm25s`` rows)."""
    import bm25s

    from rag.sparse import SparseIndex

    ids, offsets, vocab = SparseIndex.load_token_ids(col.vdir / "sparse")
    ids = np.asarray(ids)
    p, n, out = col.sparse.params, len(offsets) - 1, {}
    t = time.perf_counter()
    SparseIndex(**p).build_from_ids(ids, offsets, vocab)
    out["ours_from_ids_s"] = round(time.perf_counter() - t, 2)
    if n <= max_bm25s:
        lists = [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(n)]
        t = time.perf_counter()
        bm25s.BM25(method=p["method"], k1=p["k1"], b=p["b"]).index((lists, vocab), show_progress=False)
        out["bm25s_index_from_ids_s"] = round(time.perf_counter() - t, 2)
        out["x_ours_faster"] = ratio(out["bm25s_index_from_ids_s"], out["ours_from_ids_s"])
    else:
        out["bm25s_index_from_ids_s"] = f"not run above --bm25s-build-max {max_bm25s}"
    return out


__all__ = ["build_times", "query_tokens", "rank_bm25", "search"]
