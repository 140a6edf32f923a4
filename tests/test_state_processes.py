"""Several processes on one state database at once: they create the schema together (one migrates, the others
wait and find it done), then write votes, audit entries and failed sign-ins without "database is locked"."""
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow   # three Python processes start

WORKER = textwrap.dedent("""
    import sys
    from argon2 import PasswordHasher
    from rag.arena import Arena
    from rag.state import AuthError, open_state_at
    from rag.state import users

    users._HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    state = open_state_at(sys.argv[1])
    arena = Arena.for_state(state)
    me = sys.argv[2]
    for i in range(20):
        arena.record_vote(["a", "b"], "A", voter=me, collection="c")
        state.audit("cli:" + me, "test.write", detail=str(i))
        try:
            state.authenticate("nobody", "wrong password", client="192.0.2.1")
        except AuthError:
            pass
    print("ok", state.dialect)
""")


def test_processes_share_one_database(state_url, data_dir, settings):
    from rag.arena import Arena
    from rag.state import open_state

    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), f"w{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert out.startswith("ok")
    state = open_state(settings)
    assert state.url.split(":")[0].startswith(("sqlite", "postgresql"))
    assert sorted(v.voter for v in Arena.for_state(state).votes()) == sorted([f"w{i}" for i in range(3)] * 20)
    assert len(state.audit_log(action="test.write", limit=1000)) == 60
