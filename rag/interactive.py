"""Interactive requests first: background work (ingest embedding) steps aside while someone waits for an answer.

A process-wide count of interactive requests in progress (:func:`request`, entered by :func:`rag.answer.answer`
while the embedded model generates on this machine's cores). Background work runs its batches through a
:class:`Gate`: all its workers when no request is active, half of them (at least one) while one is, so the
request gets cores of its own. Background threads also run at a lower OS priority (:func:`lower_priority`,
``nice`` +10), so the scheduler prefers the request's threads even in the middle of a batch.

:func:`free_cores` tells the embedded model how many threads it can use now (normal-priority load elsewhere on
the machine counts; niced background work does not).

Measured in ``python -m bench.offline``: the embedded model's first token while a large upload is embedded,
with and without this.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Iterator

log = logging.getLogger(__name__)

BACKGROUND_NICE = 10   # CFS gives a nice-0 thread about 9x the CPU of a nice-10 one when they compete
ENABLED = True         # python -m bench.offline turns it off for its baseline

_cond = threading.Condition()
_active = 0


@contextlib.contextmanager
def request() -> Iterator[None]:
    """Mark an interactive request in progress for the duration of the ``with`` block."""
    global _active
    with _cond:
        _active += 1
    try:
        yield
    finally:
        with _cond:
            _active -= 1
            _cond.notify_all()


def active() -> int:
    """Interactive requests in progress now."""
    return _active


def lower_priority(nice: int = BACKGROUND_NICE) -> None:
    """Lower the calling thread's OS priority by ``nice`` (Linux: per thread). It cannot be raised back
    without privileges, so call it only in threads that do background work alone (a pool's initializer)."""
    if not ENABLED or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:  # not permitted on some systems: background work then runs at normal priority
        log.debug("could not lower a background thread's priority: %s", e)


def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]   # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores(window_s: float = 0.05) -> float | None:
    """Cores that normal-priority work leaves idle, measured over ``window_s`` (Linux ``/proc/stat``); niced
    work (this module's background threads) counts as free, since it yields. None where it cannot be read."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(window_s)
    b = _cpu_times()
    d = [y - x for x, y in zip(a, b or a)]
    total = sum(d)
    if total <= 0:
        return None
    busy = d[0] + d[2] + d[5] + d[6] + d[7]
    cpus = os.cpu_count() or 1
    return min(usable_cores(), cpus * (1 - busy / total))


class Gate:
    """Admits at most ``workers`` background batches at once, or ``max(1, workers // 2)`` while an interactive
    request is active. A batch already running finishes; the next one waits."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self.busy_workers = max(1, self.workers // 2)
        self._running = 0

    def limit(self) -> int:
        return self.busy_workers if ENABLED and _active else self.workers

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with _cond:
            while self._running >= self.limit():
                _cond.wait(0.1)   # woken when a request ends or a batch finishes
            self._running += 1
        try:
            yield
        finally:
            with _cond:
                self._running -= 1
                _cond.notify_all()


__all__ = ["request", "active", "lower_priority", "free_cores", "usable_cores", "Gate", "BACKGROUND_NICE"]
