import math

import pytest

from rag.eval import doc_ranking, load_qrels, load_queries, score_query
from rag.types import Chunk, Hit


def test_metrics_by_hand():
    m = score_query(["a", "x", "b"], {"a": 1, "b": 1})
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    assert m["recall@10"] == 1.0 and m["mrr@10"] == 1.0
    m = score_query(["x", "y", "a"], {"a": 1})
    assert m["mrr@10"] == pytest.approx(1 / 3) and m["ndcg@10"] == pytest.approx(1 / math.log2(4))
    assert score_query([], {"a": 1})["ndcg@10"] == 0.0


def test_doc_ranking_max_pools_chunks():
    def hit(doc):
        return Hit(Chunk(id=f"{doc}#0", doc_id=doc, source=doc, text="", start=0, end=0), score=0)

    assert doc_ranking([hit("a"), hit("b"), hit("a"), hit("c")]) == ["a", "b", "c"]


def test_loaders_reject_bad_files(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="q.jsonl:2"):
        load_queries(tmp_path / "q.jsonl")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\n")
    with pytest.raises(ValueError, match="qrels.tsv:3"):
        load_qrels(tmp_path / "qrels.tsv")
