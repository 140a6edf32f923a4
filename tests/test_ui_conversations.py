"""Saved conversations in the Chat tab and the signed-in user in Compare, driven through the handlers (no browser):
the user comes from ``gr.Request`` as Gradio passes it, rights and conversations from the real state database,
answers from the fake NIM on loopback."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from reliability_kit import FakeEmbedder

from rag.engine import Engine
from rag.llm import HealthCache
from rag.state import ConversationNotFound
from rag.testing.fake_nim import Script, fake_catalog
from ui import chat, compare
from ui.backend import Backend

FAKE = FakeEmbedder()
PW = "a-long-test-password"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>alert(1)</script>'


def req(name: str | None):
    return SimpleNamespace(username=name, client=SimpleNamespace(host="127.0.0.1"), headers={})


@pytest.fixture
def backend(settings, fake_nim):
    fake_nim.default = Script(tokens=["Cats sleep ", "sixteen hours a day ", "[1]."])
    b = Backend(settings, engine=Engine(settings, embedder=FAKE, catalog=fake_catalog(fake_nim.base_url),
                                        health=HealthCache()))
    b.ingest("kb", [("cats.md", b"# Cats\n\nCats sleep sixteen hours a day."),
                    ("dogs.txt", b"Dogs like long walks in the park.")])
    b.ingest("secret", [("plans.md", b"# Plans\n\nThe secret launch date is 3 March.")])
    st = b.state
    st.add_user("root", PW, "admin")
    st.add_user("alice", PW, "reader")
    st.add_user("bob", PW, "reader")
    st.grant("kb", "alice", as_="reader")
    st.grant("kb", "bob", as_="reader")
    st.grant("secret", "alice", as_="reader")
    return b


def ask(backend, question, user="alice", *, conv=None, history=None, chat_value=None, collection="kb"):
    return list(chat.respond(backend, question, chat_value or [], history or [], collection, "hybrid", 3,
                             "route:auto", 0.2, 64, conv=conv, request=req(user)))


def _alice(backend):
    return backend.state.get_user("alice")


def test_each_answered_turn_is_saved_with_its_sources_and_metadata(backend, fake_nim):
    outs = ask(backend, "How long do cats sleep?")
    chat_value, history, sources, meta, box, conv, listing, title = outs[-1]
    assert "Cats sleep sixteen hours a day [1]." in chat_value[-1]["content"] and "cats.md" in sources
    assert isinstance(conv, int) and title == "How long do cats sleep?"
    assert listing["choices"][0][1] == conv and listing["value"] == conv
    assert listing["choices"][0][0].startswith("How long do cats sleep? · ")
    ask(backend, "And dogs?", conv=conv, history=history, chat_value=chat_value)

    saved = backend.state.get_conversation(_alice(backend), conv)
    assert saved["title"] == "How long do cats sleep?" and saved["collection"] == "kb"
    assert [(m["role"], m["content"]) for m in saved["messages"]] == [
        ("user", "How long do cats sleep?"), ("assistant", "Cats sleep sixteen hours a day [1]."),
        ("user", "And dogs?"), ("assistant", "Cats sleep sixteen hours a day [1].")]
    answer = saved["messages"][1]
    src = answer["sources"]
    assert src[0]["n"] == 1 and src[0]["document"] == "cats.md" and src[0]["cited"] is True
    assert "Cats sleep sixteen hours a day." in src[0]["text"] and src[0]["fused_rank"] == 1
    assert answer["meta"]["model"] == "fake/model" and answer["meta"]["collection"] == "kb"
    assert answer["meta"]["mode"] == "hybrid" and answer["meta"]["k"] == 3
    assert answer["meta"]["citations"]["used"] == [1] and "ttft_ms" in answer["meta"]
    assert [c["id"] for c in backend.state.list_conversations(_alice(backend))] == [conv]  # one, not two


def test_the_list_is_newest_first_and_filled_on_page_load(backend):
    first = ask(backend, "first question")[-1][5]
    second = ask(backend, "second question")[-1][5]
    ask(backend, "first again", conv=first)                 # the first one changed last
    upd = chat.load_conversations(backend, req("alice"))
    assert [v for _, v in upd["choices"]] == [first, second] and upd["value"] is None
    assert chat.load_conversations(backend, req("bob"))["choices"] == []
    assert chat.load_conversations(backend, req(None))["choices"] == []


def test_resume_restores_the_turns_and_a_follow_up_sends_them_through_the_history(backend, fake_nim):
    conv = ask(backend, "How long do cats sleep?")[-1][5]
    out = chat.open_conversation(backend, conv, req("alice"))
    chat_value, history, sources, meta, cid, title, dropdown, msg, export_file, confirm = out
    assert cid == conv and title == "How long do cats sleep?" and dropdown["value"] == "kb"
    assert [m["role"] for m in chat_value] == ["user", "assistant"]
    assert history == [{"role": "user", "content": "How long do cats sleep?"},
                       {"role": "assistant", "content": "Cats sleep sixteen hours a day [1]."}]
    assert "cats.md" in sources and "cited" in sources and "The sources of the last answer" in sources
    assert "fake/model" in meta or "Fake" in meta
    assert "Resumed" in msg and export_file["visible"] is False and confirm is False

    final = ask(backend, "Why so long?", conv=cid, history=history, chat_value=chat_value)[-1]
    turns = [m["content"] for m in fake_nim.chat_requests[-1]["json"]["messages"][1:-1]]
    assert turns == ["How long do cats sleep?", "Cats sleep sixteen hours a day [1]."]
    assert final[5] == conv and len(final[1]) == 4
    assert len(backend.state.get_conversation(_alice(backend), conv)["messages"]) == 4


def test_rename_delete_and_export(backend):
    conv = ask(backend, "How long do cats sleep?")[-1][5]
    msg, listing = chat.rename_conversation(backend, conv, f"  Cats {HOSTILE} ", req("alice"))
    assert "<img" not in msg and "&lt;img" in msg
    label = listing["choices"][0][0]
    assert label.startswith(f"Cats {HOSTILE} · ")   # a Radio label: Gradio shows it as text, not markup
    assert "Type a title" in chat.rename_conversation(backend, conv, "   ", req("alice"))[0]

    f, msg = chat.export_conversation(backend, conv, req("alice"))
    assert f["visible"] and "Exported" in msg
    text = Path(f["value"]).read_text(encoding="utf-8")
    assert text.startswith(f"# Cats {HOSTILE}")
    assert "How long do cats sleep?" in text and "Cats sleep sixteen hours a day [1]." in text
    assert "**cats.md**" in text and "> # Cats Cats sleep sixteen hours a day." in text
    name = Path(f["value"]).name                 # a safe file name made from the title
    assert name.startswith("Cats-img-src-x-onerror-window.__pwned-1-") and name.endswith(".md")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

    out = chat.delete_conversation(backend, conv, False, req("alice"))
    assert "Tick" in out[8] and backend.state.list_conversations(_alice(backend))
    out = chat.delete_conversation(backend, conv, True, req("alice"))
    assert out[0] == [] and out[1] == [] and out[5] is None and out[6]["choices"] == []
    assert "deleted" in out[8] and out[10] is False
    assert backend.state.list_conversations(_alice(backend)) == []
    with pytest.raises(ConversationNotFound):
        backend.state.get_conversation(_alice(backend), conv)
    # an answer on the deleted conversation's page starts a new one instead of failing
    again = ask(backend, "Still there?", conv=conv)[-1]
    assert again[5] is not None and again[7] == "Still there?"
    assert [c["title"] for c in backend.state.list_conversations(_alice(backend))] == ["Still there?"]


def test_nobody_reaches_another_users_conversation(backend):
    conv = ask(backend, "How long do cats sleep?")[-1][5]
    out = chat.open_conversation(backend, conv, req("bob"))
    assert "No conversation" in out[7] and out[0] == gr.skip() and out[1] == gr.skip()
    assert "No conversation" in chat.rename_conversation(backend, conv, "mine", req("bob"))[0]
    assert "No conversation" in chat.delete_conversation(backend, conv, True, req("bob"))[8]
    f, msg = chat.export_conversation(backend, conv, req("bob"))
    assert f["visible"] is False and "No conversation" in msg
    # bob answering "on" alice's id gets a conversation of his own; alice's is untouched
    bobs = ask(backend, "Dogs?", "bob", conv=conv)[-1][5]
    assert bobs != conv
    alice = backend.state.get_conversation(_alice(backend), conv)
    assert alice["title"] == "How long do cats sleep?" and len(alice["messages"]) == 2
    for fn in (lambda r: chat.open_conversation(backend, conv, r)[7],
               lambda r: chat.rename_conversation(backend, conv, "x", r)[0],
               lambda r: chat.export_conversation(backend, conv, r)[1]):
        assert "not signed in" in fn(req(None)) and "not signed in" in fn(req("mallory"))


def test_chat_checks_the_right_to_read_before_retrieving(backend, fake_nim, monkeypatch):
    calls = []
    monkeypatch.setattr(backend.engine, "search", lambda *a, **k: calls.append(a) or pytest.fail("retrieved"))
    final = ask(backend, "When is the launch?", "bob", collection="secret")[-1]
    assert "'bob' may not read collection 'secret'" in final[0][-1]["content"] and "may not read" in final[3]
    assert "3 March" not in str(final) and not fake_nim.chat_requests and not calls
    assert final[5] is None and backend.state.list_conversations(backend.state.get_user("bob")) == []
    final = ask(backend, "q", None)[-1]
    assert "not signed in" in final[0][-1]["content"] and not fake_nim.chat_requests
    final = ask(backend, "q", "mallory")[-1]
    assert "not signed in" in final[3]


def test_sources_and_export_follow_the_current_rights(backend):
    conv = ask(backend, "When is the launch?", collection="secret")[-1][5]
    assert "3 March" in str(backend.state.get_conversation(_alice(backend), conv)["messages"][1]["sources"])
    backend.state.revoke("secret", "alice")
    out = chat.open_conversation(backend, conv, req("alice"))
    assert "hidden" in out[2] and "3 March" not in out[2]
    assert out[6] == gr.skip()                                   # the drop-down is not switched to it
    f, msg = chat.export_conversation(backend, conv, req("alice"))
    assert f["visible"] is False and "may no longer read" in msg
    backend.state.grant("secret", "alice", as_="reader")
    assert "3 March" in chat.open_conversation(backend, conv, req("alice"))[2]


def test_hostile_text_is_escaped_on_resume(backend, fake_nim):
    fake_nim.default = Script(tokens=["<script>alert(1)</script> [1]"])
    conv = ask(backend, f"q {HOSTILE}")[-1][5]
    chat_value, *_rest = chat.open_conversation(backend, conv, req("alice"))
    shown = chat_value[0]["content"] + chat_value[1]["content"]
    assert "<img" not in shown and "<script" not in shown and "&lt;script&gt;" in shown
    msg = chat.open_conversation(backend, conv, req("alice"))[7]
    assert "<img" not in msg and "&lt;img" in msg


def test_new_conversation_clears_the_page(backend):
    ask(backend, "How long do cats sleep?")
    out = chat.new_conversation(backend, req("alice"))
    assert out[:6] == ([], [], out[2], out[3], "", None) and "Sources appear here" in out[2]
    assert len(out[6]["choices"]) == 1 and out[6]["value"] is None and out[7] == ""


# ---------------------------------------------------------------------------------------------------
# compare: the read check, the voter, the leaderboard by collection
# ---------------------------------------------------------------------------------------------------

def _pair(backend):
    return [o for o in compare.contestants(backend.live_catalog()) if o.key in ("fake/model", "fake/big")]


def _compare(backend, user, collection="kb"):
    opts = _pair(backend)
    return list(compare.run_compare(backend, "How long do cats sleep?", collection, "hybrid", 3,
                                    [o.key for o in opts], False, 32, opts, request=req(user))), opts


def test_compare_needs_the_right_to_read_and_votes_record_the_voter(backend, fake_nim, monkeypatch):
    outs, opts = _compare(backend, "bob", "secret")
    assert "bob" in outs[-1][-8] and "secret" in outs[-1][-8] and not fake_nim.chat_requests
    outs, _ = _compare(backend, None)
    assert "not signed in" in outs[-1][-8]

    outs, opts = _compare(backend, "alice")
    state = outs[-1][-1]
    assert state["done"] and state["user"] == "alice"
    res = compare.vote(backend, "A", state, opts, request=req("bob"))      # not bob's comparison
    assert "another account" in res[-12] and backend.arena.count() == 0
    res = compare.vote(backend, "A", state, opts, request=req(None))
    assert "not signed in" in res[-12] and backend.arena.count() == 0
    res = compare.vote(backend, "A", state, opts, request=req("alice"))
    assert "Vote recorded" in res[-12]
    v = backend.arena.votes()[0]
    assert v.voter == "alice" and v.collection == "kb"


def test_the_leaderboard_filters_by_collection(backend):
    backend.arena.record_vote(["fake/model", "fake/big"], "A", collection="kb", voter="alice")
    backend.arena.record_vote(["fake/model", "fake/big"], "B", collection="secret", voter="alice")
    backend.arena.record_vote(["fake/model", "fake/big"], "B", collection="secret", voter="alice")
    opts = _pair(backend)
    chart, table, csv_path, caption = compare.leaderboard_values(backend, opts, compare.ALL, request=req("bob"))
    assert caption.startswith("3 votes.") and {r[5] for r in table} == {3}
    chart, table, csv_path, caption = compare.leaderboard_values(backend, opts, "kb", request=req("bob"))
    assert caption.startswith("1 vote on kb") and {r[5] for r in table} == {1}
    assert "kb" in Path(csv_path).name and Path(csv_path).read_text().startswith("rank,model")
    chart, table, csv_path, caption = compare.leaderboard_values(backend, opts, "secret", request=req("bob"))
    assert table is None and "bob" in chart and "secret" in chart          # bob may not read it
    chart, table, _, caption = compare.leaderboard_values(backend, opts, "secret", request=req("alice"))
    assert caption.startswith("2 votes on secret")
    assert compare.board_choices(backend, backend.state.get_user("bob")) == [("All collections", "*"), ("kb", "kb")]
    names = [v for _, v in compare.board_choices(backend, backend.state.get_user("root"))]
    assert names == ["*", "kb", "secret"]
