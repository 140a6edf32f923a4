"""rag/_compat.py: the ast.parse lock is installed on exactly the affected CPython versions, and it
really serialises the calls."""
import ast
import sys
import threading
import time

import pytest

import rag  # noqa: F401  (installs the work-around)
from rag import _compat


@pytest.mark.parametrize("version, expected", [
    ((3, 10, 13), False),
    ((3, 11, 0), True),
    ((3, 11, 7), True),
    ((3, 11, 8), False),
    ((3, 11, 9), False),
    ((3, 12, 0), True),
    ((3, 12, 1), True),
    ((3, 12, 2), False),
    ((3, 13, 0), False),
    ((3, 11, 7, "final", 0), True),   # a full sys.version_info-shaped tuple
    ((3, 12, 2, "final", 0), False),
])
def test_affected_versions(version, expected):
    assert _compat.affected(version) is expected


def test_ast_parse_is_wrapped_exactly_on_affected_interpreters():
    if _compat.affected(sys.version_info):
        assert ast.parse.__code__.co_filename == _compat.__file__
        assert ast.parse.__wrapped__.__code__.co_filename == ast.__file__
        assert ast.parse._hybrid_rag_locked
        assert not _compat.serialise_ast_parse()  # idempotent
    else:
        assert ast.parse.__code__.co_filename == ast.__file__
        assert not hasattr(ast.parse, "__wrapped__")
    assert ast.literal_eval("{'shape': (3, 4), 'fortran_order': False}") == {"shape": (3, 4), "fortran_order": False}


def test_serialise_installs_only_for_affected_versions(monkeypatch):
    original = getattr(ast.parse, "__wrapped__", ast.parse)
    monkeypatch.setattr(ast, "parse", original)
    assert not _compat.serialise_ast_parse((3, 12, 2))
    assert ast.parse is original
    assert _compat.serialise_ast_parse((3, 11, 7))
    assert ast.parse is not original and ast.parse.__wrapped__ is original
    assert not _compat.serialise_ast_parse((3, 11, 7))  # idempotent
    assert ast.parse("x + 1", mode="eval").body.op.__class__ is ast.Add


def _max_concurrency(fn, threads=8, calls=3) -> int:
    """Call ``fn(slow)`` from ``threads`` threads at once; the highest number of ``slow`` calls in flight."""
    state = {"now": 0, "max": 0}
    guard = threading.Lock()

    def slow():
        with guard:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.01)
        with guard:
            state["now"] -= 1

    call = fn(slow)
    barrier = threading.Barrier(threads)

    def worker():
        barrier.wait()
        for _ in range(calls):
            call()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return state["max"]


def test_locked_serialises_callers():
    assert _max_concurrency(lambda f: f) > 1  # the harness does see overlapping calls
    assert _max_concurrency(_compat.locked) == 1


@pytest.mark.may_skip
@pytest.mark.skipif(not _compat.affected(sys.version_info), reason="ast.parse is only locked on affected versions")
def test_installed_ast_parse_waits_for_the_lock():
    done = threading.Event()
    with _compat._AST_LOCK:
        t = threading.Thread(target=lambda: (ast.parse("1 + 1"), done.set()))
        t.start()
        assert not done.wait(0.2)  # blocked while another thread holds the lock
    assert done.wait(5)
    t.join()
