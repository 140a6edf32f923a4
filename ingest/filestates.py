"""Where each file of a running ingest is: :class:`FileState` per file, and the :class:`Tracker` that
publishes them (a tuple in input order, archive members in place of their archive) on every change.

States: ``queued`` → ``loading`` → ``embedding`` (``embedded`` of ``chunks`` done) → ``embedded`` (waiting
for its commit) → ``committed``; or ``duplicate``, ``failed``, ``cancelled``.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Callable

FILE_STATES = ("queued", "loading", "embedding", "embedded", "committed", "duplicate", "failed", "cancelled")
FINAL_FILE_STATES = frozenset(("committed", "duplicate", "failed", "cancelled"))


@dataclass(frozen=True)
class FileState:
    """Where one file of a running ingest is (see ``FILE_STATES``); ``embedded`` of ``chunks`` are done."""

    name: str
    state: str = "queued"
    chunks: int = 0
    embedded: int = 0
    detail: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_FILE_STATES

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Tracker:
    """The per-file states of one ingest, published as a tuple (input order) on every change."""

    def __init__(self, names: list[str], on_files: Callable[[tuple], None] | None):
        self.on_files = on_files
        self.order: list[tuple] = [(i,) for i in range(len(names))]
        self.states: dict[tuple, FileState] = {(i,): FileState(n) for i, n in enumerate(names)}
        self._members: Counter = Counter()
        self.publish()

    def get(self, key: tuple) -> FileState:
        return self.states[key]

    def set(self, key: tuple, **changes) -> None:
        old = self.states[key]
        new = dataclasses.replace(old, **changes)
        if new != old:
            self.states[key] = new
            self.publish()

    def add_member(self, archive: tuple, key: tuple, name: str) -> None:
        at = self.order.index(archive) + 1 + self._members[archive]
        self._members[archive] += 1
        self.order.insert(at, key)
        self.states[key] = FileState(name, "loading")
        self.publish()

    def remove(self, key: tuple) -> None:
        self.order.remove(key)
        del self.states[key]
        self.publish()

    def stop(self, state: str, detail: str) -> None:
        """Every file not finished yet ends as ``state``."""
        for key in self.order:
            if not self.states[key].final:
                self.states[key] = FileState(self.states[key].name, state, detail=detail)
        self.publish()

    def snapshot(self) -> tuple:
        return tuple(self.states[k] for k in self.order)

    def publish(self) -> None:
        if self.on_files is not None:
            self.on_files(self.snapshot())


__all__ = ["FileState", "Tracker", "FILE_STATES", "FINAL_FILE_STATES"]
