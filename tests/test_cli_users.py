"""`hybrid-rag users|collections grant/revoke|keys|audit`: the state database from the command line, each change
audited as cli:<os user>. In-process through rag.cli.main (fast), plus one run of the installed console script."""
import json
import subprocess

import pytest
from argon2 import PasswordHasher

from rag import cli_users
from rag.cli import main
from rag.state import open_state
from rag.state import users as users_mod

PW = "correct horse"


@pytest.fixture(autouse=True)
def _fast_hashes(monkeypatch):
    monkeypatch.setattr(users_mod, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(users_mod, "_DUMMY_HASH", [])
    monkeypatch.setenv("HYBRID_RAG_NEW_PASSWORD", PW)
    monkeypatch.setattr(cli_users, "actor", lambda: "cli:tester")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_users_add_list_set_role_reset_remove(capsys, settings, monkeypatch):
    assert run(capsys, "users", "add", "alice", "--role", "admin")[:2] == (0, "added admin 'alice'\n")
    assert run(capsys, "users", "add", "bob")[0] == 0          # reader by default
    rc, out, _ = run(capsys, "users", "list", "--json")
    assert [(u["name"], u["role"]) for u in json.loads(out)] == [("alice", "admin"), ("bob", "reader")]
    state = open_state(settings)
    assert state.authenticate("bob", PW).role == "reader"
    assert run(capsys, "users", "set-role", "bob", "editor")[1] == "'bob' is now editor\n"

    token = state.create_session(state.get_user("bob"))
    monkeypatch.setenv("HYBRID_RAG_NEW_PASSWORD", "another password")
    assert run(capsys, "users", "reset-password", "bob")[0] == 0
    assert state.session_user(token) is None and state.authenticate("bob", "another password").name == "bob"

    rc, _, err = run(capsys, "users", "set-role", "alice", "reader")
    assert rc == 2 and "last admin" in err and "users set-role NAME admin" in err
    rc, _, err = run(capsys, "users", "remove", "ghost")
    assert rc == 2 and "No user 'ghost': list users with `hybrid-rag users list`" in err
    rc, _, err = run(capsys, "users", "add", "bad\tname")
    assert rc == 2 and "Invalid user name" in err
    assert run(capsys, "users", "remove", "bob")[0] == 0 and state.get_user("bob") is None

    log = state.audit_log()
    assert [(e["actor"], e["action"], e["result"]) for e in reversed(log)] == [
        ("cli:tester", "user.add", "ok"), ("cli:tester", "user.add", "ok"), ("cli:tester", "user.set_role", "ok"),
        ("cli:tester", "user.reset_password", "ok"), ("cli:tester", "user.set_role", "failed"),
        ("cli:tester", "user.remove", "failed"), ("cli:tester", "user.add", "failed"),
        ("cli:tester", "user.remove", "ok")]
    assert PW not in json.dumps(log) and "another password" not in json.dumps(log)


def test_password_prompt_twice_when_no_variable(capsys, settings, monkeypatch):
    monkeypatch.delenv("HYBRID_RAG_NEW_PASSWORD")
    answers = iter(["typed password", "typed password", "one password", "another one"])
    monkeypatch.setattr(cli_users.getpass, "getpass", lambda prompt="": next(answers))
    assert run(capsys, "users", "add", "carol", "--role", "editor")[0] == 0
    assert open_state(settings).authenticate("carol", "typed password").role == "editor"
    rc, _, err = run(capsys, "users", "add", "dave")
    assert rc == 2 and "passwords differ" in err and open_state(settings).get_user("dave") is None

    def eof(prompt=""):
        raise EOFError
    monkeypatch.setattr(cli_users.getpass, "getpass", eof)
    rc, _, err = run(capsys, "users", "add", "erin")
    assert rc == 2 and "HYBRID_RAG_NEW_PASSWORD" in err


def test_collections_grant_revoke_public_owner_rights(capsys, settings):
    run(capsys, "users", "add", "root", "--role", "admin")
    run(capsys, "users", "add", "ann")
    run(capsys, "users", "add", "ed", "--role", "editor")
    assert run(capsys, "collections", "grant", "docs", "ann", "--as", "reader")[0] == 0
    assert run(capsys, "collections", "grant", "docs", "ed", "--as", "editor")[0] == 0
    rc, _, err = run(capsys, "collections", "grant", "docs", "ann", "--as", "editor")
    assert rc == 2 and "users set-role ann editor" in err
    assert run(capsys, "collections", "owner", "docs", "ed")[0] == 0
    assert run(capsys, "collections", "public", "starter", "on")[0] == 0
    rc, out, _ = run(capsys, "collections", "rights", "docs", "--json")
    assert json.loads(out) == {"owner": "ed", "public": False, "readers": ["ann"], "editors": ["ed"]}
    assert run(capsys, "collections", "revoke", "docs", "ann")[1] == "revoked the right of 'ann' on 'docs'\n"
    assert "nothing changed" in run(capsys, "collections", "revoke", "docs", "ann")[1]
    state = open_state(settings)
    assert state.readable(state.get_user("ann"), ["docs", "starter"]) == ["starter"]
    # the same action names and results as the Admin tab and the API write (one vocabulary in the audit log)
    acts = [(e["action"], e["collection"], e["result"]) for e in reversed(state.audit_log(action="rights."))]
    assert acts == [("rights.grant", "docs", "ok"), ("rights.grant", "docs", "ok"),
                    ("rights.grant", "docs", "failed"), ("rights.owner", "docs", "ok"),
                    ("rights.public", "starter", "ok"), ("rights.revoke", "docs", "ok"),
                    ("rights.revoke", "docs", "ok")]
    assert state.audit_log(action="collection.") == []
    # the listing and its JSON still work beside the new subcommands
    rc, out, _ = run(capsys, "collections", "--json")
    assert rc == 0 and json.loads(out) == []
    rc, out, _ = run(capsys, "collections")
    assert rc == 0 and "no collections" in out


def test_deleting_a_collection_drops_its_rights_and_is_audited(capsys, settings, embedder):
    from ingest.pipeline import ingest

    ingest("gone", [("a.txt", b"Some text about cats.")], settings=settings, embedder=embedder)
    run(capsys, "users", "add", "ann")
    run(capsys, "collections", "grant", "gone", "ann", "--as", "reader")
    assert run(capsys, "collections", "--delete", "gone")[0] == 0
    state = open_state(settings)
    assert state.collection_rights("gone")["readers"] == []
    assert state.audit_log(action="collection.delete")[0]["collection"] == "gone"


def test_keys_create_list_revoke_on_the_state(capsys, settings):
    run(capsys, "users", "add", "ann")
    with pytest.raises(SystemExit):                                      # argparse: --user is required
        main(["keys", "create", "--name", "k", "--scope", "read"])
    assert "--user" in capsys.readouterr().err
    rc, _, err = run(capsys, "keys", "create", "--name", "k", "--scope", "admin", "--user", "ann")
    assert rc == 2 and "admin key needs an admin or editor" in err
    rc, out, _ = run(capsys, "keys", "create", "--name", "k", "--scope", "read", "--user", "ann")
    key = out.strip().splitlines()[-1]
    state = open_state(settings)
    assert rc == 0 and state.verify_key(key).user.name == "ann"
    rc, out, _ = run(capsys, "keys", "list", "--json")
    assert json.loads(out)[0]["user"] == "ann" and key not in out
    assert run(capsys, "keys", "revoke", "k")[0] == 0 and state.verify_key(key) is None
    assert [(e["action"], e["result"]) for e in reversed(state.audit_log(action="key."))] == [
        ("key.create", "failed"), ("key.create", "ok"), ("key.revoke", "ok")]
    assert key not in state.audit_csv()


def test_audit_command_prints_and_exports(capsys):
    run(capsys, "users", "add", "ann")
    rc, out, _ = run(capsys, "audit")
    assert rc == 0 and "cli:tester" in out and "user.add" in out
    rc, out, _ = run(capsys, "audit", "--csv", "--action", "user.add")
    assert out.splitlines()[0].startswith("id,time,actor") and len(out.splitlines()) == 2


def test_console_script_users_add_reads_the_variable(hybrid_rag_bin, data_dir, settings):
    env = {"PATH": "/usr/bin:/bin", "HYBRID_RAG_DATA": str(data_dir), "HYBRID_RAG_NEW_PASSWORD": PW,
           "HOME": str(data_dir)}
    p = subprocess.run([hybrid_rag_bin, "users", "add", "zed", "--role", "editor"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    state = open_state(settings)
    assert state.get_user("zed").role == "editor"
    assert state.audit_log()[0]["actor"].startswith("cli:")


@pytest.mark.parametrize("url, says", [
    ("mysql://ann:s3cret-pw@localhost/db", "the database 'mysql' is not supported: use PostgreSQL"),
    ("postgresql+psycopg://ann:s3cret-pw@127.0.0.1:{port}/db", "Connection refused"),
])
def test_a_state_database_that_cannot_be_opened_is_named_without_a_traceback(hybrid_rag_bin, data_dir, url, says):
    """An unsupported driver or an unreachable server: the console script exits non-zero with one line naming
    the URL (password masked) and the variable and what to do; no traceback, no internal-error reference."""
    import socket

    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = url.format(port=port)
    env = {"PATH": "/usr/bin:/bin", "HYBRID_RAG_DATA": str(data_dir), "HOME": str(data_dir),
           "HYBRID_RAG_DATABASE_URL": url, "HYBRID_RAG_NEW_PASSWORD": PW}
    for argv in (["users", "list"], ["users", "add", "zed"], ["audit"]):
        p = subprocess.run([hybrid_rag_bin, *argv], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (argv, p.returncode, p.stderr)
        err = p.stderr
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and "internal error" not in err and "s3cret-pw" not in err, err
        assert url.replace("s3cret-pw", "***") in err and "HYBRID_RAG_DATABASE_URL" in err and says in err, err


def test_open_state_errors_say_what_to_do(tmp_path):
    from types import SimpleNamespace

    from rag.state import StateError, StateUnavailable
    from rag.state.state import open_state as _open

    settings = SimpleNamespace(data_dir=tmp_path)
    with pytest.raises(StateUnavailable, match=r"postgresql\+psycopg2://u:\*\*\*@dbhost.internal/db \(from HYBRID_RAG_DATABASE_URL\)"
                       r".*driver 'postgresql\+psycopg2' is not installed") as caught:
        _open(settings, {"HYBRID_RAG_DATABASE_URL": "postgresql+psycopg2://u:pw@dbhost.internal/db"})
    from api.errors import error_response

    r = error_response(caught.value)   # an API client is told 503 with a reference, not the database's URL
    assert r.status_code == 503 and b"dbhost" not in r.body and b"ref " in r.body
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match=r"SQLite in the data directory; HYBRID_RAG_DATABASE_URL is unset.*"
                                         r"data directory exists and is writable"):
        _open(SimpleNamespace(data_dir=blocker / "data"), {})
