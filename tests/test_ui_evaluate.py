"""The Evaluate tab's handlers, driven directly (no browser): a real collection, embedder and saved runs, and
signed-in users of a real state database (an editor ingests a corpus; a reader evaluates what they may read)."""
import html
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.engine import Engine
from ui import evaluate
from ui.backend import Backend

SAMPLE = Path(__file__).parent / "data" / "scifact_sample"


def req(name):
    return SimpleNamespace(username=name, client=SimpleNamespace(host="127.0.0.1"), headers={})


ED, RITA = req("ed"), req("rita")


@pytest.fixture
def backend(settings, embedder):
    b = Backend(settings, engine=Engine(settings, embedder=embedder))
    b.state.add_user("ed", "ed-password", "editor")
    b.state.add_user("rita", "rita-password", "reader")
    return b


@pytest.fixture
def beir(tmp_path):
    """5 sample queries with a graded judgement, their judged documents and 15 others; one query's text is HTML."""
    qrels = [line.split("\t") for line in (SAMPLE / "qrels.tsv").read_text().splitlines()[1:]]
    queries = [json.loads(line) for line in (SAMPLE / "queries.jsonl").read_text().splitlines()][:5]
    queries[0]["text"] = "<img src=x onerror=alert(1)> " + queries[0]["text"]
    keep = {q["_id"] for q in queries}
    judged = {d for q, d, _ in qrels if q in keep}
    docs = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()]
    chosen = [d for d in docs if d["_id"] in judged] + [d for d in docs if d["_id"] not in judged][:15]
    d = tmp_path / "set"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in chosen))
    (d / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = [r for r in qrels if r[0] in keep]
    rows[0][2] = "2"  # a graded judgement
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows))
    return d


def _no_progress(*a, **k):
    pass


def _run(backend, files, collection=None, new_name="sf-eval", request=ED, presets=("sparse", "hybrid"),
         extra="", limit=0):
    return list(evaluate.run_live(backend, request, [str(f) for f in files], collection, new_name,
                                  list(presets), extra, limit, progress=_no_progress))


def test_evaluate_ingests_runs_saves_drills_down_and_compares(backend, beir):
    files = [beir / "queries.jsonl", beir / "qrels.tsv", beir / "corpus.jsonl"]
    refused = _run(backend, files, request=RITA)[-1]  # a reader may not ingest a corpus
    assert "only editors and admins create collections" in refused[0] and "sf-eval" not in backend.collection_names()

    backend.state.grant("sf-eval", "rita", "reader")   # rights left on the name before the collection exists
    backend.state.set_public("sf-eval", True)
    out = _run(backend, files, extra="hybrid-rrf-k50")[-1]
    msg, table, ndcg, recall, query, run_id, exports, cfg, saved, cmp_a, cmp_b = out
    assert "5 judged queries" in msg and "sf-eval" in backend.collection_names()
    # the editor who ingested it owns it, and the earlier rights were dropped (as on the API and Documents tab)
    assert backend.state.collection_rights("sf-eval") == {"owner": "ed", "public": False, "readers": [],
                                                          "editors": []}
    assert [e["action"] for e in backend.state.audit_log(actor="ed")] == ["eval.ingest"]
    assert [r[0] for r in table] == ["sparse", "hybrid", "hybrid-rrf-k50"]
    assert all(0.5 <= r[1] <= 1.0 and r[7] == 5 for r in table)
    assert set(ndcg["configuration"]) == {"sparse", "hybrid", "hybrid-rrf-k50"} and list(ndcg["k"][:3]) == [1, 2, 3]
    assert recall["value"].between(0, 1).all()
    assert sorted(Path(p).suffix for p in exports) == [".csv", ".json"]
    assert json.loads(Path(exports[1]).read_text())["summary"]["sparse"]["queries"] == 5
    saved_dir = backend.settings.data_dir / "eval-runs" / run_id
    assert sorted(p.name for p in saved_dir.iterdir()) == ["hybrid-rrf-k50.run", "hybrid.run", "metrics.json",
                                                          "qrels.tsv", "queries.jsonl", "sparse.run"]

    # the per-query view: the query (escaped), its judged documents with grades and each configuration's rank
    qid = query["value"]
    shown, rows = evaluate.drill(backend, ED, run_id, qid)
    assert "<img" not in shown and "&lt;img src=x" in shown
    assert list(rows.columns) == ["Document", "Grade", "sparse", "hybrid", "hybrid-rrf-k50"]
    assert rows["Grade"].iloc[0] == 2 and str(rows["hybrid"].iloc[0]).isdigit()

    # rita may not read sf-eval: she cannot evaluate it, see its runs, open them or drill into them
    assert "'rita' may not read" in html.unescape(_run(backend, [beir / "queries.jsonl", beir / "qrels.tsv"],
                                                        collection="sf-eval", request=RITA)[-1][0])
    assert evaluate.saved_choices(backend, backend.state.get_user("rita")) == []
    assert "may not read" in html.unescape(evaluate.run_views(backend, RITA, run_id)[0])
    assert "may not read" in html.unescape(evaluate.drill(backend, RITA, run_id, qid)[0])
    assert "may not read" in html.unescape(evaluate.compare_runs(backend, RITA, run_id, run_id, "sparse")[0])

    # once she may read it, a second run on it without a corpus (no other right needed), then the regression view
    backend.state.grant("sf-eval", "rita", "reader")
    out2 = _run(backend, [beir / "queries.jsonl", beir / "qrels.tsv"], collection="sf-eval", request=RITA,
                presets=["sparse", "dense"])[-1]
    run2 = out2[5]
    assert [r[0] for r in out2[1]] == ["sparse", "dense"] and run2 != run_id
    assert {v for _, v in out2[8]["choices"]} == {run_id, run2}
    cmp_html, cmp_rows, cmp_csv = evaluate.compare_runs(backend, RITA, run_id, run2, "sparse")
    assert "0 worse" in cmp_html and len(cmp_rows) == 5 and Path(cmp_csv).read_text().startswith("query_id,")
    cmp_html, _, _ = evaluate.compare_runs(backend, RITA, run_id, run2, "hybrid")
    assert "no configuration &#x27;hybrid&#x27;" in cmp_html
    reopened = evaluate.run_views(backend, RITA, run_id)
    assert reopened[1] == table


def test_hostile_inputs_get_clear_errors(backend, beir, tmp_path, monkeypatch):
    def err(out):
        return out[-1][0]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\tnot-a-number\n")
    assert "qrels.tsv:2" in err(_run(backend, [beir / "queries.jsonl", bad / "qrels.tsv"], collection="x"))
    (bad / "queries.jsonl").write_text('{"_id": "1", "text": "<b>x</b>"}\n{broken\n')
    msg = err(_run(backend, [bad / "queries.jsonl", beir / "qrels.tsv"], collection="x"))
    assert "queries.jsonl:2" in msg
    (bad / "other-qrels.tsv").write_text("nobody\td1\t1\n")
    assert "ids match" in err(_run(backend, [beir / "queries.jsonl", bad / "other-qrels.tsv"], collection="x"))
    assert "Upload qrels.tsv" in err(_run(backend, [beir / "queries.jsonl"], collection="x"))
    assert "not part of a BEIR set" in err(_run(backend, [beir / "queries.jsonl", tmp_path / "notes.pdf"]))
    assert "No collection named" in err(_run(backend, [beir / "queries.jsonl", beir / "qrels.tsv"],
                                             collection="<script>"))
    assert "&lt;script&gt;" in err(_run(backend, [beir / "queries.jsonl", beir / "qrels.tsv"], collection="<script>"))
    assert "Unknown configuration" in err(_run(backend, [beir / "queries.jsonl", beir / "qrels.tsv"],
                                               collection="x", extra="hybrid; rm -rf"))
    monkeypatch.setattr(backend.settings.limits, "max_file_bytes", 100)
    assert "over the" in err(_run(backend, [beir / "queries.jsonl", beir / "qrels.tsv"], collection="x"))
    assert "Pick a saved run" in evaluate.run_views(backend, ED, None)[0]
    assert "not a saved run id" in evaluate.run_views(backend, ED, "../../etc/passwd")[0]
    assert evaluate.drill(backend, ED, "../x", "1")[1] is None


def test_the_tab_is_in_the_app(settings, backend):
    from ui.app import build_app

    demo, _ = build_app(settings, backend=backend)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"tab-evaluate", "eval-files", "eval-run", "eval-table", "eval-ndcg-plot", "eval-compare"} <= ids


def test_stop_stops_only_your_own_evaluations(backend):
    import threading

    backend.state.add_user("root", "root-password", "admin")
    gate = threading.Event()
    jobs = [evaluate.JOBS.submit(lambda j: gate.wait(30) and None, owner=owner) for owner in ("ed", "rita")]
    try:
        assert "not signed in" in evaluate.stop_runs(backend, req("nobody-else-x"))
        assert not any(j.cancel.is_set() for j in jobs)
        assert "Stopping 1 evaluation" in evaluate.stop_runs(backend, RITA)
        assert [j.cancel.is_set() for j in jobs] == [False, True]
        assert "Stopping 1 evaluation" in evaluate.stop_runs(backend, req("root"))  # an admin stops everybody's
        assert all(j.cancel.is_set() for j in jobs)
    finally:
        gate.set()
        for j in jobs:
            j.finished_event.wait(30)
