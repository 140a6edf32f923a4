"""Retrieval evaluation: metrics against pytrec_eval (trec_eval's own code), run files, configurations, saved
runs and comparisons, BEIR folders (duplicate texts keep their ids) and the CLI in-process."""
import json
import math
import random

import pytest

from rag.eval import (
    EvalResult,
    doc_ranking,
    doc_scores,
    load_qrels,
    load_queries,
    ndcg_at,
    parse_config,
    parse_configs,
    recall_at,
    score_query,
)
from rag.evalruns import (
    compare,
    compare_summary,
    list_saved,
    load,
    read_run,
    save,
    to_csv,
    write_run,
)
from rag.types import Chunk, Hit


def _hit(doc, score=0.0):
    return Hit(Chunk(id=f"{doc}#0", doc_id=doc, source=doc, text="", start=0, end=0), score=score)


def test_metrics_by_hand():
    m = score_query(["a", "x", "b"], {"a": 1, "b": 1})
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    assert m["recall@10"] == 1.0 and m["mrr@10"] == 1.0
    m = score_query(["x", "y", "a"], {"a": 1})
    assert m["mrr@10"] == pytest.approx(1 / 3) and m["ndcg@10"] == pytest.approx(1 / math.log2(4))
    assert score_query([], {"a": 1})["ndcg@10"] == 0.0


def test_graded_ndcg_uses_linear_gain_and_ignores_grades_at_or_below_zero():
    rel = {"a": 2, "b": 1, "c": 0, "d": -1, "e": 3}
    ranked = ["a", "d", "z", "b", "e"]
    dcg = 2 + 0 + 0 + 1 / math.log2(5) + 3 / math.log2(6)      # linear gain, d's -1 counts as 0
    idcg = 3 + 2 / math.log2(3) + 1 / 2                       # ideal from every judged document
    assert ndcg_at(ranked, rel, 10) == pytest.approx(dcg / idcg)
    exp_gain = (3 + 0 + 0 + 1 / math.log2(5) + 7 / math.log2(6)) / (7 + 3 / math.log2(3) + 1 / 2)
    assert ndcg_at(ranked, rel, 10) != pytest.approx(exp_gain)  # the old 2^rel - 1 gives another figure
    assert score_query(["c", "d"], {"c": 0, "d": -1}) == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0,
                                                          "mrr@10": 0.0}


def test_metrics_agree_with_pytrec_eval_on_graded_random_runs():
    """trec_eval (through pytrec_eval) on the same run: nDCG@k, recall@k and MRR@10 per query, with ties."""
    import pytrec_eval  # the test extra pins it

    rng = random.Random(13)
    docs = [f"d{i}" for i in range(150)]
    qrels, run = {}, {}
    for q in range(40):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([-1, 0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 25))}
        # coarse scores make ties, which trec_eval breaks by document id (descending); so does doc_scores
        hits = sorted((_hit(d, round(rng.random(), 1)) for d in rng.sample(docs, 120)), key=lambda h: -h.score)
        run[qid] = doc_scores(hits)
    measures = {"ndcg_cut.10", "ndcg_cut.5", "recall.10", "recall.100", "recip_rank"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(
        {q: {d: s for d, s in docs_} for q, docs_ in run.items()})
    for qid, rel in qrels.items():
        ranked = [d for d, _ in run[qid]]
        mine = score_query(ranked, rel)
        r = ref[qid]
        assert mine["ndcg@10"] == pytest.approx(r["ndcg_cut_10"], abs=1e-9)
        assert ndcg_at(ranked, rel, 5) == pytest.approx(r["ndcg_cut_5"], abs=1e-9)
        assert mine["recall@10"] == pytest.approx(r["recall_10"], abs=1e-9)
        assert mine["recall@100"] == pytest.approx(r["recall_100"], abs=1e-9)
        # trec_eval's recip_rank has no cut-off: equal whenever the first relevant is in the top 10
        first = next((i for i, d in enumerate(ranked) if rel.get(d, 0) > 0), None)
        if first is not None and first < 10:
            assert mine["mrr@10"] == pytest.approx(r["recip_rank"], abs=1e-9)
        else:
            assert mine["mrr@10"] == 0.0
    assert recall_at([], {"a": 1}, 10) == 0.0


def test_doc_ranking_max_pools_chunks_and_breaks_ties_as_trec_eval():
    assert doc_ranking([_hit("a", 3), _hit("b", 2), _hit("a", 1), _hit("c", 0.5)]) == ["a", "b", "c"]
    assert doc_scores([_hit("x", 1.0), _hit("y", 1.0), _hit("z", 0.2)]) == [("y", 1.0), ("x", 1.0), ("z", 0.2)]
    assert len(doc_scores([_hit(f"d{i}", -i) for i in range(150)])) == 100


def test_run_files_round_trip_and_score_the_same_in_trec_eval(tmp_path):
    run = {"q1": [("d2", 0.5), ("d1", 0.25), ("d9", 1 / 3 * 1e-7)], "q2": [("d1", -1.5)]}
    p = write_run(tmp_path / "hybrid.run", run, "hybrid")
    lines = p.read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 0.5 hybrid" and lines[3] == "q2 Q0 d1 1 -1.5 hybrid"
    assert all(len(line.split()) == 6 for line in lines)
    assert read_run(p) == run  # scores written exactly
    with pytest.raises(ValueError, match="white space"):
        write_run(tmp_path / "bad.run", {"q1": [("a doc", 1.0)]}, "x")


def test_configuration_names():
    c = parse_config("hybrid-rrf-1-2.5-k50")
    assert (c.mode, c.fusion, c.weights, c.k) == ("hybrid", "rrf", (1.0, 2.5), 50)
    assert parse_config("sparse").search_args() == {"mode": "sparse", "k": 300, "depth": 300}
    assert [c.name for c in parse_configs("sparse, dense,hybrid,sparse")] == ["sparse", "dense", "hybrid"]
    for bad in ("dense-rrf", "hybrid-foo", "sparse-0.5-0.5", "hybrid-0-0", "hybrid-k0", "", "../x"):
        with pytest.raises(ValueError, match="configuration|Configuration"):
            parse_configs(bad)


def test_loaders_reject_bad_files(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="q.jsonl:2"):
        load_queries(tmp_path / "q.jsonl")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\n")
    with pytest.raises(ValueError, match="qrels.tsv:3"):
        load_qrels(tmp_path / "qrels.tsv")
    (tmp_path / "bin.tsv").write_bytes(b"\xff\xfe\x00garbage\t\x00\n")
    with pytest.raises(ValueError, match="UTF-8"):
        load_qrels(tmp_path / "bin.tsv")


def _result(run_b_first):
    qrels = {"1": {"a": 1}, "2": {"b": 2, "c": 1}}
    runs = {"hybrid": {"1": [("a", 1.0)], "2": [(run_b_first, 1.0), ("x", 0.5)]}}
    return EvalResult({"1": "one", "2": "=HYPERLINK(\"x\")"}, qrels, runs, latency_ms={"hybrid": [1.0, 3.0]},
                      configs=[{"name": "hybrid", "mode": "hybrid"}])


def test_saved_runs_reload_and_compare(data_dir):
    a_id = save(_result("b"), data_dir, collection="kb")
    b_id = save(_result("x"), data_dir, collection="kb")
    listed = list_saved(data_dir)
    assert [e["id"] for e in listed] == sorted([a_id, b_id], reverse=True)
    meta = json.loads((data_dir / "eval-runs" / a_id / "metrics.json").read_text())
    assert meta["version"] == 1 and meta["summary"]["hybrid"]["queries"] == 2
    a, b = load(data_dir, a_id), load(data_dir, b_id)
    assert a.summary() == meta["summary"]
    rows = compare(a, b, "hybrid")
    assert rows[0]["query_id"] == "2" and rows[0]["delta"] < 0 and rows[1]["delta"] == 0
    assert compare_summary(rows)["worse"] == 1
    assert "'=HYPERLINK" in to_csv(rows)  # a formula in query text is not run by a spreadsheet
    with pytest.raises(ValueError, match="saved run id"):
        load(data_dir, "../../etc")


# -- against a real collection ----------------------------------------------------------------------------

DUP = "Sea otters hold hands while they sleep so that they do not drift apart."


def _beir_folder(root):
    root.mkdir()
    corpus = [{"_id": "otter-1", "title": "", "text": DUP}, {"_id": "otter-2", "title": "", "text": DUP},
              {"_id": "bees", "title": "Bees", "text": "Honey bees dance to tell the hive where flowers are."},
              {"_id": "rust", "title": "Rust", "text": "Iron rusts when it meets water and oxygen."}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "why do sea otters hold hands"}) + "\n"
                                        + json.dumps({"_id": "q2", "text": "how do bees share where flowers are"})
                                        + "\n")
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\totter-1\t1\nq1\totter-2\t2\nq2\tbees\t1\n")
    return root


def test_beir_corpus_keeps_duplicate_texts_under_each_id(settings, embedder, tmp_path, capsys):
    """Two records with the same text both land, both rank, both count; the CLI's --beir reuses the collection."""
    from rag.cli import main

    beir = _beir_folder(tmp_path / "otters")
    out = tmp_path / "runs"
    argv = ["eval", "--beir", str(beir), "--save-runs", str(out), "--json", "-q"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    metrics = json.loads(cap.out.strip().splitlines()[-1])
    assert "ingested" in cap.err
    assert sorted(p.name for p in out.iterdir()) == ["dense.run", "hybrid.run", "sparse.run"]
    for mode in ("sparse", "dense", "hybrid"):
        top2 = {d for d, _ in read_run(out / f"{mode}.run")["q1"][:2]}
        assert top2 == {"otter-1", "otter-2"}, mode
        assert metrics[mode]["ndcg@10"] == 1.0 and metrics[mode]["recall@10"] == 1.0
    from rag.store import open_collection

    assert {d["doc_id"] for d in open_collection("otters", settings).documents()} == {"otter-1", "otter-2", "bees",
                                                                                       "rust"}
    assert main(argv) == 0
    assert "reused" in capsys.readouterr().err
    # the same corpus under a name that holds something else is refused, and that collection is untouched
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "other", "text": "Something else."}) + "\n")
    assert main(["eval", "--beir", str(beir), "-q"]) == 2
    assert "other documents" in capsys.readouterr().err


def test_user_uploads_keep_content_dedupe(settings, embedder):
    from ingest.pipeline import ingest

    res = ingest("kb", [("a.txt", DUP.encode()), ("b.txt", DUP.encode())], settings=settings, embedder=embedder)
    assert [r.status for r in res] == ["added", "duplicate"]


def test_eval_cli_errors_say_what_to_do(settings, tmp_path, capsys):
    from rag.cli import main

    assert main(["eval", "--queries", "q.jsonl"]) == 2
    assert "--collection" in capsys.readouterr().err
    assert main(["eval", "--beir", str(tmp_path), "--configs", "hybrid-bogus"]) == 2
    assert "MODE[-FUSION]" in capsys.readouterr().err
    assert main(["eval", "--beir", str(tmp_path)]) == 2
    assert "corpus.jsonl" in capsys.readouterr().err
