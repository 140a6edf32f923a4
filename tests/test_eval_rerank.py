"""Rerank on/off in retrieval evaluation: ``-rerank`` configurations against the fake rerank NIM (real HTTP on
loopback; it scores a passage by how many of the query's words it has). The set is built so that hybrid search
ranks two short paraphrases above the judged document (a long page whose one line has every query word) and the
reranker puts it first: the metrics differ, the run file holds the reranked order; a failing rerank NIM is
counted per query and scored in fused order; without a rerank endpoint the configuration is refused."""
from __future__ import annotations

import json

import pytest

from rag.errors import InvalidInput
from rag.eval import ndcg_at, parse_config
from rag.evalruns import read_run

FILLER = "Thread blocks are scheduled on streaming multiprocessors and memory bandwidth limits the kernels. " * 5
CORPUS = [
    {"_id": "notes", "title": "Lab notes",
     "text": FILLER + "Keywords: how herons hunt fish, shallow water, dawn. " + FILLER},
    {"_id": "egret", "title": "Wading birds",
     "text": "Wading birds such as the heron catch their prey in the marsh at first light."},
    {"_id": "stork", "title": "Storks",
     "text": "Storks and herons stalk frogs and minnows along muddy riverbanks early in the morning."},
    {"_id": "bread", "text": "Sourdough bread rises thanks to wild yeast in the starter."},
    {"_id": "gpu", "text": "A GPU runs thousands of threads and speeds up matrix multiplication."},
]
QUERIES = [{"_id": "q1", "text": "how do herons hunt fish in shallow water at dawn"},
           {"_id": "q2", "text": "what makes sourdough bread rise"}]
QRELS = {"q1": {"notes": 1}, "q2": {"bread": 1}}


@pytest.fixture
def beir(tmp_path):
    d = tmp_path / "herons"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in CORPUS))
    (d / "queries.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QUERIES))
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{doc}\t{g}\n" for q, rel in QRELS.items() for doc, g in rel.items()))
    return d


def _config(tmp_path, base_url) -> str:
    cfg = tmp_path / "rerank.yaml"
    cfg.write_text(f"rerank:\n  base_url: {base_url}\n  top_n: 50\n  timeout_s: 10.0\n")
    return str(cfg)


def _eval(capsys, *argv) -> tuple[int, dict | None, str, str]:
    from rag.cli import main

    rc = main(list(argv))
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    return rc, json.loads(lines[-1]) if rc == 0 and "--json" in argv else None, cap.out, cap.err


def test_hybrid_rerank_reorders_and_its_metrics_differ_from_hybrid(settings, beir, fake_nim, tmp_path, capsys):
    runs = tmp_path / "runs"
    rc, metrics, out, err = _eval(capsys, "--config", _config(tmp_path, fake_nim.base_url), "eval", "--beir",
                                  str(beir), "--configs", "hybrid,hybrid-rerank", "--save-runs", str(runs), "-q",
                                  "--json")
    assert rc == 0, err
    assert sorted(p.name for p in runs.iterdir()) == ["hybrid-rerank.run", "hybrid.run"]
    fused, reranked = read_run(runs / "hybrid.run"), read_run(runs / "hybrid-rerank.run")
    assert fused["q1"][0][0] != "notes"                       # hybrid ranks a paraphrase first
    assert reranked["q1"][0][0] == "notes"                    # the reranker puts the judged page first
    assert [d for d, _ in reranked["q2"]][:1] == ["bread"]
    for run in reranked.values():                             # the run file's scores hold the reranked order
        scores = [s for _, s in run]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    h, r = metrics["hybrid"], metrics["hybrid-rerank"]
    assert r["ndcg@10"] == 1.0 and r["mrr@10"] == 1.0 and h["ndcg@10"] < 1.0 and h["mrr@10"] < 1.0
    assert (r["rerank_applied"], r["rerank_fallbacks"]) == (2, 0) and "rerank_applied" not in h
    for name, run in (("hybrid", fused), ("hybrid-rerank", reranked)):   # the run files score as --json says
        mean = sum(ndcg_at([d for d, _ in run[q]], QRELS[q], 10) for q in QRELS) / len(QRELS)
        assert round(mean, 4) == metrics[name]["ndcg@10"], name
    # one ranking request per query, each with the query and the configuration's fused chunks
    assert [req["json"]["query"]["text"] for req in fake_nim.rank_requests] == [q["text"] for q in QUERIES]
    assert all(len(req["json"]["passages"]) >= len(CORPUS) for req in fake_nim.rank_requests)
    assert "hybrid-rerank: reranked 2 of 2 queries" in out and "scored in fused order" not in out


def test_a_failing_rerank_is_counted_per_query_and_scored_in_fused_order(settings, beir, fake_nim, tmp_path, capsys):
    from rag.testing.fake_nim import RankScript

    fake_nim.ranking = RankScript(status=500)
    rc, metrics, out, err = _eval(capsys, "--config", _config(tmp_path, fake_nim.base_url), "eval", "--beir",
                                  str(beir), "--configs", "hybrid,hybrid-rerank", "-q", "--json")
    assert rc == 0, err
    h, r = metrics["hybrid"], metrics["hybrid-rerank"]
    assert (r["rerank_applied"], r["rerank_fallbacks"]) == (0, 2)
    assert {m: r[m] for m in ("ndcg@10", "recall@10", "mrr@10")} == {m: h[m] for m in ("ndcg@10", "recall@10", "mrr@10")}
    assert "hybrid-rerank: the rerank call failed for 2 of 2 queries, scored in fused order: HTTP 500 (2x)" in out
    assert len(fake_nim.rank_requests) == 2


def test_saved_runs_keep_the_fallbacks_and_the_tab_shows_them(settings, beir, fake_nim, tmp_path):
    from rag.engine import Engine
    from rag.eval import (
        load_qrels,
        load_queries,
        parse_configs,
        reranker_for,
        run_configs,
    )
    from rag.evalruns import load, save
    from rag.evalset import ensure_collection
    from rag.testing.fake_nim import RankScript
    from ui.evaluate import table_rows

    settings.rerank.base_url = fake_nim.base_url
    engine = Engine(settings)
    ensure_collection("herons", beir / "corpus.jsonl", settings=settings, embedder=engine.embedder)
    configs = parse_configs("hybrid,hybrid-rerank")
    fake_nim.ranking = RankScript(status=500)              # the first query's call fails, the second's does not
    settings.rerank.timeout_s = 30.0                       # (no timing in this test: a loaded machine is slow)
    calls = []

    def progress(name, i, n):
        calls.append(name)
        if name == "hybrid-rerank":
            fake_nim.ranking = RankScript()

    result = run_configs(engine.retriever("herons"), load_queries(beir / "queries.jsonl"),
                         load_qrels(beir / "qrels.tsv"), configs, progress=progress,
                         reranker=reranker_for(configs, settings))
    got = result.rerank["hybrid-rerank"]
    assert (got["applied"], got["fallbacks"]) == (1, 1) and list(got["reasons"].values()) == [1], got
    assert "500" in next(iter(got["reasons"])), got
    again = load(settings.data_dir, save(result, settings.data_dir, collection="herons"))
    assert again.summary() == result.summary()
    rows = {r[0]: r for r in table_rows(again)}
    assert rows["hybrid-rerank"][-1] == "1 of 2 (1 fell back to fused order)" and rows["hybrid"][-1] == "–"


def test_rerank_without_an_endpoint_is_refused_with_what_to_set(settings, beir, monkeypatch, capsys):
    from rag.eval import parse_configs, reranker_for
    from ui.evaluate import presets_for

    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    rc, _, out, err = _eval(capsys, "eval", "--beir", str(beir), "--configs", "hybrid,dense-k50-rerank", "-q")
    assert rc == 2
    assert "dense-k50-rerank: no rerank endpoint is configured: set rerank.base_url" in err and "NVIDIA_API_KEY" in err
    assert "ingested" not in err and not (settings.data_dir / "collections").exists()   # refused before any work
    assert presets_for(settings)[0] == ["sparse", "dense", "hybrid", "hybrid-rrf", "hybrid-convex"]
    with pytest.raises(InvalidInput, match="no reranker given"):
        from rag.eval import run_configs

        run_configs(None, {}, {}, parse_configs("hybrid-rerank"))
    # the hosted key is enough (whether the endpoint answers is seen per query)
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-test")
    assert reranker_for(parse_configs("hybrid-rerank"), settings).where == "hosted"
    settings.rerank.enabled = True
    assert presets_for(settings) == (["sparse", "dense", "hybrid", "hybrid-rrf", "hybrid-convex", "hybrid-rerank"],
                                     ["sparse", "dense", "hybrid", "hybrid-rerank"])


def test_rerank_configuration_names():
    c = parse_config("hybrid-rrf-1-1-k100-rerank")
    assert (c.mode, c.fusion, c.weights, c.k, c.rerank) == ("hybrid", "rrf", (1.0, 1.0), 100, True)
    assert parse_config("hybrid").rerank is False and parse_config("sparse-rerank").rerank is True
    with pytest.raises(InvalidInput, match=r"\[-rerank\]"):
        parse_config("hybrid-rerank-k10")
