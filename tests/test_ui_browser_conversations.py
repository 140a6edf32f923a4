"""Saved conversations in the real app (`hybrid-rag serve`), in headless Debian Chromium: a reader signs in, asks,
renames the conversation to a hostile title, the server restarts on the same data directory, she signs in again
and the conversation is in her list (as text), resumes with its messages and sources, takes a follow-up question
with the earlier turns as history, exports as Markdown with its sources, and is deleted after the confirmation.
Answers come from the fake NIM on loopback (the `local` endpoint), the starter collection is public.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from reliability_kit import CHROMIUM, add_user, local_fake_nim, serve, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADMIN_PW = "conversations-admin-pw"
RITA_PW = "rita-reads-the-docs"
QUESTION = "How do I upload documents?"
ANSWER_TOKENS = ["Open the ", "Documents tab ", "and upload ", "the files ", "[1]", "."]
HOSTILE = 'Uploads <img src=x onerror="window.__pwned=1"><b>bold</b>'
SHOTS = Path(os.environ["HYBRID_RAG_SHOTS"]) if os.environ.get("HYBRID_RAG_SHOTS") else None

if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def nim():
    fake = local_fake_nim(tokens=ANSWER_TOKENS, ttft_s=0.1, chunk_delay_s=0.05)
    yield fake
    fake.stop()


def _page(browser, url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 950})
    page = ctx.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    sign_in(page, url, "rita", RITA_PW)
    return ctx, page


def _shot(page, name: str) -> None:
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _bot_texts(page) -> list[str]:
    return page.eval_on_selector_all("#chatbot [data-testid='bot']", "els => els.map(e => e.innerText)")


def _wait_answer(page, n: int) -> None:
    """Until the n-th answer is complete (its citation shown, the meta panel no longer generating)."""
    page.wait_for_function(
        f"() => {{ const b = [...document.querySelectorAll('#chatbot [data-testid=bot]')];"
        f" return b.length >= {n} && b[{n - 1}].innerText.includes('[1]') }}", timeout=120_000)
    page.wait_for_function(  # the final update (the turn is saved before it goes out)
        "() => { const t = document.querySelector('#chat-meta').innerText;"
        " return t.includes('Tokens/s') && !t.includes('Generating') && !t.includes('Checking') }", timeout=60_000)


def _list_text(page) -> str:
    return page.inner_text("#conv-list")


def test_a_conversation_survives_a_restart_and_resumes(tmp_path, nim, browser):
    root = tmp_path / "app"
    env = {nim.url_env: nim.base_url}
    s = serve(root, env, starter=True, admin_password=ADMIN_PW)
    try:
        add_user(s.data, "rita", RITA_PW, "reader")
        ctx, page = _page(browser, s.url)
        assert "Your conversations" in _list_text(page) and page.locator("#conv-list input").count() == 0
        page.fill("#chat-input textarea", QUESTION)
        page.click("#chat-send")
        _wait_answer(page, 1)
        page.wait_for_function(f"() => document.querySelector('#conv-list').innerText.includes({QUESTION!r})",
                               timeout=30_000)
        assert page.input_value("#conv-title input") == QUESTION

        page.fill("#conv-title input", HOSTILE)                 # renamed to markup: shown as text everywhere
        page.click("#conv-rename")
        page.wait_for_selector("#conv-msg :text('Renamed')", timeout=30_000)
        page.wait_for_function("() => document.querySelector('#conv-list').innerText.includes('onerror')",
                               timeout=30_000)
        assert page.locator("#conv-list img, #conv-list b, #conv-msg img").count() == 0
        assert page.evaluate("window.__pwned") is None and not page.dialogs
        _shot(page, "conversation-renamed")
        ctx.close()
    finally:
        s.stop()

    nim.chat_requests.clear()
    s = serve(root, env, starter=True, admin_password=ADMIN_PW)        # same data directory
    try:
        ctx, page = _page(browser, s.url)
        page.wait_for_function("() => document.querySelector('#conv-list').innerText.includes('onerror')",
                               timeout=30_000)
        assert HOSTILE in _list_text(page) and page.locator("#conv-list input").count() == 1
        assert _bot_texts(page) == []
        page.locator("#conv-list label").filter(has_text="onerror").click()
        page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=bot]').length === 1",
                               timeout=30_000)
        assert "Open the Documents tab and upload the files [1]." in _bot_texts(page)[0]
        assert QUESTION in page.inner_text("#chatbot")
        assert page.input_value("#conv-title input") == HOSTILE
        sources = page.inner_text("#chat-sources")
        assert "The sources of the last answer" in sources and "cited" in sources and ".md" in sources
        assert "Resumed" in page.inner_text("#conv-msg")
        _shot(page, "conversation-resumed")

        page.fill("#chat-input textarea", "And how large may a file be?")   # a follow-up with the saved history
        page.click("#chat-send")
        _wait_answer(page, 2)
        sent = [m["content"] for m in nim.chat_requests[-1]["json"]["messages"][1:-1]]
        assert sent == [QUESTION, "Open the Documents tab and upload the files [1]."]

        page.click("#conv-export")                               # a Markdown file with the sources
        link = page.locator("#conv-file a").first
        link.wait_for(timeout=30_000)
        _shot(page, "conversation-exported")
        href = link.get_attribute("href")
        file_url = href if href.startswith("http") else s.url + href
        md = page.request.get(file_url).text()
        stranger = browser.new_context()                          # not signed in: the file is not served
        r = stranger.request.get(file_url, max_redirects=0)
        assert r.status != 200 or QUESTION not in r.text(), r.status
        stranger.close()
        assert md.startswith(f"# {HOSTILE}") and QUESTION in md and "And how large may a file be?" in md
        assert md.count("Sources:") == 2 and ("**README.md**" in md or "**docs/" in md)

        page.click("#conv-delete")                               # not without the confirmation
        page.wait_for_selector("#conv-msg :text('Tick')", timeout=30_000)
        assert page.locator("#conv-list input").count() == 1
        page.check("#conv-delete-confirm input")
        page.click("#conv-delete")
        page.wait_for_selector("#conv-msg :text('deleted')", timeout=30_000)
        page.wait_for_function("() => document.querySelectorAll('#conv-list input').length === 0", timeout=30_000)
        assert _bot_texts(page) == [] and page.evaluate("window.__pwned") is None and not page.dialogs

        page.get_by_role("tab", name="Compare").click()         # the leaderboard filter: all, or a readable one
        page.wait_for_selector("#lb-collection input", timeout=30_000)
        assert page.input_value("#lb-collection input") == "All collections"
        page.click("#lb-collection input")
        page.wait_for_selector("#lb-collection [role=option]", timeout=10_000)
        options = page.eval_on_selector_all("#lb-collection [role=option]", "els => els.map(e => e.innerText.trim())")
        assert [o.lstrip("✓").strip() for o in options] == ["All collections", "hybrid-rag-docs"], options
        page.locator("#lb-collection [role=option]").filter(has_text="hybrid-rag-docs").click()
        page.wait_for_selector("#lb-caption :text('0 votes on hybrid-rag-docs')", timeout=30_000)
        _shot(page, "leaderboard-filter")
        ctx.close()
    finally:
        s.stop()
