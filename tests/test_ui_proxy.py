"""Behind a reverse proxy on the same host, against the real server (``hybrid-rag serve`` in a subprocess).

uvicorn by default believes ``X-Forwarded-For``/``-Proto`` from 127.0.0.1 and replaces the peer address before the
app sees it; ``serve`` turns that off, so only ``auth.trusted_proxies`` decides (rag/state/clients.py). Checked:

- a trusted proxy on loopback that sends ``X-Forwarded-For`` (as nginx does) still signs the SSO user in, its
  forwarded address is the one throttled, and its ``X-Forwarded-Proto: https`` makes the cookie Secure;
- an untrusted peer's forged ``X-Forwarded-For``, ``X-Forwarded-Proto`` and SSO header change nothing: its own
  address is throttled, nobody is signed in, the cookie is not Secure; with ``trusted_proxies`` empty that holds
  for 127.0.0.1 too.

The untrusted peer of the first server is 127.0.0.2 (a client socket bound there; all of 127/8 is loopback)."""
from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from reliability_kit import add_user, serve

PW = "proxy-test-password"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(behind, alone): one server trusting 127.0.0.1 as its proxy with the SSO header on, one with the defaults
    (no trusted proxy, no SSO header)."""
    proxy_env = {"HYBRID_RAG__AUTH__TRUSTED_PROXIES": "127.0.0.1", "HYBRID_RAG__AUTH__SSO_HEADER": "X-Forwarded-User",
                 "FORWARDED_ALLOW_IPS": "127.0.0.1,::1"}   # uvicorn's own default, set here in case the env differs
    roots = [tmp_path_factory.mktemp("behind-proxy"), tmp_path_factory.mktemp("no-proxy")]
    with ThreadPoolExecutor(2) as pool:   # start both at once
        futures = [pool.submit(serve, roots[0], proxy_env), pool.submit(serve, roots[1], {"FORWARDED_ALLOW_IPS":
                                                                                          "127.0.0.1,::1"})]
        started = []
        try:
            for f in futures:
                started.append(f.result())
        except BaseException:
            for s in started:
                s.stop()
            raise
    try:
        for s in started:
            add_user(s.data, "alice", PW, "reader")
        yield started
    finally:
        for s in started:
            s.stop()


def _client(url: str, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=url, trust_env=False, timeout=60, follow_redirects=False,
                        transport=httpx.HTTPTransport(local_address=source))


def _throttled(served) -> set[str]:
    """The client addresses with failed sign-ins counted in the server's state database."""
    with sqlite3.connect(served.data / "state.sqlite") as db:
        return {r[0].removeprefix("client:") for r in db.execute("SELECT subject FROM auth_throttle")
                if r[0].startswith("client:")}


def _wrong_password(c: httpx.Client, **headers) -> None:
    r = c.post("/login", data={"username": "alice", "password": "not-her-password", "next": "/"}, headers=headers)
    assert r.status_code == 401 and "Wrong user name or password" in r.text, r.text[:300]


def _sign_in(c: httpx.Client, **headers) -> httpx.Response:
    r = c.post("/login", data={"username": "alice", "password": PW, "next": "/"}, headers=headers)
    assert r.status_code == 303, r.text[:300]
    return r


def _clear_throttle(served) -> None:
    with sqlite3.connect(served.data / "state.sqlite") as db:
        db.execute("DELETE FROM auth_throttle")


def test_sso_and_throttling_through_a_trusted_proxy_on_loopback(servers):
    behind, _ = servers
    proxied = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}   # what nginx adds
    with _client(behind.url) as proxy:
        r = proxy.get("/", headers={**proxied, "X-Forwarded-User": "bob"})
        assert r.status_code == 200, (r.status_code, r.headers.get("location"))   # not sent to /login
        assert proxy.get("/config", headers={**proxied, "X-Forwarded-User": "bob"}).json()["username"] == "bob"
        assert proxy.get("/", headers=proxied).status_code == 303   # no SSO header, no session: the form

        _clear_throttle(behind)
        _wrong_password(proxy, **proxied)   # the client behind the proxy is throttled, not the proxy
        assert _throttled(behind) == {"203.0.113.7"}
        r = _sign_in(proxy, **proxied)      # the browser used https at the proxy: the cookie is Secure
        assert "secure" in r.headers["set-cookie"].lower()
        r = _sign_in(proxy, **{"X-Forwarded-For": "203.0.113.7"})   # plain http at the proxy: not Secure
        assert "secure" not in r.headers["set-cookie"].lower()


def test_forged_forwarding_headers_from_an_untrusted_peer_change_nothing(servers):
    behind, alone = servers
    forged = {"X-Forwarded-For": "198.51.100.9", "X-Forwarded-Proto": "https", "X-Forwarded-User": "admin"}
    # 127.0.0.2 is not the trusted proxy of the first server
    with _client(behind.url, source="127.0.0.2") as c:
        assert c.get("/", headers=forged).status_code == 303
        assert c.get("/config", headers=forged).status_code == 401
        _clear_throttle(behind)
        _wrong_password(c, **forged)
        assert _throttled(behind) == {"127.0.0.2"}
        assert "secure" not in _sign_in(c, **forged).headers["set-cookie"].lower()
    # no trusted proxy at all: 127.0.0.1 (which uvicorn itself would believe by default) is just a client
    with _client(alone.url) as c:
        assert c.get("/", headers=forged).status_code == 303
        assert c.get("/config", headers=forged).status_code == 401
        _clear_throttle(alone)
        for address in ("198.51.100.9", "198.51.100.10"):   # a guesser cannot pick the address that is locked
            _wrong_password(c, **{**forged, "X-Forwarded-For": address})
        assert _throttled(alone) == {"127.0.0.1"}
        assert "secure" not in _sign_in(c, **forged).headers["set-cookie"].lower()
    from rag.state import open_state_at

    assert open_state_at(alone.data).get_user("admin") is None and open_state_at(behind.data).get_user("admin") is None
