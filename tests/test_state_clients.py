"""client_address / sso_user_name: proxy headers are believed only from auth.trusted_proxies."""
from types import SimpleNamespace

import pytest

from rag.config import AuthSettings
from rag.schema import ConfigError
from rag.state import client_address, sso_user_name


def req(peer, **headers):
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers={k.replace("_", "-"): v for k, v in headers.items()})


AUTH = AuthSettings(trusted_proxies=["127.0.0.1", "10.0.0.0/8"], sso_header="X-Forwarded-User")
SETTINGS = SimpleNamespace(auth=AUTH)


@pytest.mark.parametrize("peer,xff,expected", [
    ("203.0.113.9", None, "203.0.113.9"),                              # direct client
    ("203.0.113.9", "1.2.3.4", "203.0.113.9"),                         # an untrusted peer cannot claim an address
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),                     # behind our proxy: the real client
    ("127.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),            # the client forged the left entry
    ("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3", "198.51.100.7"),  # two of our proxies in a row
    ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),                   # all trusted: the left-most
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),                           # garbage: the peer
    ("127.0.0.1", None, "127.0.0.1"),
    ("::ffff:10.0.0.5", "198.51.100.7", "198.51.100.7"),               # IPv4-mapped IPv6 peer
    (None, None, "-"),
])
def test_client_address(peer, xff, expected):
    headers = {"x-forwarded-for": xff} if xff else {}
    r = SimpleNamespace(client=SimpleNamespace(host=peer) if peer else None, headers=headers)
    assert client_address(r, SETTINGS) == expected
    assert client_address(r, AUTH) == expected      # the auth section alone works too


def test_no_trusted_proxies_means_the_peer_always():
    r = req("127.0.0.1", x_forwarded_for="198.51.100.7", X_Forwarded_User="root")
    assert client_address(r, AuthSettings()) == "127.0.0.1"
    assert sso_user_name(r, AuthSettings(sso_header="X-Forwarded-User")) is None


def test_sso_header_only_from_a_trusted_proxy_and_only_when_set():
    assert sso_user_name(req("127.0.0.1", X_Forwarded_User=" alice "), SETTINGS) == "alice"   # any header case
    assert sso_user_name(req("203.0.113.9", X_Forwarded_User="alice"), SETTINGS) is None     # forged directly
    assert sso_user_name(req("127.0.0.1", X_Forwarded_User=""), SETTINGS) is None
    assert sso_user_name(req("127.0.0.1"), SETTINGS) is None
    off = AuthSettings(trusted_proxies=["127.0.0.1"])
    assert sso_user_name(req("127.0.0.1", X_Forwarded_User="alice"), off) is None


def test_auth_settings_from_the_environment_and_bad_proxies(monkeypatch, data_dir):
    from rag.config import load_settings

    monkeypatch.setenv("HYBRID_RAG__AUTH__TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")
    monkeypatch.setenv("HYBRID_RAG__AUTH__SESSION_TTL_S", "600")
    s = load_settings()
    assert s.auth.trusted_proxies == ["127.0.0.1", "10.0.0.0/8"] and s.auth.session_ttl_s == 600
    assert s.auth.sso_header == "" and s.auth.sso_role == "reader"
    monkeypatch.setenv("HYBRID_RAG__AUTH__TRUSTED_PROXIES", "proxy.example.org")
    with pytest.raises(ConfigError, match="not an IP address or CIDR"):
        load_settings()


@pytest.mark.parametrize("scheme,peer,proto,expected", [
    ("https", "203.0.113.9", None, True),             # https to the app itself
    ("http", "127.0.0.1", "https", True),             # our proxy says the browser used https
    ("http", "127.0.0.1", "https, http", True),       # the left-most hop is the browser's
    ("http", "127.0.0.1", "http", False),
    ("http", "127.0.0.1", None, False),
    ("http", "203.0.113.9", "https", False),          # anyone else cannot claim it
])
def test_is_https_believes_x_forwarded_proto_only_from_trusted_proxies(scheme, peer, proto, expected):
    from rag.state.clients import is_https

    r = SimpleNamespace(url=SimpleNamespace(scheme=scheme), client=SimpleNamespace(host=peer),
                        headers={"x-forwarded-proto": proto} if proto else {})
    assert is_https(r, SETTINGS) is expected
    assert is_https(r, AuthSettings()) is (scheme == "https")   # no trusted proxy: only the request's own scheme
