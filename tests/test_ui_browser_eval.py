"""The Evaluate tab in headless Chromium: the real app (`hybrid-rag serve`), a BEIR set uploaded with its corpus
(ingested into a new collection by a signed-in editor, who then owns it), an evaluation run, the metrics table seen
in the page."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_kit import CHROMIUM, add_user, launch_chromium, serve, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-eval-pw"
EDITOR = ("evaluator", "evaluator-password")
SAMPLE = Path(__file__).parent / "data" / "scifact_sample"

if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _small_set(d: Path) -> list[Path]:
    """5 sample queries (one with HTML in its text), their judged documents and 15 others."""
    qrels = [line.split("\t") for line in (SAMPLE / "qrels.tsv").read_text().splitlines()[1:]]
    queries = [json.loads(line) for line in (SAMPLE / "queries.jsonl").read_text().splitlines()][:5]
    queries[0]["text"] = '<img src=x onerror="window.__pwned=1"> ' + queries[0]["text"]
    keep = {q["_id"] for q in queries}
    judged = {doc for q, doc, _ in qrels if q in keep}
    docs = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()]
    chosen = [x for x in docs if x["_id"] in judged] + [x for x in docs if x["_id"] not in judged][:15]
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in chosen))
    (d / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in qrels
                                                                          if r[0] in keep))
    return [d / "queries.jsonl", d / "qrels.tsv", d / "corpus.jsonl"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = serve(tmp_path_factory.mktemp("served-eval"), admin_password=PASSWORD)  # --no-starter
    add_user(s.data, *EDITOR, "editor")
    yield {"url": s.url + "/", "base": s.url, "data": s.data, "log": s.log}
    s.stop()


def test_evaluate_tab_runs_a_beir_set_and_shows_the_table(server, tmp_path):
    files = _small_set(tmp_path / "set")
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            sign_in(page, server["base"], *EDITOR)
            page.get_by_role("tab", name="Evaluate").click()
            page.set_input_files("#eval-files input[type=file]", [str(f) for f in files])
            for f in files:
                page.wait_for_selector(f"#eval-files td.filename[aria-label='{f.name}']", timeout=30_000)
            page.click("#eval-run")
            page.wait_for_selector("#eval-msg .hr-msg-ok", timeout=180_000)
            msg = page.inner_text("#eval-msg")
            assert "collection beir-eval, 5 judged queries, 3 configurations" in msg
            table = page.locator("#eval-table")
            for config in ("sparse", "dense", "hybrid"):
                assert table.get_by_text(config, exact=True).count() >= 1
            text = table.inner_text()
            assert "nDCG@10" in text and "Recall@100" in text
            assert page.evaluate("window.__pwned") is None  # the HTML in a query's text never ran
        finally:
            browser.close()
    from rag.state import open_state_at

    assert open_state_at(server["data"]).collection_rights("beir-eval")["owner"] == EDITOR[0]
    runs = list((server["data"] / "eval-runs").iterdir())
    assert len(runs) == 1 and {p.name for p in runs[0].glob("*.run")} == {"sparse.run", "dense.run", "hybrid.run"}
