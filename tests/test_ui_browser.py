"""The real app, started as a user would (`hybrid-rag serve --port P`), driven in headless Chromium.

- Chromium is Debian's (/usr/bin/chromium, `apt-get install chromium`); Playwright never downloads one.
- Chat answers come from the fake NIM (rag/testing/fake_nim.py) on loopback, wired in as the `local` endpoint
  through its base-URL variable, so they stream at a known pace and cite [1]. The comparison uses the real
  embedded SmolLM2 model (offline default: it against its creative-sampling twin), with tiny budgets.
- The tests share one server and run in file order: upload, chat, compare, then the reader's refusals. The
  server creates its first admin from HYBRID_RAG_ADMIN_PASSWORD; each page signs in through the sign-in form.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from reliability_kit import (
    ADMIN_USER,
    CHROMIUM,
    add_user,
    local_fake_nim,
    serve,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-test-pw"
READER = ("reader1", "reader1-password")
SHOTS = Path(os.environ.get("HYBRID_RAG_SHOTS", "")) if os.environ.get("HYBRID_RAG_SHOTS") else None
FACT_DOC = ("# Heron project\n\nThe heron project codename is BLUEHERON. It was started in 2019 by the "
            "wetlands team to count wading birds with acoustic sensors.\n\n"
            "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">\n\n"
            "## Sensors <img src=x onerror=\"window.__pwned = 3\">\n\nHydrophones, *not* cameras.\n")
ANSWER_TOKENS = ["The ", "codename ", "of the ", "heron ", "project ", "is ", "BLUEHERON ", "[1]", "."]

if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _shot(page, name: str) -> None:
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def nim_server():
    nim = local_fake_nim(tokens=ANSWER_TOKENS, ttft_s=0.3, chunk_delay_s=0.25)
    yield nim, nim.url_env
    nim.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, nim_server):
    nim, url_env = nim_server
    s = serve(tmp_path_factory.mktemp("served"), {url_env: nim.base_url}, starter=True, admin_password=PASSWORD)
    add_user(s.data, *READER, "reader")
    yield {"url": s.url + "/", "base": s.url, "data": s.data, "log": s.log}
    s.stop()


def _page(browser, server, user, password):
    ctx = browser.new_context(viewport={"width": 1400, "height": 950})
    pg = ctx.new_page()
    dialogs = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(pg, server["base"], user, password)
    pg.dialogs = dialogs
    return ctx, pg


@pytest.fixture
def page(browser, server):
    """The app, signed in as the admin."""
    ctx, pg = _page(browser, server, ADMIN_USER, PASSWORD)
    yield pg
    ctx.close()


@pytest.fixture
def reader_page(browser, server):
    """The app, signed in as a reader (the starter collection is public: they may read it)."""
    ctx, pg = _page(browser, server, *READER)
    yield pg
    ctx.close()


def _tab(page, name):
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)


def _doc_count(server, collection="hybrid-rag-docs") -> int:
    from rag.store import list_collections

    return {c["name"]: c["documents"] for c in list_collections(server["data"])}[collection]


def _upload(page, path: Path):
    page.set_input_files("#upload-files input[type=file]", str(path))
    page.wait_for_selector(f"#upload-files td.filename[aria-label='{path.name}']", timeout=30_000)
    page.click("#ingest")


def test_first_run_builds_the_starter_collection(server, page):
    assert _doc_count(server) >= 1
    _tab(page, "Documents")
    # the lists are filled by the page's load event for the signed-in user: wait for it, not for a fixed time
    page.wait_for_function("() => document.querySelector('#docs-collection input').value === 'hybrid-rag-docs'",
                           timeout=60_000)
    page.wait_for_function("() => document.querySelector('#docs-table').innerText.includes('docs/ui.md')",
                           timeout=60_000)


def test_admin_uploads_a_document(server, page, tmp_path):
    _tab(page, "Documents")
    before = _doc_count(server)
    doc = tmp_path / "heron.md"
    doc.write_text(FACT_DOC)
    _upload(page, doc)
    page.wait_for_selector("#docs-msg :text('ingested into')", timeout=120_000)
    assert page.is_visible("#cancel-ingest")
    results = page.inner_text("#upload-results")
    assert "heron.md" in results and "added" in results
    assert "heron.md" in page.inner_text("#docs-table")
    assert _doc_count(server) == before + 1
    page.locator("#docs-table").get_by_text("heron.md", exact=True).first.click()  # selects it and previews its chunks
    page.wait_for_function("() => document.querySelector('#chunks-table').innerText.includes('BLUEHERON')",
                           timeout=30_000)
    assert "onerror" in page.inner_text("#chunks-table")  # shown as text
    assert page.evaluate("window.__pwned") is None and not page.dialogs
    _shot(page, "documents-after-upload")


def test_chat_streams_an_answer_with_a_citation(server, page):
    page.fill("#chat-input textarea", "What is the codename of the heron project?")
    page.click("#chat-send")
    bot = page.locator("#chatbot [data-testid='bot']").last
    bot.wait_for(timeout=60_000)
    page.wait_for_function(
        "() => { const b = [...document.querySelectorAll('#chatbot [data-testid=bot]')].pop();"
        " return b && b.innerText.includes('codename') }", timeout=120_000)
    partial = bot.inner_text()
    _shot(page, "chat-streaming")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chatbot [data-testid=bot]')].pop().innerText.includes('[1]')",
        timeout=60_000)
    page.wait_for_selector("#chat-meta :text('Tokens/s')", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('#chat-meta').innerText.includes('Generating')",
                           timeout=30_000)
    final = bot.inner_text()
    assert "BLUEHERON" not in partial or "[1]" not in partial, "the answer arrived at once, not streamed"
    assert "BLUEHERON [1]" in final
    sources = page.inner_text("#chat-sources")
    assert re.search(r"\[1\]\s*heron\.md", sources), sources
    assert "dense #" in sources and "sparse #" in sources and "fused #1" in sources
    meta = page.inner_text("#chat-meta")
    assert "Mistral-NeMo-Minitron" in meta and "local" in meta and "TTFT" in meta and "Retrieval" in meta
    # the document's <script> and onerror handler were shown as text, never run
    assert page.evaluate("window.__pwned") is None and not page.dialogs
    assert "<script>" in page.inner_text("#chat-sources") or "window.__pwned" in page.inner_text("#chat-sources")
    _shot(page, "chat-answer")


def test_stop_cuts_the_answer_off(server, page, nim_server):
    from rag.testing.fake_nim import Script

    nim, _ = nim_server
    nim.queue(Script(tokens=[f"word{i} " for i in range(200)], chunk_delay_s=0.1))
    page.fill("#chat-input textarea", "Tell me everything about herons.")
    page.click("#chat-send")
    page.wait_for_function(
        "() => { const b = [...document.querySelectorAll('#chatbot [data-testid=bot]')].pop();"
        " return b && b.innerText.includes('word3') }", timeout=120_000)
    page.click("#chat-stop")
    page.wait_for_timeout(2000)
    text = page.locator("#chatbot [data-testid='bot']").last.inner_text()
    page.wait_for_timeout(1500)
    assert page.locator("#chatbot [data-testid='bot']").last.inner_text() == text  # nothing more arrives
    assert "word199" not in text
    page.click("#chat-clear")
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=bot]').length === 0")


def _set_number(page, elem_label: str, value: int):
    box = page.locator("#tab-compare").get_by_label(elem_label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def test_blind_comparison_vote_and_leaderboard(server, page):
    _tab(page, "Compare")
    # the caption is refilled for the signed-in user on load (a progress timer shows meanwhile)
    page.wait_for_function(
        "() => document.querySelector('#lb-caption').innerText.trim().startsWith('0 votes')", timeout=30_000)
    # small budgets: the embedded model answers both columns, one after the other, on a shared CPU
    page.locator("#cmp-columns").scroll_into_view_if_needed()
    for label, value in (("number input for Top-k", 2), ("number input for Max tokens", 16)):
        _set_number(page, label, value)
    page.fill("#cmp-question textarea", "What is the codename of the heron project?")
    page.click("#cmp-run")
    page.wait_for_selector("#cmp-status :text('Generating')", timeout=120_000)
    assert page.inner_text("#cmp-head-0").strip().endswith("Model A")
    assert page.inner_text("#cmp-head-1").strip().endswith("Model B")
    page.wait_for_selector("#vote-A:not([disabled])", timeout=300_000)
    stats = [page.inner_text(f"#cmp-stats-{i}") for i in range(2)]
    assert all("TTFT" in s and "tokens/s" in s for s in stats), stats
    assert "SmolLM2" not in page.inner_text("#cmp-columns")  # blind until the vote
    _shot(page, "compare-answers")
    page.click("#vote-A")
    page.wait_for_selector("#cmp-status :text('Vote recorded')", timeout=60_000)
    assert "SmolLM2" in page.inner_text("#cmp-head-0") and "SmolLM2" in page.inner_text("#cmp-head-1")
    page.wait_for_selector("#lb-caption :text('1 vote')", timeout=30_000)
    table = page.inner_text("#lb-table")
    assert "SmolLM2" in table and "creative" in table
    assert page.locator("#lb-chart svg circle").count() == 2
    assert page.is_disabled("#vote-B")
    _shot(page, "compare-voted")


def _wait_for_audit(server, actor: str, action: str, result: str, timeout: float = 30.0) -> None:
    import time

    from rag.state import open_state_at

    state = open_state_at(server["data"])
    deadline = time.monotonic() + timeout
    while not any(e["result"] == result for e in state.audit_log(actor=actor, action=action)):
        assert time.monotonic() < deadline, f"no {action} {result} by {actor} in the audit log"
        time.sleep(0.3)


def test_a_reader_cannot_upload_or_delete(server, reader_page, tmp_path):
    page = reader_page
    _tab(page, "Documents")
    assert page.input_value("#docs-collection input") == "hybrid-rag-docs"  # public: they may read it
    assert "you may read it" in page.inner_text("#docs-summary")
    before = _doc_count(server)
    doc = tmp_path / "intruder.md"
    doc.write_text("# Intruder\n\nThis must not be indexed.")
    _upload(page, doc)
    page.wait_for_selector("#docs-msg .hr-msg-error:has-text('may not change collection')", timeout=30_000)
    assert _doc_count(server) == before
    assert "intruder.md" not in page.inner_text("#docs-table")
    # the same refusal text follows for cancel and delete, so the server's audit log says each was refused
    for button, action in (("#cancel-ingest", "upload.cancel"), ("#delete-doc", "document.delete")):
        page.click(button)
        _wait_for_audit(server, READER[0], action, "denied")
    assert "may not change collection" in page.inner_text("#docs-msg")
    assert _doc_count(server) == before
    page.fill("#new-collection textarea", "sneaky")
    page.click("#create-collection")
    page.wait_for_selector("#docs-msg .hr-msg-error:has-text('only editors and admins create collections')",
                           timeout=30_000)
    from rag.store import list_collections

    assert "sneaky" not in [c["name"] for c in list_collections(server["data"])]
    assert page.get_by_role("tab", name="Admin").count() == 0
    _shot(page, "documents-refused")


def test_file_serving_is_limited_to_gradio_uploads(server):
    import urllib.error

    for target in ("/etc/passwd", str(server["data"] / "arena.sqlite"),
                   str(next(server["data"].glob("collections/*/CURRENT")))):
        try:
            with urllib.request.urlopen(f"{server['url']}gradio_api/file={target}", timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status in (401, 403, 404), (target, status)  # not signed in: 401 before anything else
