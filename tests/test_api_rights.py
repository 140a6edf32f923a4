"""Rights on collections through the HTTP API, against the app served by uvicorn on loopback: keys belong to
users (rag.state) and carry their rights. Every document path is tried with no key, with a reader of another
collection (nothing of the collection comes back: no chunk text in any body, streamed chat and citations
included, and the same 404 as for a missing collection), with a revoked key and with a key of a removed
user; an editor uploads to their collection and is refused on another; a read key never writes, even an
admin's; rights changed in the state count from the next request."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import httpx
import pytest
from reliability_kit import FakeEmbedder

from rag.testing.fake_nim import fake_catalog
from rag.testing.server import ServerThread

FAKE = FakeEmbedder()
PW = "correct-horse-9"
MARK = "QUARTZ"  # in every chunk of alpha, nowhere else
ALPHA = {
    "plan.md": f"# Plan\n\n{MARK} merger plan: the board meets in Oslo on Friday. Cats are not invited.",
    "salaries.md": f"# Salaries\n\n{MARK} salary bands for cats and dogs, confidential until March.",
}
BETA = {
    "cats.md": "# Cats\n\nCats sleep sixteen hours a day. The cat purrs when it is content.",
    "dogs.md": "# Dogs\n\nDogs like long walks in the park and they sleep less than cats do.",
}
QUESTION = "What is the plan for cats and salaries?"


@pytest.fixture
def world(settings, fake_nim, state_url):
    """alpha: owned by ed (editor); rob (editor) may read it. beta: owned by root (admin); rita (reader) reads
    it, eve (editor) edits it. ada: a second admin, so root can be demoted. The state database is SQLite and,
    in a second run, PostgreSQL (``state_url``)."""
    from api import create_app
    from rag.engine import Engine
    from ui.backend import Backend

    backend = Backend(settings, engine=Engine(settings, embedder=FAKE, catalog=fake_catalog(fake_nim.base_url)))
    backend.ingest("alpha", [(n, t.encode()) for n, t in ALPHA.items()])
    backend.ingest("beta", [(n, t.encode()) for n, t in BETA.items()])
    st = backend.state
    for name, role in [("root", "admin"), ("ada", "admin"), ("ed", "editor"), ("rob", "editor"),
                       ("eve", "editor"), ("rita", "reader")]:
        st.add_user(name, PW, role)
    st.set_owner("alpha", st.get_user("ed"))
    st.set_owner("beta", st.get_user("root"))
    st.grant("alpha", "rob", "reader")
    st.grant("beta", "rita", "reader")
    st.grant("beta", "eve", "editor")
    keys = {"root": st.create_key("root-admin", "admin", "root"), "root-read": st.create_key("root-read", "read", "root"),
            "ed": st.create_key("ed", "admin", "ed"), "rob": st.create_key("rob", "admin", "rob"),
            "eve": st.create_key("eve", "admin", "eve"), "rita": st.create_key("rita", "read", "rita")}
    app = create_app(settings, backend=backend, ui=False)
    with ServerThread(app) as srv:
        yield SimpleNamespace(url=srv.url, v1=srv.url + "/v1", keys=keys, state=st, backend=backend, nim=fake_nim,
                              settings=settings)
    backend.jobs.close(timeout=10)


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _chat(collection, stream=False):
    return {"model": "speed", "collection": collection, "stream": stream,
            "messages": [{"role": "user", "content": QUESTION}]}


def _paths(c: str, doc: str = "plan.md") -> list[tuple[str, str, dict]]:
    """Every /v1 path that reads or changes a collection's documents: (label, method path, request kwargs)."""
    return [
        ("search", "POST /search", {"json": {"query": QUESTION, "collection": c}}),
        ("chat", "POST /chat/completions", {"json": _chat(c)}),
        ("chat-stream", "POST /chat/completions", {"json": _chat(c, stream=True)}),
        ("collection", f"GET /collections/{c}", {}),
        ("documents", f"GET /collections/{c}/documents", {}),
        ("upload", f"POST /collections/{c}/documents", {"files": [("files", ("x.md", b"# X\n\nnew text"))]}),
        ("delete-document", f"DELETE /collections/{c}/documents/{doc}", {}),
        ("delete-collection", f"DELETE /collections/{c}", {}),
    ]


WRITES = {"upload", "delete-document", "delete-collection"}


def _call(w, key, method_path, kwargs, timeout=30):
    method, path = method_path.split(" ", 1)
    headers = _h(key) if key else {}
    with httpx.Client(timeout=timeout) as c:
        with c.stream(method, w.v1 + path, headers=headers, **kwargs) as r:
            r.read()
            return r


def _err(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert e["message"] and e["type"]
    if code:
        assert e["code"] == code, e
    return e


def _alpha_untouched(w):
    """alpha still has its documents (and its owner's upload notes), and none of the refused uploads."""
    docs = {d["doc_id"] for d in w.backend.open("alpha").documents()}
    assert set(ALPHA) <= docs and "x.md" not in docs and not {d for d in docs if not d.startswith("note-")} - set(ALPHA)


def _no_alpha_text(*bodies):
    """Nothing of alpha in these bodies: its chunk text, its document names or titles."""
    for b in bodies:
        text = b if isinstance(b, str) else json.dumps(b)
        for bit in (MARK, "merger plan", "salary bands", "salaries.md", "Salaries"):
            assert bit not in text, (bit, text[:500])


def _job_of(w, key, collection):
    """An upload job on ``collection`` made with ``key`` (waited until done)."""
    r = httpx.post(f"{w.v1}/collections/{collection}/documents", headers=_h(key),
                   files=[("files", (f"note-{time.monotonic_ns()}.md", b"# Note\n\nA short note about owls."))])
    assert r.status_code == 202, r.text
    job = r.json()
    w.backend.jobs.wait(job["id"], timeout=60)
    return job["id"]


# --- no key, revoked key, removed user ---------------------------------------------------------------------

def test_every_document_path_needs_a_key(world):
    job = _job_of(world, world.keys["ed"], "alpha")
    for label, mp, kw in [*_paths("alpha"), ("collections", "GET /collections", {}), ("jobs", "GET /jobs", {}),
                          ("job", f"GET /jobs/{job}", {}), ("cancel", f"DELETE /jobs/{job}", {}),
                          ("create", "POST /collections", {"json": {"name": "new"}})]:
        r = _call(world, None, mp, kw)
        _err(r, 401, "missing_api_key")
        assert r.headers["www-authenticate"].startswith("Bearer"), label
        _no_alpha_text(r.text)
    _alpha_untouched(world)
    assert not world.nim.chat_requests


@pytest.mark.parametrize("how", ["revoked", "removed-user"])
def test_a_revoked_key_and_a_removed_users_key_are_refused_at_once(world, how):
    key = world.keys["ed"]
    job = _job_of(world, key, "alpha")
    assert httpx.get(world.v1 + "/collections/alpha", headers=_h(key)).status_code == 200
    if how == "revoked":
        world.state.revoke_key("ed")
    else:
        world.state.remove_user("ed")
    for label, mp, kw in [*_paths("alpha"), ("collections", "GET /collections", {}), ("jobs", "GET /jobs", {}),
                          ("job", f"GET /jobs/{job}", {}), ("cancel", f"DELETE /jobs/{job}", {}),
                          ("create", "POST /collections", {"json": {"name": "new"}}), ("models", "GET /models", {})]:
        r = _call(world, key, mp, kw)
        assert r.status_code == 401, (label, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key", label
        _no_alpha_text(r.text)
    _alpha_untouched(world)
    assert not world.nim.chat_requests
    # the other keys are unaffected
    assert httpx.get(world.v1 + "/collections/beta", headers=_h(world.keys["rita"])).status_code == 200


# --- a reader of another collection -------------------------------------------------------------------------

def _same_as_missing(w, key, label, mp, kw):
    """The response for alpha equals the one for a collection that does not exist (status, code, message)."""
    r = _call(w, key, mp, kw)
    missing = _call(w, key, mp.replace("alpha", "nope"),
                    json.loads(json.dumps(kw).replace('"alpha"', '"nope"')) if "json" in kw else kw)
    assert r.status_code == missing.status_code, (label, r.text, missing.text)
    a, m = r.json()["error"], missing.json()["error"]
    assert (a["type"], a["code"]) == (m["type"], m["code"]), label
    assert a["message"].replace("'alpha'", "'X'") == m["message"].replace("'nope'", "'X'"), label
    return r


def test_a_reader_of_another_collection_gets_nothing_from_it(world):
    """rita reads beta only (read key); eve edits beta (admin-scope key). alpha answers them as a missing
    collection would, on every path, and no alpha text leaves the server (or reaches the model)."""
    job = _job_of(world, world.keys["ed"], "alpha")
    for who in ("rita", "eve"):
        key = world.keys[who]
        for label, mp, kw in _paths("alpha"):
            r = _same_as_missing(world, key, label, mp, kw)
            if who == "rita" and label in WRITES:
                _err(r, 403, "insufficient_scope")   # the scope is checked first; it says nothing of alpha
            else:
                _err(r, 404, "not_found")
            _no_alpha_text(r.text)
        listed = httpx.get(world.v1 + "/collections", headers=_h(key)).json()["data"]
        assert [c["name"] for c in listed] == ["beta"], who
    # jobs: eve (admin scope) sees none of alpha's and cannot read or cancel them (as an unknown id)
    key = world.keys["eve"]
    assert job not in [j["id"] for j in httpx.get(world.v1 + "/jobs", headers=_h(key)).json()["data"]]
    assert httpx.get(world.v1 + "/jobs?collection=alpha", headers=_h(key)).json()["data"] == []
    for method in ("GET", "DELETE"):
        hidden = _err(httpx.request(method, f"{world.v1}/jobs/{job}", headers=_h(key)), 404, "not_found")
        unknown = _err(httpx.request(method, f"{world.v1}/jobs/nope", headers=_h(key)), 404, "not_found")
        assert hidden["message"].replace(job, "X") == unknown["message"].replace("nope", "X")
    assert world.backend.jobs.get(job).state == "done"
    _alpha_untouched(world)
    assert not any(MARK in json.dumps(req["json"]) for req in world.nim.chat_requests)
    # beta answers them, with citations from beta only
    r = httpx.post(world.v1 + "/chat/completions", headers=_h(world.keys["rita"]), json=_chat("beta"), timeout=30)
    assert r.status_code == 200, r.text
    assert {c["document"] for c in r.json()["citations"]} <= set(BETA)
    _no_alpha_text(r.text)


def test_the_openai_sdk_gets_not_found_for_a_collection_it_may_not_read(world):
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=world.v1, api_key=world.keys["rita"], max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as e:
            out = client.chat.completions.create(model="speed", stream=stream, extra_body={"collection": "alpha"},
                                                 messages=[{"role": "user", "content": QUESTION}])
            list(out) if stream else None
        assert "No collection named 'alpha'" in str(e.value) and MARK not in str(e.value)
    chunks = list(client.chat.completions.create(model="speed", stream=True, extra_body={"collection": "beta"},
                                                 messages=[{"role": "user", "content": QUESTION}]))
    cites = chunks[-1].model_extra["citations"]
    assert cites and {c["document"] for c in cites} <= set(BETA)
    _no_alpha_text(*(c.model_dump_json() for c in chunks))
    assert not any(MARK in json.dumps(req["json"]) for req in world.nim.chat_requests)


# --- editors, owners, scopes --------------------------------------------------------------------------------

def test_an_editor_uploads_to_their_collection_and_is_refused_on_another(world):
    eve = world.keys["eve"]
    job = _job_of(world, eve, "beta")
    assert world.backend.jobs.get(job).state == "done"
    assert any(d["doc_id"].startswith("note-") for d in world.backend.open("beta").documents())
    assert job in [j["id"] for j in httpx.get(world.v1 + "/jobs", headers=_h(eve)).json()["data"]]
    r = httpx.delete(world.v1 + "/collections/beta/documents/dogs.md", headers=_h(eve))
    assert r.status_code == 200, r.text
    # alpha: eve may not even read it (404); rob may read it but not change it (403, says what is missing)
    _err(httpx.post(world.v1 + "/collections/alpha/documents", headers=_h(eve),
                    files=[("files", ("x.md", b"# X\n\nx"))]), 404, "not_found")
    rob = world.keys["rob"]
    assert httpx.get(world.v1 + "/collections/alpha/documents", headers=_h(rob)).status_code == 200
    for mp, kw in [("POST /collections/alpha/documents", {"files": [("files", ("x.md", b"# X\n\nx"))]}),
                   ("DELETE /collections/alpha/documents/plan.md", {}), ("DELETE /collections/alpha", {})]:
        e = _err(_call(world, rob, mp, kw), 403, "permission_denied")
        assert "alpha" in e["message"]
    _alpha_untouched(world)
    # the audit log has who did what, refusals included
    log = world.state.audit_log(limit=100)
    assert any(x["actor"] == "eve" and x["action"] == "document.upload" and x["collection"] == "beta"
               and x["result"] == "ok" for x in log)
    assert any(x["actor"] == "eve" and x["action"] == "document.delete" and x["document"] == "dogs.md" for x in log)
    assert any(x["actor"] == "rob" and x["collection"] == "alpha" and x["result"] == "denied" for x in log)
    assert any(x["actor"] == "eve" and x["collection"] == "alpha" and x["result"] == "denied" for x in log)


def test_a_read_key_of_an_admin_never_writes(world):
    key = world.keys["root-read"]
    for c in ("alpha", "beta"):  # an admin reads everything
        r = httpx.post(world.v1 + "/search", headers=_h(key), json={"query": QUESTION, "collection": c})
        assert r.status_code == 200 and r.json()["hits"], r.text
    job = _job_of(world, world.keys["root"], "beta")
    for label, mp, kw in [*[p for p in _paths("alpha") if p[0] in WRITES],
                          ("create", "POST /collections", {"json": {"name": "new"}}),
                          ("jobs", "GET /jobs", {}), ("job", f"GET /jobs/{job}", {}), ("cancel", f"DELETE /jobs/{job}", {})]:
        _err(_call(world, key, mp, kw), 403, "insufficient_scope")
    _alpha_untouched(world)
    assert "new" not in world.backend.collection_names()


def test_collections_created_through_the_api_belong_to_their_creator(world):
    eve, ed, rita = world.keys["eve"], world.keys["ed"], world.keys["rita"]
    r = httpx.post(world.v1 + "/collections", headers=_h(eve), json={"name": "eve-notes"})
    assert r.status_code == 201, r.text
    assert world.state.collection_rights("eve-notes")["owner"] == "eve"
    assert "eve-notes" in [c["name"] for c in httpx.get(world.v1 + "/collections", headers=_h(eve)).json()["data"]]
    for key in (ed, rita):
        assert "eve-notes" not in [c["name"] for c in
                                   httpx.get(world.v1 + "/collections", headers=_h(key)).json()["data"]]
    _err(httpx.get(world.v1 + "/collections/eve-notes", headers=_h(ed)), 404, "not_found")
    _err(httpx.post(world.v1 + "/collections", headers=_h(rita), json={"name": "x"}), 403, "insufficient_scope")
    # an editor of it may upload but not delete it; its owner may
    world.state.grant("eve-notes", "ed", "editor")
    _job_of(world, ed, "eve-notes")
    _err(httpx.delete(world.v1 + "/collections/eve-notes", headers=_h(ed)), 403, "permission_denied")
    assert httpx.delete(world.v1 + "/collections/eve-notes", headers=_h(eve)).status_code == 200
    assert "eve-notes" not in world.backend.collection_names()
    # a new collection of the same name starts with no rights left over
    assert httpx.post(world.v1 + "/collections", headers=_h(eve), json={"name": "eve-notes"}).status_code == 201
    _err(httpx.get(world.v1 + "/collections/eve-notes", headers=_h(ed)), 404, "not_found")
    actions = [(x["actor"], x["action"], x["result"]) for x in world.state.audit_log(collection="eve-notes")]
    assert ("eve", "collection.create", "ok") in actions and ("eve", "collection.delete", "ok") in actions
    assert ("ed", "collection.delete", "denied") in actions


def test_a_reader_role_cannot_create_collections_even_with_an_admin_key(world):
    """Readers cannot hold admin-scope keys; if one was an editor when the key was made, its rights now are a
    reader's."""
    key = world.keys["eve"]
    world.state.set_role("eve", "reader")
    e = _err(httpx.post(world.v1 + "/collections", headers=_h(key), json={"name": "x"}), 403, "insufficient_scope")
    assert "now a reader" in e["message"]
    _err(httpx.post(world.v1 + "/collections/beta/documents", headers=_h(key), files=[("files", ("x.md", b"# X"))]),
         403, "insufficient_scope")
    assert httpx.get(world.v1 + "/collections/beta/documents", headers=_h(key)).status_code == 200  # still reads
    assert "x" not in world.backend.collection_names()


# --- rights count from the next request ---------------------------------------------------------------------

def test_rights_changed_in_the_state_count_at_the_next_request(world):
    rita, root = world.keys["rita"], world.keys["root"]

    def search(key, c):
        return httpx.post(world.v1 + "/search", headers=_h(key), json={"query": QUESTION, "collection": c})

    assert search(rita, "beta").status_code == 200
    _err(search(rita, "alpha"), 404)
    world.state.grant("alpha", "rita", "reader")
    r = search(rita, "alpha")
    assert r.status_code == 200 and MARK in r.text  # the check lets through what it should
    world.state.revoke("alpha", "rita")
    world.state.revoke("beta", "rita")
    _err(search(rita, "alpha"), 404)
    _err(search(rita, "beta"), 404)
    assert httpx.get(world.v1 + "/collections", headers=_h(rita)).json()["data"] == []
    world.state.set_public("beta", True)  # public: every user reads it
    assert search(rita, "beta").status_code == 200
    # an admin demoted to editor keeps their key but loses what only admins had
    assert search(root, "alpha").status_code == 200
    world.state.set_role("root", "editor")
    _err(search(root, "alpha"), 404)
    assert search(root, "beta").status_code == 200  # still beta's owner


def test_no_key_yet_says_how_to_make_one_for_a_user(settings, fake_nim):
    from api import create_app
    from rag.engine import Engine
    from ui.backend import Backend

    backend = Backend(settings, engine=Engine(settings, embedder=FAKE, catalog=fake_catalog(fake_nim.base_url)))
    with ServerThread(create_app(settings, backend=backend, ui=False)) as srv:
        e = _err(httpx.get(srv.url + "/v1/models"), 401, "no_api_keys")
        assert "hybrid-rag keys create" in e["message"] and "--user" in e["message"]
    backend.jobs.close(timeout=10)


def test_a_key_from_before_users_is_refused_saying_how_to_remake_it(settings, fake_nim):
    """Keys of the old api_keys.json are imported without a user: 401, and the message says what to run."""
    import hashlib

    from api import create_app
    from rag.engine import Engine
    from ui.backend import Backend

    old = "hr_" + "k" * 43
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "api_keys.json").write_text(json.dumps({"version": 1, "keys": [
        {"name": "old", "scope": "admin", "sha256": hashlib.sha256(old.encode()).hexdigest(), "prefix": old[:7],
         "created_at": 1.0}]}))
    backend = Backend(settings, engine=Engine(settings, embedder=FAKE, catalog=fake_catalog(fake_nim.base_url)))
    backend.ingest("alpha", [(n, t.encode()) for n, t in ALPHA.items()])
    with ServerThread(create_app(settings, backend=backend, ui=False)) as srv:
        for mp, kw in [("GET /models", {}), *[p[1:] for p in _paths("alpha")]]:
            method, path = mp.split(" ", 1)
            r = httpx.request(method, srv.url + "/v1" + path, headers=_h(old), timeout=30, **kw)
            e = _err(r, 401, "key_without_user")
            assert "--user" in e["message"] and "old" in e["message"]
            _no_alpha_text(r.text)
    backend.jobs.close(timeout=10)
    assert sorted(d["doc_id"] for d in backend.open("alpha").documents()) == sorted(ALPHA)


def test_every_document_route_asks_for_rights():
    """Structural: a route added under /v1 that touches a collection without asking the state fails here (the
    tests above try each path by hand)."""
    import inspect

    from fastapi.routing import APIRoute

    from api.chat import router as chat_router
    from api.documents import router as docs_router

    for route in [*docs_router.routes, *chat_router.routes]:
        assert isinstance(route, APIRoute)
        if route.path.startswith("/v1/models"):
            continue  # no documents
        src = inspect.getsource(route.endpoint)
        assert any(s in src for s in ("rights.check_", "rights.editable_filter", "state.readable", "_job(")), route.path
