"""`hybrid-rag serve` as a user starts it: the web app at / and the API at /v1 on one port, a user made with
`hybrid-rag users add` and a key for them with `hybrid-rag keys create --user` (its last output line), and the
official openai SDK as the client. Answers come from the fake NIM on loopback, wired in as the `local` endpoint
through its base-URL variable."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

TOKENS = ["Upload ", "files ", "in the ", "Documents ", "tab ", "[1]", "."]


def _cli(served_or_env, *args, check=True):
    env, root, bin_ = served_or_env["env"], served_or_env["root"], served_or_env["bin"]
    return subprocess.run([bin_, *args], env={**env, "HYBRID_RAG_NEW_PASSWORD": "serve-test-pw-1"}, cwd=root,
                          capture_output=True, text=True, check=check)


def _key(served_or_env, name, scope, user) -> str:
    """A key made on the command line: the last line of `keys create`."""
    return _cli(served_or_env, "keys", "create", "--name", name, "--scope", scope, "--user", user).stdout.strip() \
        .splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, hybrid_rag_bin):
    from rag.catalog import Catalog
    from rag.testing.fake_nim import FakeNIM, Script

    catalog = Catalog.load()
    nim = FakeNIM(models=tuple(m.serves["local"] for m in catalog.models if "local" in m.serves),
                  default=Script(tokens=TOKENS)).start()
    root = tmp_path_factory.mktemp("api-serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_RAG")}
    env.update({"HYBRID_RAG_DATA": str(root / "data"), catalog.endpoint("local").base_url_env: nim.base_url,
                "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"})
    cli = {"env": env, "root": root, "bin": hybrid_rag_bin}
    _cli(cli, "users", "add", "ci", "--role", "admin")
    key = _key(cli, "ci", "admin", "ci")
    port = _free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen([hybrid_rag_bin, "serve", "--port", str(port)], env=env, cwd=root, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:  # ready: the starter collection is built and the embedder loaded
        assert proc.poll() is None, (root / "server.log").read_text()
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (root / "server.log").read_text()
        time.sleep(0.5)
    yield {"url": url, "key": key, "nim": nim, "env": env, "root": root, "bin": hybrid_rag_bin}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    nim.stop()


def test_one_port_serves_the_web_app_and_the_api(served):
    url = served["url"]
    page = httpx.get(url + "/", timeout=10, follow_redirects=True)  # signed out: the sign-in page
    assert page.status_code == 200 and page.url.path == "/login" and "<html" in page.text.lower()
    with httpx.Client(timeout=10) as browser:  # the API's user signs in to the web app on the same port
        r = browser.post(url + "/login", data={"username": "ci", "password": "serve-test-pw-1", "next": "/"})
        assert r.status_code == 303, r.text
        page = browser.get(url + "/")
        assert page.status_code == 200 and "<html" in page.text.lower()
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert "/v1/chat/completions" in httpx.get(url + "/openapi.json").json()["paths"]
    assert httpx.get(url + "/v1/models").status_code == 401


def test_the_openai_sdk_gets_an_answer_with_citations(served):
    from openai import OpenAI

    client = OpenAI(base_url=served["url"] + "/v1", api_key=served["key"], max_retries=0, timeout=60)
    r = client.chat.completions.create(model="speed", messages=[{"role": "user", "content": "How do I upload files?"}],
                                       extra_body={"collection": "hybrid-rag-docs"})
    assert r.choices[0].message.content == "".join(TOKENS)
    cites = r.model_extra["citations"]
    assert cites[0]["index"] == 1 and cites[0]["cited"] and cites[0]["document"]
    assert r.model_extra["x_hybrid_rag"]["endpoint"]["name"] == "local"
    stream = client.chat.completions.create(model="speed", stream=True, extra_body={"collection": "hybrid-rag-docs"},
                                            messages=[{"role": "user", "content": "How do I upload files?"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TOKENS)
    assert chunks[-1].model_extra["citations"][0]["index"] == 1
    metrics = httpx.get(served["url"] + "/metrics").text
    assert 'hybrid_rag_ttft_seconds_count{endpoint="local"' in metrics


def test_rights_and_keys_changed_on_the_command_line_count_at_once(served):
    """A reader's key reads the starter collection (readable by every user) and nothing it was not given; a grant,
    a revoke of the key and the removal of a user on the command line count from the next request."""
    url = served["url"] + "/v1"
    admin = {"Authorization": f"Bearer {served['key']}"}
    assert httpx.post(url + "/collections", headers=admin, json={"name": "private"}).status_code == 201
    _cli(served, "users", "add", "rita", "--role", "reader")
    key = _key(served, "temp", "read", "rita")
    h = {"Authorization": f"Bearer {key}"}
    assert httpx.get(url + "/models", headers=h).status_code == 200
    assert [c["name"] for c in httpx.get(url + "/collections", headers=h).json()["data"]] == ["hybrid-rag-docs"]
    search = {"query": "upload", "collection": "private"}
    assert httpx.post(url + "/search", headers=h, json=search).status_code == 404
    assert httpx.post(url + "/collections", headers=h, json={"name": "x"}).status_code == 403
    _cli(served, "collections", "grant", "private", "rita", "--as", "reader")
    assert httpx.post(url + "/search", headers=h, json=search).status_code == 200
    _cli(served, "keys", "revoke", "temp")
    assert httpx.get(url + "/models", headers=h).status_code == 401
    listed = _cli(served, "keys", "list").stdout
    assert "ci" in listed and "temp" not in listed and served["key"] not in listed
    key = _key(served, "temp2", "read", "rita")
    assert httpx.post(url + "/search", headers={"Authorization": f"Bearer {key}"}, json=search).status_code == 200
    _cli(served, "users", "remove", "rita")
    r = httpx.post(url + "/search", headers={"Authorization": f"Bearer {key}"}, json=search)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
