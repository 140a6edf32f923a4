"""Work-arounds for bugs in the Python versions the app runs on. Imported once by ``rag``.

CPython 3.11 keeps the AST constructor's recursion counter in interpreter-wide state. When two
threads build ASTs at once and the GIL moves between them mid-way (a garbage collection that runs a
finalizer is enough), one of them fails with ``SystemError: AST constructor recursion depth mismatch``.
``np.load`` parses every ``.npy`` header with ``ast.literal_eval``, so readers opening a new collection
version while other threads do the same hit it under load (seen in this project's load test on
3.11.7). Serialising ``ast.parse`` closes the window; ``literal_eval`` and ``np.load`` go through it.
It is done on every version: a header parse takes microseconds, so the lock costs nothing measurable.
"""
from __future__ import annotations

import ast
import threading

_AST_LOCK = threading.RLock()


def serialise_ast_parse() -> bool:
    """Wrap ``ast.parse`` in a process-wide lock. Idempotent."""
    if getattr(ast.parse, "_hybrid_rag_locked", False):
        return False
    parse = ast.parse

    def locked_parse(*args, **kwargs):
        with _AST_LOCK:
            return parse(*args, **kwargs)

    locked_parse._hybrid_rag_locked = True
    locked_parse.__doc__ = parse.__doc__
    locked_parse.__wrapped__ = parse
    ast.parse = locked_parse
    return True


serialise_ast_parse()
