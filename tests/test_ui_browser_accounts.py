"""Accounts and rights in headless Chromium, against the app as a user starts it (`hybrid-rag serve` with
HYBRID_RAG_ADMIN_PASSWORD, which creates the first admin):

- sign in: the page sends a signed-out visitor to the sign-in form; a wrong password is refused there, the right
  one opens the app; Sign out ends it;
- a reader sees only the collections granted to them (and no Admin tab);
- an editor uploads into the collection they may change and is refused on one they may only read;
- an admin changes a user's role in the Admin tab, and the audit log shows it.

Collections ``alpha`` and ``beta`` are made over HTTP as the admin before the tests (the server's own embedder);
the accounts are added to the served app's state database directly, as ``hybrid-rag users add`` would.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from reliability_kit import (
    ADMIN_USER,
    CHROMIUM,
    GradioHTTP,
    add_user,
    admin_upload,
    create_collection,
    grant,
    serve,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADMIN_PW = "accounts-admin-pw"
READER, EDITOR = ("rita", "rita-password-1"), ("ed", "ed-password-12")

if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = serve(tmp_path_factory.mktemp("served-accounts"), admin_password=ADMIN_PW)  # --no-starter
    try:
        client = GradioHTTP(s.url, user=ADMIN_USER, password=ADMIN_PW)
        for name in ("alpha", "beta"):
            assert create_collection(client, name)["success"]
            out = admin_upload(client, name, [(f"{name}.md", f"# {name}\n\nThe {name} handbook.\n".encode())])
            assert out["success"] and "1 of 1" in out["data"][0], out
        client.close()
        add_user(s.data, *READER, "reader")
        add_user(s.data, *EDITOR, "editor")
        grant(s.data, "alpha", READER[0], "reader")
        grant(s.data, "alpha", EDITOR[0], "editor")
        grant(s.data, "beta", EDITOR[0], "reader")
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 950})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _tab(page, name):
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)


OPTION = "li[data-testid=dropdown-option]"


def _options(page, elem_id: str) -> list[str]:
    """The choices a Gradio dropdown offers (opened, read, closed)."""
    page.click(f"#{elem_id} input")
    page.wait_for_selector(f"#{elem_id} {OPTION}", timeout=10_000)
    found = [t.replace("✓", "").strip() for t in page.locator(f"#{elem_id} {OPTION}").all_inner_texts()]
    page.keyboard.press("Escape")
    page.locator(f"#{elem_id} input").blur()
    return found


def _pick(page, elem_id: str, value: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator(f"#{elem_id} {OPTION}", has_text=re.compile(rf"^[\s✓]*{re.escape(value)}\s*$")).first.click()
    page.wait_for_function(f"() => document.querySelector('#{elem_id} input').value === {value!r}", timeout=10_000)


def _documents(data: Path, collection: str) -> list[str]:
    from rag.config import load_settings
    from rag.store import list_collections, open_collection

    if collection not in {c["name"] for c in list_collections(data)}:
        return []
    return [d["source"] for d in open_collection(collection, load_settings(data_dir=data)).documents()]


def test_sign_in_refuses_a_wrong_password_then_signs_in_and_out(server, page):
    page.goto(server.url + "/")
    page.wait_for_url(re.compile(r"/login"), timeout=30_000)
    assert page.is_visible("#login-user") and not page.is_visible("#login-note")  # an admin exists
    sign_in(page, server.url, READER[0], "not-the-password", expect_ok=False)
    page.wait_for_selector("#login-error", timeout=30_000)
    assert "wrong" in page.inner_text("#login-error").lower()
    assert page.input_value("#login-user") == READER[0] and page.input_value("#login-password") == ""
    assert not [c for c in page.context.cookies() if c["name"] == "hr_session"]
    sign_in(page, server.url, *READER)
    assert "Signed in as rita (reader)" in page.inner_text("#hr-user")
    cookie = next(c for c in page.context.cookies() if c["name"] == "hr_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.click("#hr-signout")
    page.wait_for_url(re.compile(r"/login\?signed_out=1"), timeout=30_000)
    assert "You are signed out" in page.inner_text("body")
    page.goto(server.url + "/")  # the old session is gone: back to the form
    page.wait_for_url(re.compile(r"/login"), timeout=30_000)


def test_a_reader_sees_only_their_collections(server, page):
    sign_in(page, server.url, *READER)
    _tab(page, "Compare")
    assert _options(page, "cmp-collection") == ["alpha"]
    _tab(page, "Documents")
    assert page.input_value("#docs-collection input") == "alpha"
    assert _options(page, "docs-collection") == ["alpha"]
    assert "alpha.md" in page.inner_text("#docs-table") and "beta" not in page.inner_text("#docs-table")
    _tab(page, "Evaluate")
    assert _options(page, "eval-collection") == ["alpha"]
    assert page.get_by_role("tab", name="Admin").count() == 0  # not an admin: no Admin tab


def test_an_editor_uploads_to_their_collection_and_is_refused_on_another(server, page, tmp_path):
    sign_in(page, server.url, *EDITOR)
    _tab(page, "Documents")
    assert sorted(_options(page, "docs-collection")) == ["alpha", "beta"]
    doc = tmp_path / "editor-note.md"
    doc.write_text("# Editor note\n\nWritten by the editor of alpha.\n")

    def upload():
        page.set_input_files("#upload-files input[type=file]", str(doc))
        page.wait_for_selector(f"#upload-files td.filename[aria-label='{doc.name}']", timeout=30_000)
        page.click("#ingest")

    _pick(page, "docs-collection", "alpha")
    upload()
    page.wait_for_selector("#docs-msg :text('ingested into')", timeout=120_000)
    assert "editor-note.md" in page.inner_text("#docs-table")
    assert "editor-note.md" in _documents(server.data, "alpha")

    _pick(page, "docs-collection", "beta")
    page.wait_for_function("() => document.querySelector('#docs-table').innerText.includes('beta.md')",
                           timeout=30_000)
    upload()
    page.wait_for_selector("#docs-msg .hr-msg-error", timeout=60_000)
    assert "may not change collection 'beta'" in page.inner_text("#docs-msg")
    assert _documents(server.data, "beta") == ["beta.md"]


def test_an_admin_changes_a_role_and_the_audit_log_shows_it(server, page):
    from rag.state import open_state_at

    sign_in(page, server.url, ADMIN_USER, ADMIN_PW)
    assert "Signed in as admin (admin)" in page.inner_text("#hr-user")
    _tab(page, "Admin")
    page.wait_for_function("() => document.querySelector('#admin-users').innerText.includes('rita')",
                           timeout=30_000)
    _pick(page, "admin-user", READER[0])
    _pick(page, "admin-role", "editor")
    page.click("#admin-set-role")
    page.wait_for_selector("#admin-msg :text('rita is now editor')", timeout=30_000)
    users = page.inner_text("#admin-users")
    assert re.search(r"rita\s+editor", users), users
    page.wait_for_function("() => document.querySelector('#audit-table').innerText.includes('user.set_role')",
                           timeout=30_000)
    audit = page.inner_text("#audit-table")
    assert "rita: reader -> editor" in audit and "admin" in audit
    assert open_state_at(server.data).get_user(READER[0]).role == "editor"
    page.click("#audit-refresh")  # the CSV export
    page.wait_for_selector("#audit-csv a", timeout=30_000)
