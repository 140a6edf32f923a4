"""A small shared thread pool for work that runs beside the caller's own: BM25 beside the query embedding, half
of an IVF probe beside the other half. The kernels it runs (numba ``nogil``, FAISS, ONNX Runtime) release the
GIL, so the two halves use two cores.

``in_background(fn, *args)`` hands the call to a pool thread when one is free and returns something with
``result() -> (value, ms)``. The pool has one thread fewer than the machine has cores (the caller keeps one
busy). When every pool thread is taken (a query's BM25 still running while its dense search starts, or many
queries at once) the call runs when ``result()`` is asked for, on the caller's thread: a busy machine gains
nothing from the hand-off, and a query never queues behind other queries' work.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
# the caller's thread keeps one core busy itself: the pool gets the others (none on one core: every call is
# deferred). More threads than cores would only take turns, each turn a scheduler time slice of milliseconds.
_WORKERS = max(0, (os.cpu_count() or 1) - 1)
_SLOTS = threading.BoundedSemaphore(max(1, _WORKERS))


def timed(fn, *args):
    """``(fn(*args), milliseconds it took)``."""
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1000


class Deferred:
    """A call run on the caller's thread when its result is asked for."""

    def __init__(self, fn, *args):
        self._fn, self._args = fn, args

    def result(self):
        return timed(self._fn, *self._args)


def in_background(fn, *args):
    """Run ``fn(*args)`` on a free pool thread (else deferred, see the module notes); ``.result()`` gives
    ``(value, ms)`` and raises what the call raised."""
    global _POOL
    if not _WORKERS or not _SLOTS.acquire(blocking=False):
        return Deferred(fn, *args)
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="hybrid-rag-parallel")

    def run():
        try:
            return timed(fn, *args)
        finally:
            _SLOTS.release()

    try:
        return _POOL.submit(run)
    except RuntimeError:  # the interpreter is shutting down
        _SLOTS.release()
        return Deferred(fn, *args)


__all__ = ["in_background", "Deferred", "timed"]
