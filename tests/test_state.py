"""The state database (rag.state): users, sign-in, sessions, rights, keys, conversations, audit; every test that
touches the database runs on SQLite and on a real PostgreSQL (the ``state_url`` fixture)."""
import hashlib
import sqlite3
import threading
from types import SimpleNamespace

import pytest
from argon2 import PasswordHasher
from sqlalchemy import create_engine, text

from rag.state import (
    AccessDenied,
    AuthError,
    ConversationNotFound,
    State,
    StateError,
    User,
    open_state,
)
from rag.state import users as users_mod

PW = "correct horse"


@pytest.fixture(autouse=True)
def _fast_hashes(monkeypatch):
    """Cheap argon2 parameters in tests (the real ones take ~0.1 s and 64 MiB per hash); one test checks those."""
    monkeypatch.setattr(users_mod, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(users_mod, "_DUMMY_HASH", [])


@pytest.fixture
def state(state_url, settings) -> State:
    s = open_state(settings)
    assert s.dialect == ("sqlite" if state_url.startswith("sqlite") else "postgresql")
    return s


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def _raw(state, sql, **params):
    with state.engine.connect() as c:
        return c.execute(text(sql), params).all()


# -- schema ---------------------------------------------------------------------------------------------------
def test_schema_is_made_by_the_migrations_and_matches_the_models(state):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from rag.state import db, models

    assert state.schema_revision() == db.head_revision()
    with state.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), models.metadata)
    assert diff == []


def test_opening_twice_and_from_another_process_view_is_harmless(state, state_url, settings):
    state.add_user("alice", PW, "admin")
    other = State(state_url)            # a second engine, as another process would have: migrations are a no-op
    assert other.get_user("alice") == state.get_user("alice")
    other.close()
    assert open_state(settings) is state   # cached per URL


def test_url_hides_the_password(pg_url):
    s = State(pg_url)
    assert "***" in s.url and pg_url.split(":")[2].split("@")[0] not in repr(s)
    s.close()


def test_default_url_is_sqlite_in_the_data_dir_with_wal(settings, data_dir):
    s = open_state(settings)
    assert s.url == f"sqlite:///{data_dir / 'state.sqlite'}"
    assert _raw(s, "PRAGMA journal_mode")[0][0] == "wal"
    assert _raw(s, "PRAGMA busy_timeout")[0][0] >= 5000
    assert _raw(s, "PRAGMA foreign_keys")[0][0] == 1


def test_bad_database_url_says_how_to_set_it(settings, monkeypatch):
    monkeypatch.setenv("HYBRID_RAG_DATABASE_URL", "not a url::")
    with pytest.raises(StateError, match="postgresql\\+psycopg://"):
        open_state(settings)


# -- users ----------------------------------------------------------------------------------------------------
def test_users_add_get_list_and_names_are_case_insensitive(state):
    a = state.add_user("Alice", PW, "admin")
    state.add_user("bob", PW, "reader")
    assert a == User(a.id, "Alice", "admin") and a.is_admin
    assert state.get_user("alice") == a and state.user_by_id(a.id) == a
    assert state.get_user("nobody") is None and state.user_by_id(999) is None and state.get_user("x\n") is None
    assert [u.name for u in state.list_users()] == ["Alice", "bob"]
    with pytest.raises(StateError, match="exists already"):
        state.add_user("ALICE", PW, "reader")


@pytest.mark.parametrize("name", ["", "a b", "bob\n", "tab\tname", "x" * 65, "-lead", "ünï", "a/b", None, 5])
def test_bad_user_names_are_refused_with_the_rule(state, name):
    with pytest.raises(StateError, match="use 1-64 letters"):
        state.add_user(name, PW, "reader")


def test_passwords_roles_rules(state):
    with pytest.raises(StateError, match="at least 8"):
        state.add_user("bob", "short", "reader")
    with pytest.raises(StateError, match="control characters"):
        state.add_user("bob", "pass\nword", "reader")
    with pytest.raises(StateError, match="admin, editor or reader"):
        state.add_user("bob", PW, "superuser")
    assert state.get_user("bob") is None


def test_passwords_are_argon2_hashes_never_the_password(state, monkeypatch):
    monkeypatch.setattr(users_mod, "_HASHER", PasswordHasher())   # the real parameters
    state.add_user("alice", PW, "reader")
    [(digest,)] = _raw(state, "SELECT password_hash FROM users")
    assert digest.startswith("$argon2id$") and PW not in digest
    assert state.authenticate("alice", PW).name == "alice"


def test_last_admin_cannot_be_demoted_or_removed(state):
    state.add_user("root", PW, "admin")
    with pytest.raises(StateError, match="last admin"):
        state.set_role("root", "editor")
    with pytest.raises(StateError, match="last admin"):
        state.remove_user("root")
    state.add_user("second", PW, "admin")
    assert state.set_role("root", "reader").role == "reader"
    with pytest.raises(StateError, match="last admin"):
        state.remove_user("second")
    assert state.has_admin()


def test_unknown_user_errors_say_how_to_list_users(state):
    for call in (lambda: state.set_role("ghost", "reader"), lambda: state.remove_user("ghost"),
                 lambda: state.reset_password("ghost", PW), lambda: state.grant("c", "ghost"),
                 lambda: state.create_key("k", "read", "ghost")):
        with pytest.raises(StateError, match="No user 'ghost': list users with `hybrid-rag users list`"):
            call()


def test_remove_user_takes_sessions_keys_rights_conversations(state):
    from rag.arena import Arena

    state.add_user("root", PW, "admin")
    bob = state.add_user("bob", PW, "editor")
    token = state.create_session(bob)
    key = state.create_key("bk", "admin", "bob")
    state.grant("docs", "bob", as_="editor")
    state.set_owner("mine", bob)
    cid = state.create_conversation(bob, "t", "docs")
    state.append_message(bob, cid, "user", "hello")
    Arena.for_state(state).record_vote(["a", "b"], "A", voter=bob, collection="docs")
    state.remove_user("bob")
    assert state.get_user("bob") is None and state.session_user(token) is None and state.verify_key(key) is None
    assert state.collection_rights("docs")["editors"] == [] and state.collection_rights("mine")["owner"] is None
    assert _raw(state, "SELECT COUNT(*) FROM conversations")[0][0] == 0
    assert _raw(state, "SELECT COUNT(*) FROM messages")[0][0] == 0
    assert Arena.for_state(state).votes()[0].voter == "bob"   # votes keep the name
    again = state.add_user("bob", PW, "reader")                # a new bob inherits nothing
    assert state.readable(again, ["docs", "mine"]) == []


def test_first_admin_from_the_environment(state, monkeypatch):
    assert not state.has_admin()
    assert state.ensure_first_admin(environ={}) is None
    with pytest.raises(StateError, match="HYBRID_RAG_ADMIN_PASSWORD: .*at least 8"):
        state.ensure_first_admin(environ={"HYBRID_RAG_ADMIN_PASSWORD": "short"})
    admin = state.ensure_first_admin(environ={"HYBRID_RAG_ADMIN_PASSWORD": PW})
    assert admin.name == "admin" and admin.is_admin and state.has_admin()
    assert state.authenticate("admin", PW) == admin
    assert state.ensure_first_admin(environ={"HYBRID_RAG_ADMIN_PASSWORD": "another password"}) is None
    assert state.audit_log(action="user.first_admin")[0]["actor"] == "system"


def test_sso_user_is_made_once_with_the_sso_role(state, settings):
    settings.auth.sso_role = "editor"
    u = state.sso_user("carol@example.org")
    assert u.role == "editor" and state.sso_user("Carol@example.org") == u
    with pytest.raises(AuthError):     # no password: only through the proxy
        state.authenticate("carol@example.org", "")


# -- sign-in and throttling -----------------------------------------------------------------------------------
def test_authenticate(state):
    state.add_user("alice", PW, "reader")
    assert state.authenticate("ALICE", PW).name == "alice"
    for name, pw in (("alice", "wrong password"), ("ghost", PW), ("alice", ""), ("a\nb", PW), (None, PW)):
        with pytest.raises(AuthError, match="^Wrong user name or password.$"):
            state.authenticate(name, pw, client=f"10.0.0.{len(str(name))}")


def test_throttle_per_account_and_per_client_shared_between_processes(state, state_url):
    clock = Clock()
    state.clock = clock
    other = State(state_url)           # another process: its own engine, the same database
    other.clock = clock
    state.add_user("alice", PW, "reader")
    state.add_user("bob", PW, "reader")
    for i in range(5):                 # 5 wrong passwords for alice from 5 addresses, over two processes
        with pytest.raises(AuthError, match="Wrong"):
            (state if i % 2 else other).authenticate("alice", "nope nope", client=f"10.0.0.{i}")
    with pytest.raises(AuthError, match="for this account: try again in 30 s"):
        other.authenticate("alice", PW, client="10.9.9.9")    # even the right password, from anywhere
    assert state.authenticate("bob", PW, client="10.0.0.1").name == "bob"   # other accounts are fine
    clock.t += 31
    assert state.authenticate("alice", PW, client="10.9.9.9").name == "alice"

    for i in range(5):                 # one address guessing five accounts is locked, the accounts are not
        with pytest.raises(AuthError, match="Wrong"):
            state.authenticate(f"user{i}", "nope nope", client="192.0.2.7")
    with pytest.raises(AuthError, match="from your address"):
        other.authenticate("bob", PW, client="192.0.2.7")
    assert other.authenticate("bob", PW, client="192.0.2.8").name == "bob"
    clock.t += 31
    assert state.authenticate("bob", PW, client="192.0.2.7").name == "bob"
    other.close()


def test_failures_spread_over_more_than_the_window_do_not_lock(state):
    clock = Clock()
    state.clock = clock
    state.add_user("alice", PW, "reader")
    for _ in range(8):
        with pytest.raises(AuthError, match="Wrong"):
            state.authenticate("alice", "nope nope")
        clock.t += 20           # 3 per minute
    assert state.authenticate("alice", PW).name == "alice"


# -- sessions -------------------------------------------------------------------------------------------------
def test_sessions_store_only_the_hash_expire_and_end(state, settings):
    clock = Clock()
    state.clock = clock
    settings.auth.session_ttl_s, settings.auth.session_max_s = 600, 3600
    alice = state.add_user("alice", PW, "reader")
    token = state.create_session(alice)
    assert len(token) >= 40
    [(stored,)] = _raw(state, "SELECT token_sha256 FROM sessions")
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert state.session_user(token) == alice
    for _ in range(6):          # idle expiry slides with use ...
        clock.t += 500
        assert state.session_user(token) == alice
    clock.t += 601              # ... idle too long: gone
    assert state.session_user(token) is None
    t2 = state.create_session("alice")
    for _ in range(8):          # the absolute limit holds however busy the session is
        clock.t += 500
        state.session_user(t2)
    assert state.session_user(t2) is None
    t3 = state.create_session(alice)
    state.end_session(t3)
    assert state.session_user(t3) is None
    for bad in (None, "", "x" * 500, token + "x", 5):
        assert state.session_user(bad) is None


def test_password_reset_ends_sessions(state):
    alice = state.add_user("alice", PW, "reader")
    token = state.create_session(alice)
    state.reset_password("alice", "a new password")
    assert state.session_user(token) is None
    with pytest.raises(AuthError):
        state.authenticate("alice", PW)
    assert state.authenticate("alice", "a new password") == alice


# -- rights ---------------------------------------------------------------------------------------------------
@pytest.fixture
def people(state):
    return SimpleNamespace(admin=state.add_user("root", PW, "admin"), ed=state.add_user("ed", PW, "editor"),
                           ann=state.add_user("ann", PW, "reader"), rex=state.add_user("rex", PW, "reader"))


def test_rights_rules(state, people):
    p = people
    state.set_owner("eds", p.ed)
    state.grant("eds", "ann", as_="reader")
    state.grant("shared", "ed", as_="editor")
    state.set_public("starter", True)
    cols = ["eds", "shared", "starter", "unrecorded"]
    assert [state.access(p.admin, c) for c in cols] == ["admin"] * 4
    assert [state.access(p.ed, c) for c in cols] == ["owner", "editor", "reader", None]
    assert [state.access(p.ann, c) for c in cols] == ["reader", None, "reader", None]
    assert [state.access(p.rex, c) for c in cols] == [None, None, "reader", None]
    assert state.access(None, "starter") is None
    assert state.readable(p.rex, cols) == ["starter"]
    assert state.readable(p.ann, ["starter", "eds", "nope"]) == ["starter", "eds"]   # order kept
    assert state.readable(p.admin, cols) == cols and state.readable(None, cols) == []
    assert state.can_edit(p.ed, "shared") and not state.can_edit(p.ann, "eds")
    assert state.can_delete_collection(p.ed, "eds") and not state.can_delete_collection(p.ed, "shared")
    assert state.can_create(p.ed) and not state.can_create(p.ann)
    with pytest.raises(AccessDenied, match="'rex' may not read collection 'eds'.*collections grant eds rex --as reader"):
        state.require_read(p.rex, "eds")
    with pytest.raises(AccessDenied, match="'ann' may not change collection 'eds'"):
        state.require_edit(p.ann, "eds")
    with pytest.raises(AccessDenied, match="not signed in"):
        state.require_read(None, "starter")
    with pytest.raises(AccessDenied, match="only editors and admins create"):
        state.require_create(p.ann)
    state.require_read(p.ann, "eds")
    state.require_edit(p.ed, "shared")
    assert state.collection_rights("eds") == {"owner": "ed", "public": False, "readers": ["ann"], "editors": []}
    assert state.collection_rights("unrecorded") == {"owner": None, "public": False, "readers": [], "editors": []}


def test_grant_revoke_and_role_caps(state, people):
    with pytest.raises(StateError, match="make them an editor first .*users set-role ann editor"):
        state.grant("c", "ann", as_="editor")
    with pytest.raises(StateError, match="reader or editor"):
        state.grant("c", "ann", as_="owner")
    with pytest.raises(StateError, match="Invalid collection name"):
        state.grant("../etc", "ann")
    state.grant("c", "ed", as_="editor")
    state.grant("c", "ed", as_="reader")          # replaces
    assert state.collection_rights("c")["readers"] == ["ed"] and state.access(people.ed, "c") == "reader"
    state.grant("c", "ed", as_="editor")
    state.set_owner("mine", people.ed)
    state.set_role("ed", "reader")                # demoted: reads only, at once
    ed = state.get_user("ed")
    assert state.access(ed, "c") == "reader" and state.access(ed, "mine") == "reader" and not state.can_edit(ed, "c")
    assert state.revoke("c", "ed") and not state.revoke("c", "ed")
    assert state.access(ed, "c") is None


def test_forget_collection_drops_its_rights(state, people):
    state.grant("c", "ann")
    state.set_public("c", True)
    state.forget_collection("c")
    assert state.access(people.rex, "c") is None and state.access(people.ann, "c") is None


# -- API keys -------------------------------------------------------------------------------------------------
def test_keys_belong_to_users_and_carry_their_rights(state, people):
    key = state.create_key("ann-read", "read", "ann")
    assert key.startswith("hr_") and len(key) == 46
    [(digest, prefix)] = _raw(state, "SELECT sha256, prefix FROM api_keys")
    assert digest == hashlib.sha256(key.encode()).hexdigest() and key not in digest and key.startswith(prefix)
    rec = state.verify_key(key)
    assert (rec.name, rec.scope, rec.user) == ("ann-read", "read", people.ann)
    assert rec.allows("read") and not rec.allows("admin")
    assert state.verify_key(key + "x") is None and state.verify_key("nope") is None and state.verify_key(None) is None
    with pytest.raises(StateError, match="admin key needs an admin or editor.*'ann' is a reader"):
        state.create_key("ann-admin", "admin", "ann")
    with pytest.raises(StateError, match="exists already.*keys revoke ann-read"):
        state.create_key("ann-read", "read", "ann")
    with pytest.raises(StateError, match="Invalid key name"):
        state.create_key("bad name", "read", "ann")
    ek = state.create_key("ed-admin", "admin", "ed")
    assert state.verify_key(ek).allows("admin")
    state.set_role("ed", "reader")               # the admin scope lapses at once
    assert not state.verify_key(ek).allows("admin") and state.verify_key(ek).user.role == "reader"
    assert [k.name for k in state.list_keys()] == ["ann-read", "ed-admin"]
    assert state.list_keys()[0].public()["user"] == "ann" and "hr_" in state.list_keys()[0].public()["prefix"]
    assert state.revoke_key("ann-read").name == "ann-read"
    assert state.verify_key(key) is None
    with pytest.raises(StateError, match="No key named 'ann-read' \\(keys: ed-admin\\)"):
        state.revoke_key("ann-read")


def test_old_api_keys_json_is_imported_once_without_a_user(settings, data_dir):
    import json

    key = "hr_" + "k" * 43
    (data_dir / "api_keys.json").write_text(json.dumps({"version": 1, "keys": [
        {"name": "old", "scope": "admin", "sha256": hashlib.sha256(key.encode()).hexdigest(), "prefix": key[:7],
         "created_at": 1.0}]}))
    state = open_state(settings)
    assert not (data_dir / "api_keys.json").exists() and (data_dir / "api_keys.json.imported").is_file()
    rec = state.verify_key(key)
    assert rec.user is None and not rec.allows("read")
    with pytest.raises(AuthError, match="belongs to no user.*--user USER.*keys revoke old"):
        rec.require_user()
    state.revoke_key("old")
    (data_dir / "api_keys.json.imported").rename(data_dir / "api_keys.json")   # the same file again: not re-imported
    open_state(settings)
    assert state.verify_key(key) is None


# -- conversations --------------------------------------------------------------------------------------------
def test_ids_are_never_reused_after_a_delete(state, people):
    """A stale page holding a deleted conversation's id must not write into a newer conversation (SQLite would
    reuse the highest rowid without AUTOINCREMENT); the same for users and keys."""
    ann = people.ann
    c1 = state.create_conversation(ann, "Old", None)
    state.delete_conversation(ann, c1)
    c2 = state.create_conversation(ann, "New", None)
    assert c2 != c1
    with pytest.raises(LookupError):
        state.append_message(ann, c1, "user", "into the deleted one")
    assert state.get_conversation(ann, c2)["messages"] == []
    gone = state.add_user("gone", PW, "reader")
    state.remove_user("gone")
    assert state.add_user("next", PW, "reader").id != gone.id


def test_conversations_are_per_user(state, people):
    clock = Clock()
    state.clock = clock
    ann, rex = people.ann, people.rex
    c1 = state.create_conversation(ann, "First", "starter")
    clock.t += 1
    c2 = state.create_conversation(ann, "  Second\x00 one\n ", None)
    clock.t += 1
    state.append_message(ann, c1, "user", "What is BM25?")
    state.append_message(ann, c1, "assistant", "A ranking function [1].",
                         sources=[{"source": "bm25.md", "page": 3, "chunk_id": 7, "text": "BM25 ranks  documents."}],
                         meta={"model": "m/small"})
    convs = state.list_conversations(ann)
    assert [c["id"] for c in convs] == [c1, c2]          # newest activity first
    assert convs[0]["n_messages"] == 2 and convs[1]["title"] == "Second one" and convs[1]["n_messages"] == 0
    full = state.get_conversation(ann, c1)
    assert [m["role"] for m in full["messages"]] == ["user", "assistant"]
    assert full["messages"][1]["sources"][0]["page"] == 3 and full["messages"][1]["meta"] == {"model": "m/small"}
    assert state.rename_conversation(ann, c2, "x" * 300) == "x" * 200
    assert state.rename_conversation(ann, c2, "\n") == "New conversation"
    md = state.export_markdown(ann, c1)
    assert md.startswith("# First\n") and "## You\n\nWhat is BM25?" in md and "## Assistant (m/small)" in md
    assert "1. **bm25.md** (page 3, chunk 7)\n   > BM25 ranks documents." in md
    assert state.list_conversations(rex) == []
    for call in (lambda: state.get_conversation(rex, c1), lambda: state.append_message(rex, c1, "user", "hi"),
                 lambda: state.rename_conversation(rex, c1, "mine"), lambda: state.delete_conversation(rex, c1),
                 lambda: state.export_markdown(rex, c1), lambda: state.get_conversation(ann, "nope")):
        with pytest.raises(ConversationNotFound, match="among yours"):
            call()
    with pytest.raises(StateError, match="user, assistant or system"):
        state.append_message(ann, c1, "robot", "x")
    state.delete_conversation(ann, c1)
    assert [c["id"] for c in state.list_conversations(ann)] == [c2]


# -- audit ----------------------------------------------------------------------------------------------------
def test_audit_is_append_only_filterable_and_exports_csv(state, people):
    state.audit(people.admin, "user.add", detail="ann (reader)")
    state.audit("cli:root", "rights.grant", collection="eds", detail="ann as reader")
    state.audit(people.ed, "document.delete", collection="eds", document="=cmd|' /C calc'!A0", result="denied")
    log = state.audit_log()
    assert [e["action"] for e in log] == ["document.delete", "rights.grant", "user.add"]
    assert log[0]["actor"] == "ed" and log[0]["result"] == "denied" and log[0]["time"].endswith("+00:00")
    assert [e["action"] for e in state.audit_log(collection="eds")] == ["document.delete", "rights.grant"]
    assert [e["action"] for e in state.audit_log(actor="cli:root")] == ["rights.grant"]
    assert [e["action"] for e in state.audit_log(action="user.")] == ["user.add"]
    assert [e["action"] for e in state.audit_log(limit=1, offset=1)] == ["rights.grant"]
    csv_text = state.audit_csv(collection="eds")
    assert csv_text.splitlines()[0] == "id,time,actor,action,collection,document,result,detail"
    assert "'=cmd" in csv_text          # a spreadsheet will not run it
    assert not [n for n in dir(state) if "audit" in n and any(w in n for w in ("delete", "update", "clear", "edit"))]
    with pytest.raises(ValueError, match="ok, denied, failed"):   # one vocabulary of results on every path
        state.audit("cli:root", "user.add", result="refused")
    assert len(state.audit_log()) == 3


# -- many writers ---------------------------------------------------------------------------------------------
def test_several_processes_write_at_once(state, state_url):
    from rag.arena import Arena

    state.add_user("root", PW, "admin")
    others = [State(state_url) for _ in range(2)]   # separate engines and connection pools, like processes
    errors = []

    def work(s, i):
        try:
            arena = Arena.for_state(s)
            for j in range(15):
                arena.record_vote(["a", "b"], "A" if j % 2 else "B", voter="root", collection=f"c{i % 2}")
                s.audit("cli:test", "test.write", detail=f"{i}/{j}")
        except Exception as e:   # pragma: no cover - the failure is reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate([state, *others] * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Arena.for_state(state).count() == 6 * 15 and len(state.audit_log(action="test.write", limit=1000)) == 90
    for s in others:
        s.close()


# -- arena votes ----------------------------------------------------------------------------------------------
def test_arena_votes_record_the_voter_and_filter_by_collection(state, people):
    from rag.arena import Arena

    arena = Arena.for_state(state)
    arena.record_vote(["m1", "m2"], "A", collection="docs", voter=people.ann, meta={"router": {"route": "speed"}})
    arena.record(["m1", "m2"], "B", collection="other", voter="rex")
    arena.record_vote(["m1", "m2"], "A", collection="docs")
    assert [v.voter for v in arena.votes()] == ["ann", "rex", None]
    assert arena.count() == 3 and arena.count(collection="docs") == 2 and arena.collections() == ["docs", "other"]
    assert [v.id for v in arena.votes(voter="rex")] == [arena.votes()[1].id]
    rows = arena.leaderboard(bootstrap=0, collection="docs")
    assert [r["model"] for r in rows] == ["m1", "m2"] and rows[0]["wins"] == 2
    assert arena.leaderboard(bootstrap=0, collection="other")[0]["model"] == "m2"
    assert arena.votes()[0].meta == {"router": {"route": "speed"}}


def test_old_arena_sqlite_is_imported_once(state_url, settings, data_dir):
    from rag.arena import Arena

    old = sqlite3.connect(data_dir / "arena.sqlite")
    old.executescript("""CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, models TEXT NOT NULL,
        outcome TEXT NOT NULL, blind INTEGER NOT NULL, question TEXT NOT NULL DEFAULT '',
        collection TEXT NOT NULL DEFAULT '', meta TEXT NOT NULL DEFAULT '{}');""")
    old.executemany("INSERT INTO votes (ts, models, outcome, blind, question, collection, meta) VALUES (?,?,?,?,?,?,?)",
                    [(1.0, '["x", "y"]', "A", 1, "q1", "docs", '{"router": {"route": "quality"}}'),
                     (2.0, '["x", "y", "z"]', "bad", 0, "", "", "{}")])
    old.commit()
    old.close()
    state = open_state(settings)
    votes = Arena.for_state(state).votes()
    assert [(v.ts, v.models, v.outcome, v.blind, v.question, v.collection, v.voter) for v in votes] == [
        (1.0, ["x", "y"], "A", True, "q1", "docs", None), (2.0, ["x", "y", "z"], "bad", False, "", "", None)]
    assert votes[0].meta == {"router": {"route": "quality"}}
    assert not (data_dir / "arena.sqlite").exists() and (data_dir / "arena.sqlite.imported").is_file()
    (data_dir / "arena.sqlite.imported").rename(data_dir / "arena.sqlite")   # put back: never imported twice
    open_state(settings)
    assert Arena.for_state(state).count() == 2
    assert state.audit_log(action="arena.import")[0]["detail"].startswith("2 votes")


def test_arena_for_data_dir_uses_the_state_database(data_dir):
    from rag.arena import Arena

    Arena.for_data_dir(data_dir).record_vote(["a", "b"], "tie")
    engine = create_engine(f"sqlite:///{data_dir / 'state.sqlite'}")
    with engine.connect() as c:
        assert c.execute(text("SELECT outcome, voter FROM votes")).all() == [("tie", None)]
    engine.dispose()


def test_first_admin_from_the_settings_password(state, settings):
    settings.admin.username, settings.admin.password = "boss", "from the settings file"
    admin = state.ensure_first_admin(environ={})
    assert admin.name == "boss" and state.authenticate("boss", "from the settings file") == admin
    assert "admin.password" in state.audit_log(action="user.first_admin")[0]["detail"]


def test_rights_follow_the_database_not_a_stale_user_object(state, people):
    state.add_user("root2", PW, "admin")
    stale_admin, stale_ed = people.admin, people.ed
    state.grant("c", "ed", as_="editor")
    state.set_role("root", "reader")
    state.set_role("ed", "reader")
    assert state.access(stale_admin, "c") is None and not state.can_edit(stale_ed, "c")
    assert state.readable(stale_admin, ["c"]) == [] and not state.can_create(stale_ed)
    with pytest.raises(AccessDenied, match="'root' is a reader"):
        state.require_admin(stale_admin)
    state.remove_user("ed")
    assert state.access(stale_ed, "c") is None and state.readable(stale_ed, ["c"]) == []
    state.require_admin(state.get_user("root2"))
    state.remove_user("root")
    with pytest.raises(AccessDenied, match="no user 'root' any more"):
        state.require_admin(stale_admin)


def test_migrations_go_down_and_up_again(state):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    from rag.state import db

    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with db.transaction(state.engine, write=True) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(state.engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(state.engine)
    assert state.schema_revision() == db.head_revision() and state.list_users() == []
