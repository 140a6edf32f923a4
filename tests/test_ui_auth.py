"""Sign-in for the web app (ui/signin.py) over HTTP: the form, the session cookie, sign-out, expiry, throttling,
cross-site posts, the redirect of the page, single sign-on from trusted proxies only, and the first-admin message.

The app here is a FastAPI app with the sign-in installed and a tiny Gradio Blocks mounted as the web app is
(``auth_dependency``), so these tests need neither the embedder nor the real tabs."""
from __future__ import annotations

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rag.state import open_state
from ui import signin

PW = "correct-horse-1"


class _Backend:
    def __init__(self, settings):
        self.settings = settings

    @property
    def state(self):
        return open_state(self.settings)


def _app(settings):
    backend = _Backend(settings)
    app = FastAPI()
    dep = signin.install(app, settings, backend)
    with gr.Blocks() as demo:
        who = gr.Textbox(elem_id="who")

        def whoami(request: gr.Request):
            return request.username

        demo.load(whoami, None, who)
    return gr.mount_gradio_app(app, demo, path="/", auth_dependency=dep, ssr_mode=False)


@pytest.fixture(autouse=True)
def _fresh():
    signin.clear_cache()
    yield
    signin.clear_cache()


@pytest.fixture
def state(settings):
    st = open_state(settings)
    st.add_user("alice", PW, "reader")
    return st


@pytest.fixture
def client(settings, state):
    with TestClient(_app(settings), client=("127.0.0.1", 50000)) as c:
        yield c


def _login(c, user="alice", password=PW, **headers):
    return c.post("/login", data={"username": user, "password": password, "next": "/"}, headers=headers,
                  follow_redirects=False)


def test_signed_out_the_page_redirects_to_the_form_and_gradio_refuses(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/config").status_code == 401
    assert client.post("/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"}).status_code \
        == 401
    page = client.get("/login")
    assert page.status_code == 200 and 'id="login-user"' in page.text and "<script" not in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets
    assert page.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"]


def test_wrong_password_is_refused_then_the_right_one_signs_in(client, state):
    r = _login(client, password="not-the-password")
    assert r.status_code == 401 and 'id="login-error"' in r.text and "hr_session" not in r.headers.get(
        "set-cookie", "")
    assert client.get("/config").status_code == 401
    r = _login(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("hr_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http here
    assert client.get("/", follow_redirects=False).status_code == 200
    assert client.get("/config").json()["username"] == "alice"
    assert client.get("/login", follow_redirects=False).status_code == 303  # already signed in


def test_the_cookie_is_secure_over_https(settings, state):
    with TestClient(_app(settings), base_url="https://testserver", client=("127.0.0.1", 1)) as c:
        r = _login(c)
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_sign_out_ends_the_session_in_the_database(client, state):
    _login(client)
    token = client.cookies.get("hr_session")
    assert state.session_user(token).name == "alice"
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("login")
    assert state.session_user(token) is None
    client.cookies.set("hr_session", token)  # replaying the old cookie does not help
    assert client.get("/config").status_code == 401
    assert "You are signed out" in client.get("/login?signed_out=1").text


def test_an_expired_session_is_signed_out(client, state, settings):
    _login(client)
    assert client.get("/config").status_code == 200
    real = state.clock
    state.clock = lambda: real() + settings.auth.session_ttl_s + 5
    signin.clear_cache()
    try:
        assert client.get("/config").status_code == 401
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    finally:
        state.clock = real


def test_a_password_reset_or_removal_ends_the_session(client, state):
    _login(client)
    state.reset_password("alice", "another-password-2")
    signin.clear_cache()
    assert client.get("/config").status_code == 401


def test_wrong_passwords_are_throttled_and_the_form_says_so(client, state):
    for _ in range(5):
        assert _login(client, password="guess-guess").status_code == 401
    r = _login(client)  # the right password, but locked for now
    assert r.status_code == 401 and "hr_session" not in r.headers.get("set-cookie", "")
    assert "try again" in r.text.lower() or "too many" in r.text.lower(), r.text
    state.reset_throttle()
    assert _login(client).status_code == 303


def test_posts_from_another_site_are_refused(client, state):
    r = _login(client, origin="http://evil.example")
    assert r.status_code == 403 and "hr_session" not in r.headers.get("set-cookie", "")
    assert _login(client, referer="http://evil.example/page").status_code == 403
    assert _login(client, origin="http://testserver").status_code == 303
    token = client.cookies.get("hr_session")
    assert client.post("/logout", headers={"origin": "http://evil.example"}).status_code == 403
    assert state.session_user(token) is not None


def test_what_the_form_echoes_is_escaped(client):
    evil = '"><script>alert(1)</script>'
    r = client.post("/login", data={"username": evil, "password": "x" * 9, "next": evil}, follow_redirects=False)
    assert r.status_code == 401 and "<script>alert" not in r.text and "&lt;script&gt;" in r.text
    page = client.get("/login", params={"next": '"><img src=x onerror=alert(1)>'})
    assert "<img" not in page.text


@pytest.mark.parametrize("value, expected", [
    ("/", "/"), ("/?x=1", "/?x=1"), ("//evil.example/", "/"), ("http://evil.example/", "/"), ("evil", "/"),
    ("/\\evil", "/"), ("/\nset-cookie", "/"), (None, "/"), ("", "/")])
def test_only_local_paths_are_followed_after_sign_in(value, expected):
    assert signin.safe_next(value) == expected


def test_the_form_says_how_to_create_the_first_admin(settings, state):
    with TestClient(_app(settings)) as c:
        text = c.get("/login").text
        assert "No admin account exists yet" in text and "hybrid-rag users add NAME --role admin" in text
        assert "HYBRID_RAG_ADMIN_PASSWORD" in text
        state.add_user("root", "root-password-1", "admin")
        assert "No admin account" not in c.get("/login").text


def test_single_sign_on_only_from_trusted_proxies(settings, state):
    settings.auth.sso_header = "X-Forwarded-User"
    settings.auth.trusted_proxies = ["10.0.0.0/8"]
    headers = {"X-Forwarded-User": "bob"}
    with TestClient(_app(settings), client=("192.0.2.9", 1)) as c:  # not a proxy: the header is ignored
        assert c.get("/config", headers=headers).status_code == 401
        assert c.get("/", headers=headers, follow_redirects=False).status_code == 303
    assert state.get_user("bob") is None
    with TestClient(_app(settings), client=("10.1.2.3", 1)) as c:
        assert c.get("/config", headers=headers).json()["username"] == "bob"
        assert c.get("/", headers=headers, follow_redirects=False).status_code == 200
        assert c.get("/config").status_code == 401  # no header, no session: not signed in
    bob = state.get_user("bob")
    assert bob is not None and bob.role == settings.auth.sso_role == "reader"
    settings.auth.sso_header = ""  # off (the default): the header means nothing, even from the proxy
    signin.clear_cache()
    with TestClient(_app(settings), client=("10.1.2.3", 1)) as c:
        assert c.get("/config", headers=headers).status_code == 401


def test_throttling_uses_the_forwarded_address_only_behind_a_trusted_proxy(settings, state):
    settings.auth.trusted_proxies = ["127.0.0.1"]
    with TestClient(_app(settings), client=("127.0.0.1", 1)) as c:
        for _ in range(5):  # one guesser behind the proxy ...
            _login(c, user="alice", password="guess-guess", **{"x-forwarded-for": "203.0.113.7"})
        # ... is locked out from its own address, but alice from another address behind the same proxy is not
        # locked by address (the account lock still holds: both count)
        r = _login(c, user="alice", **{"x-forwarded-for": "198.51.100.1"})
        assert r.status_code == 401  # the account is locked after 5 failures
        state.add_user("carol", "carol-password", "reader")
        assert _login(c, user="carol", password="carol-password", **{"x-forwarded-for": "198.51.100.1"}
                      ).status_code == 303
        assert _login(c, user="carol", password="carol-password", **{"x-forwarded-for": "203.0.113.7"}
                      ).status_code == 401
