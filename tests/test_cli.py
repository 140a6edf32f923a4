"""The CLI as a user runs it: the installed `hybrid-rag` console script in a subprocess."""
import json
import subprocess

import pytest

pytestmark = pytest.mark.slow


def run(bin_, *args, data_dir, check=True):
    p = subprocess.run([bin_, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr + p.stdout
    return p


def test_ingest_search_eval_roundtrip(hybrid_rag_bin, data_dir, tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "gpus.md").write_text("# GPUs\n\nA GPU runs thousands of threads and speeds up matrix multiplication.\n")
    (docs / "sub" / "bread.txt").write_text("Sourdough bread rises thanks to wild yeast in the starter.\n")
    (docs / "sub" / "empty.txt").write_text("")
    out = run(hybrid_rag_bin, "ingest", "--collection", "kb", str(docs), data_dir=data_dir).stdout
    assert "2 of 3 files ingested" in out and "empty.txt" in out

    res = json.loads(run(hybrid_rag_bin, "search", "--collection", "kb", "--json", "--k", "2",
                         "what makes bread rise", data_dir=data_dir).stdout)
    top = res["hits"][0]
    assert top["doc_id"] == "sub/bread.txt" and top["source"] == "sub/bread.txt"
    assert top["rank"] == 1 and top["dense_rank"] and top["sparse_rank"]
    for mode in ("sparse", "dense"):
        res = json.loads(run(hybrid_rag_bin, "search", "-c", "kb", "--mode", mode, "--json", "GPU threads",
                             data_dir=data_dir).stdout)
        assert res["mode"] == mode and res["hits"][0]["doc_id"] == "gpus.md"

    listed = json.loads(run(hybrid_rag_bin, "collections", "--json", data_dir=data_dir).stdout)
    assert listed[0]["name"] == "kb" and listed[0]["documents"] == 2

    missing = run(hybrid_rag_bin, "search", "-c", "nope", "x", data_dir=data_dir, check=False)
    assert missing.returncode == 2 and "hybrid-rag ingest" in missing.stderr

    run(hybrid_rag_bin, "collections", "--delete", "kb", data_dir=data_dir)
    assert json.loads(run(hybrid_rag_bin, "collections", "--json", data_dir=data_dir).stdout) == []


def test_eval_prints_json_last_line(hybrid_rag_bin, data_dir, tmp_path):
    import itertools
    from pathlib import Path

    sample = Path(__file__).parent / "data" / "scifact_sample"
    # a small slice keeps this quick: the judged documents of 5 queries plus 20 others
    qrels = [l.split("\t") for l in (sample / "qrels.tsv").read_text().splitlines()[1:]]
    queries = [json.loads(l) for l in (sample / "queries.jsonl").read_text().splitlines()][:5]
    keep_q = {q["_id"] for q in queries}
    judged = {d for q, d, _ in qrels if q in keep_q}
    docs = [json.loads(l) for l in (sample / "corpus.jsonl").read_text().splitlines()]
    chosen = [d for d in docs if d["_id"] in judged] + list(itertools.islice((d for d in docs if d["_id"] not in judged), 20))
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        "\t".join(r) + "\n" for r in qrels if r[0] in keep_q))
    run(hybrid_rag_bin, "ingest", "-c", "sf", str(tmp_path / "corpus.jsonl"), data_dir=data_dir)
    runs = tmp_path / "out"
    out = run(hybrid_rag_bin, "eval", "--collection", "sf", "--queries", str(tmp_path / "queries.jsonl"),
              "--qrels", str(tmp_path / "qrels.tsv"), "--save-runs", str(runs), "--json", data_dir=data_dir).stdout
    metrics = json.loads(out.strip().splitlines()[-1])
    assert set(metrics) == {"sparse", "dense", "hybrid"}
    for m in metrics.values():
        assert set(m) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_ms", "p95_ms"}
        assert 0.5 <= m["ndcg@10"] <= 1.0  # 25 documents: the judged ones should rank high
    # exactly one TREC run file per mode, which trec_eval (pytrec_eval) scores as the app did
    import pytrec_eval

    assert sorted(p.name for p in runs.iterdir()) == ["dense.run", "hybrid.run", "sparse.run"]
    judgements = {}
    for q, d, g in qrels:
        if q in keep_q:
            judgements.setdefault(q, {})[d] = int(g)
    for mode in metrics:
        lines = [line.split() for line in (runs / f"{mode}.run").read_text().splitlines()]
        assert all(len(p) == 6 and p[1] == "Q0" and p[5] == mode for p in lines)
        trec = {}
        for q, _, d, rank, score, _ in lines:
            trec.setdefault(q, {})[d] = float(score)
        assert all(len(docs) <= 100 for docs in trec.values()) and set(trec) == keep_q
        ref = pytrec_eval.RelevanceEvaluator(judgements, {"ndcg_cut.10"}).evaluate(trec)
        assert round(sum(r["ndcg_cut_10"] for r in ref.values()) / len(ref), 4) == metrics[mode]["ndcg@10"]


def test_config_reaches_search_ingest_and_ask(hybrid_rag_bin, data_dir, tmp_path):
    """`--config` is read by every subcommand: chunking at ingest, retrieval mode at search, and the model
    catalog at ask (whose local endpoint, set only in that file, is a fake NIM on loopback)."""
    import yaml

    from rag.config import CONFIG_DIR
    from rag.testing.fake_nim import FakeNIM, Script

    api_model = yaml.safe_load((CONFIG_DIR / "models.yaml").read_text())["models"][0]["serves"]["local"]
    with FakeNIM(models=(api_model,), default=Script(tokens=["Wild yeast ", "raises it [1]."])) as nim:
        cfg = tmp_path / "mine.yaml"
        cfg.write_text(yaml.safe_dump({
            "chunking": {"chunk_tokens": 16, "overlap_tokens": 0},
            "retrieval": {"mode": "sparse"},
            "models": {"fallback_order": ["local"], "endpoints": {"local": {"base_url": nim.base_url}}},
        }))
        doc = tmp_path / "bread.txt"
        doc.write_text("Sourdough bread rises thanks to wild yeast in the starter. " * 6)
        out = run(hybrid_rag_bin, "--config", str(cfg), "ingest", "-c", "kb", str(doc), data_dir=data_dir).stdout
        assert "bread.txt: " in out and int(out.split("bread.txt: ")[1].split()[0]) > 4  # 16-token chunks
        res = json.loads(run(hybrid_rag_bin, "--config", str(cfg), "search", "-c", "kb", "--json", "yeast",
                             data_dir=data_dir).stdout)
        assert res["mode"] == "sparse"
        p = run(hybrid_rag_bin, "--config", str(cfg), "ask", "-c", "kb", "--route", "speed", "--json",
                "What makes bread rise?", data_dir=data_dir)
        meta = json.loads(p.stdout.strip().splitlines()[-1])
        assert "Wild yeast raises it [1]." in p.stdout
        assert meta["endpoint"]["base_url"] == nim.base_url and meta["citations"]["used"] == [1]
        assert len(nim.chat_requests) == 1


def test_search_json_shows_the_rerank_stage(hybrid_rag_bin, data_dir, tmp_path):
    """With rerank.enabled (in a --config file) `search --json` gives each hit's rerank rank and score and says
    whether the stage ran; when the rerank NIM fails, the hits keep the fused order and the reason is given."""
    import yaml

    from rag.testing.fake_nim import FakeNIM, RankScript

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"filler{i}.md").write_text(f"# Filler {i}\n\nPlain text number {i} about nothing in particular.\n")
    (docs / "herons.md").write_text("# Herons\n\nHerons hunt fish in shallow water at dawn; the heron stands still.\n")
    run(hybrid_rag_bin, "ingest", "-c", "kb", "-q", str(docs), data_dir=data_dir)
    query = "where do herons hunt fish at dawn"
    plain = json.loads(run(hybrid_rag_bin, "search", "-c", "kb", "--json", "--k", "3", query, data_dir=data_dir).stdout)
    assert plain["rerank"] is None and all(h["rerank_rank"] is None for h in plain["hits"])
    with FakeNIM() as nim:
        cfg = tmp_path / "rerank.yaml"
        cfg.write_text(yaml.safe_dump({"rerank": {"enabled": True, "base_url": nim.base_url, "top_n": 5,
                                                  "timeout_s": 5.0}}))
        res = json.loads(run(hybrid_rag_bin, "--config", str(cfg), "search", "-c", "kb", "--json", "--k", "3", query,
                             data_dir=data_dir).stdout)
        assert res["rerank"]["applied"] is True and res["rerank"]["reranked"] == 5 and res["rerank"]["reason"] is None
        assert [h["rerank_rank"] for h in res["hits"]] == [1, 2, 3] and res["hits"][0]["source"] == "herons.md"
        scores = [h["rerank_score"] for h in res["hits"]]
        assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
        assert len(nim.rank_requests) == 1 and len(nim.rank_requests[0]["json"]["passages"]) == 5
        nim.ranking = RankScript(status=503)
        p = run(hybrid_rag_bin, "--config", str(cfg), "search", "-c", "kb", "--json", "--k", "3", query,
                data_dir=data_dir)
        res = json.loads(p.stdout)
        assert res["rerank"]["applied"] is False and res["rerank"]["reason"] == "rerank skipped, fused order kept: HTTP 503"
        assert [h["chunk_id"] for h in res["hits"]] == [h["chunk_id"] for h in plain["hits"]]
        assert all(h["rerank_rank"] is None for h in res["hits"])
        text = run(hybrid_rag_bin, "--config", str(cfg), "search", "-c", "kb", query, data_dir=data_dir).stdout
        assert text.rstrip().endswith("rerank skipped, fused order kept: HTTP 503")
