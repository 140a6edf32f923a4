"""The HTTP API through real clients: the official ``openai`` SDK, LangChain's ``ChatOpenAI`` and raw HTTP,
against the FastAPI app served by uvicorn on loopback, answering from a fake NIM (real HTTP/SSE) over a
small real collection. The embedder is the fast deterministic test one (the API is what is tested here).
The keys belong to an admin user of the state database (rights per collection: tests/test_api_rights.py)."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from reliability_kit import FakeEmbedder

from rag.testing.fake_nim import Script, fake_catalog
from rag.testing.server import ServerThread

FAKE = FakeEmbedder()
DOCS = {
    "cats.md": "# Cats\n\nCats sleep sixteen hours a day. The cat purrs when it is content.",
    "dogs.md": "# Dogs\n\nDogs like long walks in the park and they sleep less than cats do.",
    "guide/herons.md": "# Herons\n\nHerons hunt fish in shallow water at dawn. The heron stands still.",
}
ANSWER = "The answer is in the sources [1]."


def _build(settings, nim, *, embedder=FAKE, keys=True):
    """The app over a collection "docs"; with ``keys``, an admin user "root" with a read key ("reader") and
    an admin key ("boss")."""
    from api import create_app
    from api.keys import KeyStore
    from rag.engine import Engine
    from ui.backend import Backend

    backend = Backend(settings, engine=Engine(settings, embedder=embedder, catalog=fake_catalog(nim.base_url)))
    backend.ingest("docs", [(n, t.encode()) for n, t in DOCS.items()])
    store = KeyStore(backend.state)
    if keys:
        backend.state.add_user("root", "root-password-1", "admin")
    read = store.create("reader", "read", "root") if keys else None
    admin = store.create("boss", "admin", "root") if keys else None
    return create_app(settings, backend=backend, ui=False), backend, store, read, admin


@pytest.fixture
def api(settings, fake_nim):
    app, backend, store, read, admin = _build(settings, fake_nim)
    with ServerThread(app) as srv:
        yield SimpleNamespace(url=srv.url, v1=srv.url + "/v1", read=read, admin=admin, nim=fake_nim, backend=backend,
                              store=store, settings=settings, svc=app.state.service)
    backend.jobs.close(timeout=10)


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _err(r, status, code=None, param=None):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert e["message"] and e["type"]
    if code:
        assert e["code"] == code, e
    if param:
        assert e["param"] == param, e
    return e


# --- chat through the official SDK and LangChain -------------------------------------------------------

def test_openai_sdk_answer_with_citations(api):
    from openai import OpenAI

    client = OpenAI(base_url=api.v1, api_key=api.read, max_retries=0)
    r = client.chat.completions.create(model="speed", messages=[{"role": "user", "content": "How long do cats sleep?"}],
                                       extra_body={"collection": "docs", "top_k": 3, "mode": "hybrid"})
    assert r.choices[0].message.content == ANSWER
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "fake/model"
    cites = r.model_extra["citations"]
    assert 1 <= len(cites) <= 3 and [c["index"] for c in cites] == list(range(1, len(cites) + 1))
    first = cites[0]
    assert first["cited"] is True and all(c["cited"] is False for c in cites[1:])
    top = api.backend.search("docs", "How long do cats sleep?", k=3).hits[0].chunk
    assert first["document"] == top.source in DOCS and first["chunk_id"] == top.id
    assert first["fused_rank"] == 1 and first["dense_rank"] and first["sparse_rank"]
    # the text in the citation is the text the model was sent as [1]
    sent = api.nim.chat_requests[-1]["json"]["messages"][-1]["content"]
    assert "[1] (" in sent and first["text"].strip() in sent
    x = r.model_extra["x_hybrid_rag"]
    assert x["route"] == "speed" and x["model"] == "fake/model" and x["endpoint"] == {"name": "local",
                                                                                     "kind": "local_nim"}
    assert x["collection"] == "docs" and x["retrieval_mode"] == "hybrid" and x["citations"]["used"] == [1]
    assert x["retrieval_ms"] > 0 and x["ttft_ms"] > 0 and x["fallbacks"] == []
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens >= r.usage.completion_tokens


def test_openai_sdk_stream_ends_with_citations(api):
    from openai import OpenAI

    client = OpenAI(base_url=api.v1, api_key=api.read, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="fake/model", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Where do herons hunt?"}], extra_body={"collection": "docs"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert any(c.usage and c.usage.completion_tokens for c in chunks)
    last = chunks[-1]  # with include_usage: the usage chunk, after the finish chunk
    assert last.choices == [] and last.usage.completion_tokens and last.model_extra["citations"][0]["index"] == 1
    assert last.model_extra["citations"][0]["document"] in DOCS
    x = last.model_extra["x_hybrid_rag"]
    assert x["model"] == "fake/model" and x["mode"] == "model" and x["ttft_ms"] is not None
    assert all(c.model == "fake/model" for c in chunks)


def test_the_plain_streaming_loop_of_the_sdk_works(api):
    """`for chunk in stream: chunk.choices[0].delta.content`, the loop in OpenAI's own examples; without
    include_usage the finish chunk, the last before [DONE], carries the citations."""
    from openai import OpenAI

    chunks = list(OpenAI(base_url=api.v1, api_key=api.read, max_retries=0).chat.completions.create(
        model="speed", stream=True, messages=[{"role": "user", "content": "cats?"}], extra_body={"collection": "docs"}))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["citations"][0]["cited"]
    assert sum("citations" in (c.model_extra or {}) for c in chunks) == 1


UNCITED = "The moon is made of green cheese and orbits slowly."
INVENTED = "Cats are secretly purple aliens from Mars [1]."


def _check_of(citations, x):
    """The citation check as the API reports it: per-citation verdicts agree with x_hybrid_rag.verification."""
    v = x["verification"]
    assert v["checked"] and v["counts"] == {"sentences": 3, "claims": 3, "supported": 1, "unsupported": 1,
                                            "uncited": 1}
    assert [s["text"] for s in v["unsupported"]] == [INVENTED]
    assert [s["text"] for s in v["uncited"]] == [UNCITED] and v["uncited"][0]["closest"] is None
    first = citations[0]
    assert first["cited"] and first["supported"] is False and 0 < first["support_score"] < 1
    assert first["support_score"] == v["sources"][0]["support_score"]
    assert all(c["supported"] is None and c["support_score"] is None for c in citations[1:])


def test_citations_say_whether_the_sentences_citing_them_are_supported(api):
    """Non-streaming: top-level citations and x_hybrid_rag; streaming: the chunk before [DONE] (raw SSE)."""
    import json

    question = "How long do cats sleep?"
    top = api.backend.search("docs", question, k=2).hits[0].chunk.text   # source [1]
    said = top.split("\n")[-1].rstrip(".")                                # its sentence, as written
    api.nim.default = Script(tokens=[said + " [1]. ", INVENTED + " ", UNCITED])
    body = {"model": "speed", "collection": "docs", "top_k": 2, "messages": [{"role": "user", "content": question}]}
    r = httpx.post(api.v1 + "/chat/completions", json=body, headers=_h(api.read), timeout=30)
    assert r.status_code == 200, r.text
    _check_of(r.json()["citations"], r.json()["x_hybrid_rag"])
    with httpx.Client(timeout=30) as c, c.stream("POST", api.v1 + "/chat/completions", headers=_h(api.read),
                                                 json={**body, "stream": True}) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "stop"
    _check_of(last["citations"], last["x_hybrid_rag"])
    assert all("citations" not in json.loads(e) for e in events[:-2])


def test_a_stream_that_breaks_upstream_is_an_error_not_an_answer(api):
    from openai import APIError as OpenAIError
    from openai import OpenAI

    body = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}]}
    api.nim.queue(Script(disconnect_after=2))
    e = _err(httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30), 502,
             "upstream_broken")
    assert "broke" in e["message"]
    api.nim.queue(Script(disconnect_after=2))
    client = OpenAI(base_url=api.v1, api_key=api.read, max_retries=0)
    got = []
    with pytest.raises(OpenAIError, match="broke"):
        for chunk in client.chat.completions.create(model="speed", stream=True, messages=body["messages"],
                                                    extra_body={"collection": "docs"}):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "The answer is in "  # the text so far arrived; the error says it is not whole
    assert api.svc.slots.busy("reader") == 0


def test_langchain_chat_openai_invoke_and_stream(api):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=api.v1, api_key=api.read, model="speed", max_retries=0,
                     extra_body={"collection": "docs", "top_k": 2})
    msg = llm.invoke("How long do cats sleep?")
    assert msg.content == ANSWER
    streamed = "".join(c.content for c in llm.stream("How long do cats sleep?"))
    assert streamed == ANSWER


def test_history_goes_to_the_model(api):
    r = httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), timeout=30, json={
        "model": "speed", "collection": "docs", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me about cats."},
            {"role": "assistant", "content": "Cats sleep a lot [1]."},
            {"role": "user", "content": [{"type": "text", "text": "And dogs?"}]}]})
    assert r.status_code == 200, r.text
    sent = api.nim.chat_requests[-1]["json"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "Tell me about cats." and sent[-1]["content"].endswith("Question: And dogs?")
    assert r.json()["x_hybrid_rag"]["history"]["kept"] == 2


def test_auto_route_and_sampling_fields_reach_the_model(api):
    r = httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), timeout=30, json={
        "model": "auto", "collection": "docs", "temperature": 0.1, "top_p": 0.5, "max_tokens": 50, "seed": 7,
        "stop": "END", "messages": [{"role": "user", "content": "Do cats purr?"}]})
    assert r.status_code == 200, r.text
    sent = api.nim.chat_requests[-1]["json"]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"]) == (0.1, 0.5, 50, 7)
    assert sent["stop"] in ("END", ["END"])
    assert r.json()["x_hybrid_rag"]["route"] in ("speed", "quality", "openusd")


def test_models_lists_routes_and_catalog_models(api):
    from openai import OpenAI

    ids = [m.id for m in OpenAI(base_url=api.v1, api_key=api.read, max_retries=0).models.list()]
    assert ids[:4] == ["auto", "speed", "quality", "openusd"]
    assert {"fake/model", "fake/big", "smollm2-135m-instruct"} <= set(ids)
    r = httpx.get(api.v1 + "/models/fake/model", headers=_h(api.read))
    assert r.status_code == 200 and r.json()["x_hybrid_rag"]["route"] == "speed"
    # fake/big has no serves.local line, but the local server lists it (GET /v1/models): it is used there too
    big = httpx.get(api.v1 + "/models/fake/big", headers=_h(api.read)).json()["x_hybrid_rag"]
    assert big["found_locally"] == ["local"] and big["endpoints"][0] == "local" and big["catalog"] is True
    _err(httpx.get(api.v1 + "/models/nope", headers=_h(api.read)), 404, "model_not_found")


# --- bad input: 422 that names the field -------------------------------------------------------------

@pytest.mark.parametrize("extra, param", [
    ({"temperature": 5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": -1}, "seed"),
    ({"stop": ["x"] * 17}, "stop"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 5000}, "top_k"),
    ({"mode": "fuzzy"}, "mode"),
    ({"n": 2}, "n"),
    ({"collection": None}, "collection"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x" * 1_000_001}]}, "messages[0].content"),
])
def test_bad_chat_requests_are_422_naming_the_field(api, extra, param):
    body = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}], **extra}
    body = {k: v for k, v in body.items() if v is not None}
    e = _err(httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30), 422)
    assert e["param"] == param, e
    assert not api.nim.chat_requests  # nothing reached the model


def test_a_question_too_long_for_every_model_is_422(api, fake_embedded):
    # fake/model: 512 tokens; the embedded model 2,048; fake/big (128k) is off
    api.svc.backend.engine._catalog = fake_catalog(api.nim.base_url, context=512, fallback_order=("local", "embedded"))
    api.nim.models = ["fake/model"]
    body = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "why " * 3000}]}
    e = _err(httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30), 422,
             "context_length_exceeded")
    assert "too long" in e["message"]


def test_malformed_json_and_damaged_collections(api):
    r = httpx.post(api.v1 + "/search", headers={**_h(api.read), "content-type": "application/json"}, content=b"{nope")
    e = _err(r, 422, "invalid_json")
    assert "not valid JSON" in e["message"]
    (api.settings.data_dir / "collections" / "docs" / "CURRENT").write_text("v999999")
    from rag.store.reader import _CACHE

    _CACHE.clear()
    e = _err(httpx.post(api.v1 + "/search", headers=_h(api.read), json={"query": "q", "collection": "docs"}), 500,
             "collection_unreadable")
    assert str(api.settings.data_dir) not in e["message"]
    r = httpx.delete(api.v1 + "/collections/docs", headers=_h(api.admin))  # a damaged one can still be deleted
    assert r.status_code == 200, r.text
    _err(httpx.get(api.v1 + "/collections/docs", headers=_h(api.admin)), 404)


def test_unknown_model_and_collection_are_404(api):
    body = {"model": "gpt-9", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}]}
    _err(httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body), 404, "model_not_found")
    body.update(model="speed", collection="nope")
    _err(httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30), 404, "not_found")
    assert api.svc.slots.busy("reader") == 0  # refused requests give their slot back


def test_no_model_available_is_503_with_reasons(api, monkeypatch):
    from rag.llm import EmbeddedClient, EmbeddedUnavailable
    from rag.testing.fake_nim import closed_port_url

    def unavailable(self, messages, params):
        raise EmbeddedUnavailable("the embedded model is not installed")

    monkeypatch.setattr(EmbeddedClient, "open", unavailable)
    api.svc.backend.engine._catalog = fake_catalog(closed_port_url(), fallback_order=("local", "hosted"))
    body = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}]}
    e = _err(httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30), 503,
             "no_model_available")
    assert "local" in e["message"] and "sekrit" not in e["message"]


# --- keys and scopes ---------------------------------------------------------------------------------------

def test_keys_and_scopes(api):
    chat = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}]}
    r = httpx.post(api.v1 + "/chat/completions", json=chat)
    _err(r, 401, "missing_api_key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    _err(httpx.post(api.v1 + "/chat/completions", json=chat, headers=_h("hr_wrong")), 401, "invalid_api_key")
    _err(httpx.post(api.v1 + "/chat/completions", json=chat, headers={"Authorization": api.read}), 401)
    # read: chat, search, models, list collections and documents; not changes or jobs
    for method, path in [("GET", "/models"), ("GET", "/collections"), ("GET", "/collections/docs"),
                         ("GET", "/collections/docs/documents")]:
        assert httpx.request(method, api.v1 + path, headers=_h(api.read)).status_code == 200, path
    for method, path, body in [("POST", "/collections", {"name": "x"}), ("DELETE", "/collections/docs", None),
                               ("DELETE", "/collections/docs/documents/cats.md", None), ("GET", "/jobs", None),
                               ("GET", "/jobs/abc", None), ("DELETE", "/jobs/abc", None)]:
        r = httpx.request(method, api.v1 + path, headers=_h(api.read), json=body)
        _err(r, 403, "insufficient_scope")
    r = httpx.post(api.v1 + "/collections/docs/documents", headers=_h(api.read), files={"files": ("a.md", b"# A")})
    _err(r, 403, "insufficient_scope")
    assert [d["doc_id"] for d in api.backend.open("docs").documents()] == sorted(DOCS)  # nothing changed
    # a key revoked on the command line is refused from the next request, without a restart
    api.store.revoke("reader")
    _err(httpx.get(api.v1 + "/models", headers=_h(api.read)), 401, "invalid_api_key")
    assert httpx.get(api.v1 + "/models", headers=_h(api.admin)).status_code == 200


def test_no_key_configured_refuses_with_how_to(settings, fake_nim):
    app, backend, *_ = _build(settings, fake_nim, keys=False)
    with ServerThread(app) as srv:
        e = _err(httpx.get(srv.url + "/v1/models"), 401, "no_api_keys")
        assert "hybrid-rag keys create" in e["message"] and "--user" in e["message"]
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_the_state_database_never_holds_the_key(api):
    from pathlib import Path

    db = Path(api.svc.state.url.split("///", 1)[1])  # sqlite:///<data_dir>/state.sqlite
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # with the -wal file
    assert raw and api.read.encode() not in raw and api.admin.encode() not in raw
    assert api.read[7:].encode() not in raw and api.admin[7:].encode() not in raw  # beyond the shown prefix
    assert sorted(k.name for k in api.store.list()) == ["boss", "reader"]


def test_concurrent_generations_per_key_are_limited(api):
    api.svc.slots.limit = 1
    api.nim.queue(Script(tokens=["slow ", "answer [1]."], ttft_s=1.5))
    body = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}]}
    first = {}
    t = threading.Thread(target=lambda: first.setdefault("r", httpx.post(
        api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30)))
    t.start()
    deadline = time.monotonic() + 20
    while api.svc.slots.busy("reader") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30)
    _err(r, 429, "too_many_concurrent_requests")
    assert int(r.headers["retry-after"]) >= 1
    # another key has its own slots
    assert httpx.post(api.v1 + "/chat/completions", headers=_h(api.admin), json=body, timeout=30).status_code == 200
    t.join(30)
    assert first["r"].status_code == 200
    assert httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30).status_code == 200


def test_client_disconnect_stops_the_generation(api):
    from rag.metrics import GENERATIONS

    api.nim.queue(Script(tokens=[f"t{i} " for i in range(200)], chunk_delay_s=0.05))
    body = {"model": "speed", "collection": "docs", "stream": True,
            "messages": [{"role": "user", "content": "cats?"}]}
    with httpx.Client(timeout=30) as c, c.stream("POST", api.v1 + "/chat/completions", headers=_h(api.read),
                                                 json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [line for line, _ in zip(lines, range(8))]
        assert any('"content":"t1 "' in line for line in got)
    upstream = api.nim.chat_requests[-1]
    deadline = time.monotonic() + 5  # the whole answer would take 10 s
    while not (upstream["aborted"] and api.svc.slots.busy("reader") == 0):
        assert time.monotonic() < deadline, upstream
        time.sleep(0.05)
    assert upstream["sent"] < 200
    assert GENERATIONS._value.get() == 0


def test_a_client_gone_before_the_answer_ends_stops_it_unstreamed_too(api):
    api.nim.queue(Script(tokens=[f"t{i} " for i in range(200)], chunk_delay_s=0.05))
    body = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}]}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1 s of a 10 s answer
        httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=1.0)
    upstream = api.nim.chat_requests[-1]
    deadline = time.monotonic() + 5
    while not (upstream["aborted"] and api.svc.slots.busy("reader") == 0):
        assert time.monotonic() < deadline, upstream
        time.sleep(0.05)
    assert upstream["sent"] < 200


# --- search, collections, documents ---------------------------------------------------------------------

def test_search_with_explanations(api):
    r = httpx.post(api.v1 + "/search", headers=_h(api.read), json={"query": "herons fish", "collection": "docs", "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "hybrid" and len(body["hits"]) == 2 and body["retrieval_ms"] > 0
    h = body["hits"][0]
    assert h["rank"] == 1 and h["document"] == "guide/herons.md" and h["fused_rank"] == 1
    assert h["dense_rank"] is not None and h["sparse_rank"] is not None and isinstance(h["sparse_score"], float)
    r = httpx.post(api.v1 + "/search", headers=_h(api.read), json={"query": "herons", "collection": "docs",
                                                                     "mode": "sparse"})
    assert r.json()["mode"] == "sparse" and r.json()["hits"][0]["dense_rank"] is None
    for bad, param in [({"k": 0}, "k"), ({"query": ""}, "query"), ({"mode": "x"}, "mode"), ({"limit": 3}, "limit")]:
        _err(httpx.post(api.v1 + "/search", headers=_h(api.read), json={"query": "q", "collection": "docs", **bad}),
             422, param=param)
    _err(httpx.post(api.v1 + "/search", headers=_h(api.read), json={"query": "q"}), 422, param="collection")
    _err(httpx.post(api.v1 + "/search", headers=_h(api.read), json={"query": "q", "collection": "nope"}), 404)


def test_search_says_what_the_rerank_stage_did(api):
    from rag.testing.fake_nim import RankScript

    def search():
        r = httpx.post(api.v1 + "/search", headers=_h(api.read), json={"query": "where do herons hunt fish at dawn",
                                                                         "collection": "docs", "k": 3})
        assert r.status_code == 200, r.text
        return r.json()

    assert search()["rerank"] is None                       # off by default: no stage, nothing to report
    api.settings.rerank.enabled = True
    api.settings.rerank.base_url = api.nim.base_url
    api.settings.rerank.timeout_s = 2.0
    body = search()
    info = body["rerank"]
    assert info["applied"] is True and info["reason"] is None and info["failure"] is None
    assert info["where"] == "local" and info["reranked"] >= 3 and info["ms"] > 0 and "rerank_ms" in body["timings"]
    assert [h["rerank_rank"] for h in body["hits"]] == [1, 2, 3] and body["hits"][0]["document"] == "guide/herons.md"
    assert body["hits"][0]["rerank_score"] >= body["hits"][1]["rerank_score"]
    assert api.nim.rank_requests[-1]["json"]["query"]["text"] == "where do herons hunt fish at dawn"
    api.nim.ranking = RankScript(status=500)
    body = search()
    info = body["rerank"]
    assert info["applied"] is False and info["failure"] == "error"
    assert info["reason"] == "rerank skipped, fused order kept: HTTP 500"
    assert all(h["rerank_rank"] is None and h["rerank_score"] is None for h in body["hits"]) and len(body["hits"]) == 3


def test_collections_and_documents(api):
    h = _h(api.admin)
    r = httpx.post(api.v1 + "/collections", headers=h, json={"name": "team-a"})
    assert r.status_code == 201 and r.json()["name"] == "team-a" and r.json()["documents"] == 0
    _err(httpx.post(api.v1 + "/collections", headers=h, json={"name": "team-a"}), 409, "conflict")
    _err(httpx.post(api.v1 + "/collections", headers=h, json={"name": "../etc"}), 422)
    _err(httpx.post(api.v1 + "/collections", headers=h, json={"name": "<b>x</b>"}), 422)
    names = [c["name"] for c in httpx.get(api.v1 + "/collections", headers=h).json()["data"]]
    assert names == ["docs", "team-a"]
    docs = httpx.get(api.v1 + "/collections/docs/documents", headers=h).json()["data"]
    assert sorted(d["doc_id"] for d in docs) == sorted(DOCS) and all(d["chunks"] >= 1 for d in docs)
    r = httpx.delete(api.v1 + "/collections/docs/documents/guide/herons.md", headers=h)
    assert r.status_code == 200 and r.json() == {"id": "guide/herons.md", "object": "document", "deleted": True}
    _err(httpx.delete(api.v1 + "/collections/docs/documents/guide/herons.md", headers=h), 404)
    assert "guide/herons.md" not in [d["doc_id"] for d in api.backend.open("docs").documents()]
    assert httpx.delete(api.v1 + "/collections/team-a", headers=h).status_code == 200
    _err(httpx.get(api.v1 + "/collections/team-a", headers=h), 404, "not_found")
    _err(httpx.get(api.v1 + "/collections/..%2F..%2Fetc", headers=h), 404)
    _err(httpx.get(api.v1 + "/collections/a%20b", headers=h), 422)
    _err(httpx.get(api.v1 + "/nothing-here", headers=h), 404, "not_found")


# --- uploads and jobs ----------------------------------------------------------------------------------

def _wait_job(api, job_id, states=("done", "failed", "cancelled"), timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{api.v1}/jobs/{job_id}", headers=_h(api.admin)).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _zip(members: dict) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _metric(api, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(api.url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_upload_returns_a_job_with_per_file_results(api):
    chunks_before = _metric(api, "hybrid_rag_ingest_chunks_total")
    files = [("files", ("owls.md", b"# Owls\n\nOwls hunt at night.")),
             ("files", ("birds.zip", _zip({"wren.md": b"# Wren\n\nA small bird.", "lark.txt": b"Larks sing."}))),
             ("files", ("cats.md", DOCS["cats.md"].encode())),
             ("files", ("broken.pdf", b"%PDF-1.7 not really")),
             ("files", ("tool.exe", b"MZ\x90\x00"))]
    r = httpx.post(api.v1 + "/collections/docs/documents", headers=_h(api.admin), files=files)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" and job["state"] in ("queued", "running", "done")
    assert job["files"] == ["owls.md", "birds.zip", "cats.md", "broken.pdf", "tool.exe"]
    job = _wait_job(api, job["id"])
    assert job["state"] == "done" and job["progress"] == 1.0
    status = {x["name"]: x["status"] for x in job["results"]}
    assert status == {"owls.md": "added", "birds.zip/wren.md": "added", "birds.zip/lark.txt": "added",
                      "cats.md": "duplicate", "broken.pdf": "failed", "tool.exe": "failed"}
    assert job["chunks"] == 3
    states = {f["name"]: f["state"] for f in job["file_states"]}
    assert states["owls.md"] == states["birds.zip/wren.md"] == "committed" and states["cats.md"] == "duplicate"
    assert states["broken.pdf"] == "failed"
    assert _metric(api, "hybrid_rag_ingest_chunks_total") == chunks_before + 3
    assert _metric(api, "hybrid_rag_ingest_chunks_per_second_count") >= 1
    reasons = {x["name"]: x["error"] for x in job["results"]}
    assert "not accepted" in reasons["tool.exe"] and reasons["broken.pdf"]
    assert "owls.md" in [d["doc_id"] for d in api.backend.open("docs").documents()]
    listed = httpx.get(api.v1 + "/jobs", headers=_h(api.admin)).json()["data"]
    assert listed[0]["id"] == job["id"]
    assert not any((api.settings.data_dir / "uploads").iterdir())  # the staged files are gone


def test_upload_limits_each_have_their_message(api):
    h = _h(api.admin)
    api.settings.limits.max_files_per_upload = 2
    files = [("files", (f"f{i}.md", b"# F\n\ntext")) for i in range(3)]
    e = _err(httpx.post(api.v1 + "/collections/docs/documents", headers=h, files=files), 422, param="files")
    assert "at most 2 per upload" in e["message"]
    e = _err(httpx.post(api.v1 + "/collections/docs/documents", headers=h, files=files * 3), 422, param="files")
    assert "at most 2 per upload" in e["message"]
    api.settings.limits.max_file_bytes = 100
    e = _err(httpx.post(api.v1 + "/collections/docs/documents", headers=h,
                        files=[("files", ("big.md", b"x" * 500))]), 413, "too_large")
    assert "big.md" in e["message"] and "limits.max_file_bytes" in e["message"]
    e = _err(httpx.post(api.v1 + "/collections/docs/documents", headers=h,
                        files=[("other", ("a.md", b"# A"))]), 422, param="files")
    _err(httpx.post(api.v1 + "/collections/docs/documents", headers=h, json={"files": []}), 415)
    _err(httpx.post(api.v1 + "/collections/nope/documents", headers=h, files=[("files", ("a.md", b"# A"))]), 404)
    assert not any((api.settings.data_dir / "uploads").iterdir())


class SlowEmbedder(FakeEmbedder):
    """Blocks each embedding batch until released, so a cancel can land mid-ingest."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.calls = 0

    def encode_documents(self, texts):
        self.calls += 1
        if self.calls > 1:  # the fixture's own ingest goes through
            self.gate.wait(20)
        return super().encode_documents(texts)


def test_cancel_mid_ingest_keeps_the_earlier_documents(settings, fake_nim, monkeypatch):
    import ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMBED_BATCH", 2)
    slow = SlowEmbedder()
    app, backend, store, read, admin = _build(settings, fake_nim, embedder=slow)
    with ServerThread(app) as srv:
        v1, h = srv.url + "/v1", _h(admin)
        files = [("files", (f"bird{i}.md", f"# Bird {i}\n\nBird number {i} sings at dawn.".encode()))
                 for i in range(8)]
        job = httpx.post(v1 + "/collections/docs/documents", headers=h, files=files).json()
        deadline = time.monotonic() + 20
        while httpx.get(f"{v1}/jobs/{job['id']}", headers=h).json()["state"] != "running" or slow.calls < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = httpx.delete(f"{v1}/jobs/{job['id']}", headers=h)
        assert r.status_code in (200, 202)
        slow.gate.set()
        ns = SimpleNamespace(v1=v1, admin=admin)
        done = _wait_job(ns, job["id"])
        assert done["state"] == "cancelled" and "last committed version" in done["error"]
        docs = httpx.get(v1 + "/collections/docs/documents", headers=h).json()["data"]
        assert sorted(d["doc_id"] for d in docs) == sorted(DOCS)  # the last committed version
        r = httpx.post(v1 + "/search", headers=_h(read), json={"query": "cats sleep", "collection": "docs"})
        assert r.status_code == 200 and r.json()["hits"]
        # the writer lock was released: a later upload lands
        job2 = httpx.post(v1 + "/collections/docs/documents", headers=h,
                          files=[("files", ("owls.md", b"# Owls\n\nOwls hunt at night."))]).json()
        assert _wait_job(ns, job2["id"])["state"] == "done"
        assert httpx.delete(f"{v1}/jobs/{job['id']}", headers=h).json()["state"] == "cancelled"  # idempotent
        _err(httpx.get(f"{v1}/jobs/nope", headers=h), 404, "not_found")
    backend.jobs.close(timeout=10)


# --- health, readiness, metrics, docs -------------------------------------------------------------------

def test_health_readiness_metrics_and_docs(api):
    from openai import OpenAI

    assert httpx.get(api.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(api.url + "/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    OpenAI(base_url=api.v1, api_key=api.read, max_retries=0).chat.completions.create(
        model="speed", messages=[{"role": "user", "content": "cats?"}], extra_body={"collection": "docs"})
    httpx.get(api.v1 + "/collections/nope", headers=_h(api.read))
    text = httpx.get(api.url + "/metrics").text
    assert 'hybrid_rag_http_requests_total{method="POST",path="/v1/chat/completions",status="200"}' in text
    assert 'path="/v1/collections/{name}"' in text and 'status="404"' in text
    assert 'hybrid_rag_http_request_seconds_bucket' in text
    assert 'hybrid_rag_ttft_seconds_count{endpoint="local",model="fake/model"}' in text
    assert 'hybrid_rag_tokens_per_second_count{endpoint="local",model="fake/model"}' in text
    assert 'hybrid_rag_retrieval_seconds_count{mode="hybrid"}' in text
    assert 'hybrid_rag_jobs{state="running"}' in text
    schema = httpx.get(api.url + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/search", "/v1/collections/{name}/documents", "/v1/jobs/{job_id}"} <= set(
        schema["paths"])
    assert "swagger" in httpx.get(api.url + "/docs").text.lower()
    # a damaged collection makes the server unready, with the reason
    col = api.settings.data_dir / "collections" / "docs"
    (col / "CURRENT").write_text("garbage")
    from rag.store.reader import _CACHE

    _CACHE.clear()
    r = httpx.get(api.url + "/readyz")  # with no key: that one is, not which (the probe says nothing of names)
    assert r.status_code == 503 and "docs" not in r.text and len(r.json()["checks"]["collections"]["unreadable"]) == 1
    r = httpx.get(api.url + "/readyz", headers=_h(api.read))  # an admin user's key: which, and why
    assert r.status_code == 503 and "docs" in str(r.json()["checks"]["collections"]["unreadable"])


def test_big_bodies_are_refused_before_they_are_read(api):
    big = b"x" * (9 * 2**20)
    r = httpx.post(api.v1 + "/chat/completions", content=big, headers={"content-type": "application/json"})
    _err(r, 401, "missing_api_key")  # no key: refused before the body is read
    r = httpx.post(api.v1 + "/chat/completions", content=big, headers={**_h(api.read), "content-type": "application/json"})
    _err(r, 413, "too_large")

    def chunked():  # no Content-Length: counted while it is read
        for _ in range(9):
            yield b"x" * 2**20

    r = httpx.post(api.v1 + "/search", content=chunked(), headers={**_h(api.read), "content-type": "application/json"})
    _err(r, 413)
    assert httpx.get(api.url + "/healthz").status_code == 200


def test_every_v1_route_needs_a_key():
    """Structural: a route added without read_key/admin_key fails here (the scope test lists paths by hand)."""
    from fastapi.routing import APIRoute

    from api.chat import router as chat_router
    from api.documents import router as docs_router
    from api.service import admin_key, read_key

    def deps(d):
        return [d.call, *(c for sub in d.dependencies for c in deps(sub))]

    for route in [*chat_router.routes, *docs_router.routes]:
        assert isinstance(route, APIRoute) and route.path.startswith("/v1")
        calls = deps(route.dependant)
        assert read_key in calls or admin_key in calls, route.path


def test_odd_methods_and_wrong_methods(api):
    r = httpx.get(api.v1 + "/chat/completions", headers=_h(api.read))
    _err(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    for m in ("M0ZZ", "M1ZZ"):
        httpx.request(m, api.v1 + "/models", headers=_h(api.read))
    text = httpx.get(api.url + "/metrics").text
    assert "M0ZZ" not in text and 'method="other"' in text


def test_fallback_metrics_count_reasons(api):
    api.nim.queue(Script(status=500), Script(status=500), Script(status=500))
    body = {"model": "speed", "collection": "docs", "messages": [{"role": "user", "content": "cats?"}]}
    api.svc.backend.engine._catalog = fake_catalog(api.nim.base_url, attempts=1)
    r = httpx.post(api.v1 + "/chat/completions", headers=_h(api.read), json=body, timeout=30)
    assert r.status_code == 200, r.text
    fb = r.json()["x_hybrid_rag"]["fallbacks"]
    assert fb and fb[0]["endpoint"] == "local"
    assert 'hybrid_rag_fallbacks_total{endpoint="local"' in httpx.get(api.url + "/metrics").text
