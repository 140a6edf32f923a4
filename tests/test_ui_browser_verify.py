"""Verified citations seen in a real browser: the app as a user starts it (`hybrid-rag ingest`, then
`hybrid-rag serve`), a question in the Chat tab, the answer from the fake NIM on loopback, and the citation
check's marks in the page once the answer completes: the unsupported sentence in a ``<mark>`` with ⚠ and a
tooltip saying why, the uncited one with ?, the supported one unmarked, and nothing in the model's text run as
HTML. Gradio's chatbot sanitizes messages; this checks that the marks survive it.

The scripted answer makes the outcome deterministic: a sentence copied from the document ([1], supported), one
that states a number and facts the document lacks ([1], unsupported), and a claim with no citation (uncited).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from reliability_kit import (
    ADMIN_USER,
    CHROMIUM,
    launch_chromium,
    local_fake_nim,
    serve,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOC = ("# Heron project\n\nThe heron project codename is BLUEHERON. It was started in 2019 by the "
       "wetlands team to count wading birds with acoustic sensors.\n\n## Sensors\n\nHydrophones, not cameras.\n")
SUPPORTED = "The heron project codename is BLUEHERON [1]."
UNSUPPORTED = ('The project is funded by a Martian space agency <img src=x onerror="window.__pwned=1"> '
               "since 1850 [1].")
UNCITED = "Herons were counted by orbiting satellites every single winter."
ANSWER_TOKENS = [SUPPORTED + " ", UNSUPPORTED + " ", UNCITED]
ADMIN_PW = "browser-verify-pw"

if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def nim():
    server = local_fake_nim(tokens=ANSWER_TOKENS, chunk_delay_s=0.05)
    yield server, server.url_env
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hybrid_rag_bin, nim):
    fake, url_env = nim
    root = tmp_path_factory.mktemp("served-verify")
    extra = {url_env: fake.base_url}
    (root / "heron.md").write_text(DOC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_RAG")}
    subprocess.run([hybrid_rag_bin, "ingest", "-c", "herons", "-q", str(root / "heron.md")], cwd=str(root),
                   env={**env, "HYBRID_RAG_DATA": str(root / "data"), "HF_HUB_OFFLINE": "1"},
                   check=True, capture_output=True, timeout=300)
    s = serve(root, extra, admin_password=ADMIN_PW)  # --no-starter: the collection above is the only one
    yield {"url": s.url + "/", "base": s.url, "log": s.log}
    s.stop()


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1400, "height": 950})
        dialogs = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        sign_in(pg, server["base"], ADMIN_USER, ADMIN_PW)  # the collection made on the command line: admins only
        pg.dialogs = dialogs
        yield pg
        browser.close()


def test_verification_marks_render_in_the_chat_after_the_answer(server, page, nim):
    fake, _ = nim
    page.fill("#chat-input textarea", "What is the codename of the heron project?")
    page.click("#chat-send")
    page.wait_for_selector("#chat-meta :text('Citations checked')", timeout=120_000)
    bot = page.locator("#chatbot [data-testid='bot']").last
    marks = bot.locator("mark")
    marks.first.wait_for(timeout=30_000)
    assert len(fake.chat_requests) == 1

    found = marks.evaluate_all("els => els.map(e => ({cls: e.className, title: e.title, text: e.innerText,"
                               " sign: e.nextElementSibling && e.nextElementSibling.tagName === 'SUP'"
                               " ? [e.nextElementSibling.innerText, e.nextElementSibling.title] : null}))")
    assert [m["cls"] for m in found] == ["hr-unsupported", "hr-uncited"], found
    unsupported, uncited = found
    assert unsupported["text"].startswith("The project is funded by a Martian space agency")
    assert '<img src=x onerror="window.__pwned=1">' in unsupported["text"]       # the model's tag shown as text
    assert unsupported["title"].startswith("[1] does not support this (similarity ")
    assert "1850 not in the source" in unsupported["title"]
    assert unsupported["sign"] == ["⚠", unsupported["title"]]
    assert uncited["text"] == UNCITED and uncited["title"].startswith("No citation")
    assert uncited["sign"] == ["?", uncited["title"]]
    text = bot.inner_text()
    assert "The heron project codename is BLUEHERON [1]." in text       # the supported sentence, unmarked
    assert "BLUEHERON" not in " ".join(m["text"] for m in found)
    assert "⚠ the cited source does not support this sentence" in text  # the legend
    assert bot.locator("img").count() == 0 and page.evaluate("window.__pwned") is None and not page.dialogs

    meta = page.inner_text("#chat-meta")
    assert "1 of 3 statements supported by their sources" in meta, meta
    assert "1 not supported" in meta and "1 without a citation" in meta
    assert "not supporting" in page.inner_text("#chat-sources")
