"""Work-arounds for bugs in the Python versions the app runs on. Imported once by ``rag``.

CPython gh-106905: the AST constructor's recursion-depth check (added by gh-95185 in 3.11) keeps its
counter in interpreter-wide state. When two threads build ASTs at once and the GIL moves between them
mid-way (a garbage collection that runs a finalizer is enough), one of them fails with
``SystemError: AST constructor recursion depth mismatch``. ``np.load`` parses every ``.npy`` header
with ``ast.literal_eval``, so readers opening a new collection version while other threads do the same
hit it under load (seen in this project's load test on 3.11.7).

The fix was backported on 2023-12-25 and shipped in 3.11.8 and 3.12.2, so the affected versions are
3.11.0-3.11.7 and 3.12.0-3.12.1 (:func:`affected`). On those, and only on those, ``ast.parse`` is
replaced by a version that holds a process-wide lock (``literal_eval`` and ``np.load`` go through it;
a header parse takes microseconds, so the lock costs nothing measurable). On every other version the
``ast`` module is left exactly as it is.
"""
from __future__ import annotations

import ast
import functools
import sys
import threading

_AST_LOCK = threading.RLock()  # re-entrant: a finalizer run inside a parse may parse again


def affected(version_info=sys.version_info) -> bool:
    """Does this CPython version have gh-106905 (3.11.0-3.11.7, 3.12.0-3.12.1)?"""
    v = tuple(version_info[:3])
    return (3, 11, 0) <= v < (3, 11, 8) or (3, 12, 0) <= v < (3, 12, 2)


def locked(fn, lock=None):
    """``fn`` wrapped so that its calls run one at a time under ``lock`` (a new re-entrant lock if None).

    The wrapper carries ``fn``'s name and docstring, and ``fn`` itself as ``__wrapped__``.
    """
    lock = threading.RLock() if lock is None else lock

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with lock:
            return fn(*args, **kwargs)

    return wrapper


def serialise_ast_parse(version_info=sys.version_info) -> bool:
    """On an affected version, wrap ``ast.parse`` in the process-wide lock; elsewhere do nothing.

    Idempotent. True if ``ast.parse`` was wrapped by this call.
    """
    if not affected(version_info) or getattr(ast.parse, "_hybrid_rag_locked", False):
        return False
    parse = locked(ast.parse, _AST_LOCK)
    parse._hybrid_rag_locked = True
    ast.parse = parse
    return True


serialise_ast_parse()
