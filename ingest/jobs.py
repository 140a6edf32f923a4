"""Background ingest jobs: uploads run one at a time on a worker thread, outlive the request that
submitted them, report progress, and can be cancelled.

The HTTP API and the Documents tab share one :class:`JobManager` (``Backend.jobs``). A caller saves the
uploaded files into :meth:`JobManager.staging_dir`, submits them with ``owned_dir`` set to that directory,
and follows the job with :meth:`JobManager.wait` or :meth:`JobManager.get`; ``Job.file_states`` says where each
file is while it runs. The staging directory is deleted when the job ends, whatever the outcome. Cancelling a
running job makes the pipeline raise :class:`~ingest.pipeline.IngestCancelled` at its next step: files it had
already committed stay (the job's ``results``), the others are not added.
"""
from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rag.errors import HybridRagError, user_message

from .pipeline import FileState, IngestCancelled

log = logging.getLogger(__name__)

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = frozenset(("done", "failed", "cancelled"))
_STAGING_RE = re.compile(r"^job-(\d+)-([0-9a-f]{8})-")  # job-<pid>-<manager token>-<random>
_LIVE_TOKENS: set[str] = set()  # the managers of this process

# ingest_fn(collection, files, progress, cancelled): ``progress(frac, message)`` also has a ``files(states)``
# method, which ingest.pipeline.ingest() finds and calls with the per-file states (a tuple of FileState)
IngestFn = Callable[[str, list, Callable[[float, str], None], Callable[[], bool]], list]


@dataclass
class Job:
    """One ingest job. Fields are replaced, never mutated in place, so reading them from any thread is safe."""

    id: str
    collection: str
    files: list[str]
    state: str = "queued"
    progress: float = 0.0
    message: str = ""
    results: list = field(default_factory=list)
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    chunks: int = 0
    file_states: tuple = ()  # FileState per file (archive members in place of their archive), input order

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict:
        return {"id": self.id, "collection": self.collection, "state": self.state, "progress": self.progress,
                "message": self.message, "files": list(self.files), "created_at": self.created_at,
                "started_at": self.started_at, "finished_at": self.finished_at, "chunks": self.chunks,
                "error": self.error,
                "file_states": [s.as_dict() for s in self.file_states],
                "results": [{"name": r.name, "status": r.status, "chunks": r.chunks, "documents": r.documents,
                             "error": r.error, "details": list(r.details)} for r in self.results]}


class JobNotFound(HybridRagError, KeyError):
    """No job has this id (never submitted, or finished and forgotten)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class JobManager:
    """Runs ingest jobs one at a time, in submission order, on one daemon worker thread.

    ``ingest_fn(collection, files, progress, cancelled)`` does the work (``files``: ``(name, path)`` pairs)
    and returns the per-file results; ``on_finish(job)`` is called after each job reaches a final state.
    At most ``keep`` finished jobs are remembered; queued and running ones always are.
    """

    def __init__(self, ingest_fn: IngestFn, *, staging_root: Path, keep: int = 200,
                 on_finish: Callable[[Job], None] | None = None):
        self._ingest_fn, self._on_finish = ingest_fn, on_finish
        self.keep = max(1, int(keep))
        self.staging_root = Path(staging_root)
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}              # submission order
        self._queue: collections.deque[str] = collections.deque()
        self._inputs: dict[str, tuple[list, Path | None]] = {}  # queued job -> (files, owned_dir)
        self._cancel_requested: set[str] = set()
        self._worker: threading.Thread | None = None
        self._closing = False
        self._token = uuid.uuid4().hex[:8]
        self.staging_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_leftovers()
        _LIVE_TOKENS.add(self._token)

    # -- staging -----------------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """A fresh private directory (mode 0700) to save uploads into before :meth:`submit`."""
        self.staging_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix=f"job-{os.getpid()}-{self._token}-", dir=self.staging_root))

    def _remove_leftovers(self) -> None:
        """Staging entries of processes that are gone belong to no job (a crash or a restart left them).

        A restarted container often gets the same pid as before, so an entry with this process's pid is a
        leftover unless one of this process's managers made it."""
        for entry in self.staging_root.iterdir():
            if _in_use(entry.name):
                continue
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
            except OSError as e:
                log.warning("jobs: cannot remove leftover upload %s: %s", entry, e)

    # -- submitting and reading --------------------------------------------------------------------
    def submit(self, collection: str, files: list[tuple[str, Path]], *, owned_dir: Path | None = None) -> Job:
        """Queue an ingest of ``files`` into ``collection``; ``owned_dir`` is deleted when the job ends."""
        files = [(str(name), path) for name, path in files]
        job = Job(uuid.uuid4().hex, collection, [name for name, _ in files])
        job.file_states = tuple(FileState(name) for name in job.files)
        with self._cond:
            if self._closing:
                raise HybridRagError("The ingest queue is shut down (the server is stopping); upload again "
                                     "after it restarts.")
            self._jobs[job.id] = job
            self._inputs[job.id] = (files, Path(owned_dir) if owned_dir is not None else None)
            self._queue.append(job.id)
            self._start_worker()
            self._cond.notify_all()
        log.info("jobs: queued %s: %d file(s) into %s", job.id, len(files), collection)
        return job

    def get(self, job_id: str) -> Job:
        with self._cond:
            return self._get(job_id)

    def _get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise JobNotFound(
                f"No ingest job with id {job_id!r}: check the id. Finished jobs are forgotten once "
                f"{self.keep} newer ones have finished (jobs.keep in the config), and when the server restarts.")
        return job

    def list(self, *, collection: str | None = None, active: bool | None = None) -> list[Job]:
        """Jobs, newest first; ``active=True``: queued or running only, ``False``: finished only."""
        with self._cond:
            jobs = list(reversed(self._jobs.values()))
        return [j for j in jobs if (collection is None or j.collection == collection)
                and (active is None or active != j.finished)]

    def counts(self) -> dict[str, int]:
        with self._cond:
            out = dict.fromkeys(JOB_STATES, 0)
            for j in self._jobs.values():
                out[j.state] += 1
        return out

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is finished or ``timeout`` seconds pass; returns the job either way."""
        with self._cond:
            job = self._get(job_id)
            self._cond.wait_for(lambda: job.finished, timeout)
            return job

    # -- cancelling and stopping -------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once, never runs. Running: stops at its next step (files it already committed
        stay). Finished: unchanged."""
        with self._cond:
            job = self._get(job_id)
            if job.finished:
                return job
            if job.state == "running":
                self._cancel_requested.add(job.id)
                log.info("jobs: cancel requested for running job %s", job.id)
                return job
            if job.id not in self._queue:  # another cancel (or close) took it out and is finishing it now
                return job
            self._queue.remove(job.id)
            _files, owned = self._inputs.pop(job.id)
        _remove(owned)
        self._finish(job, "cancelled", error="Cancelled before it started; nothing was changed.")
        return job

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker after the current job; jobs still queued are cancelled."""
        with self._cond:
            self._closing = True
            waiting = [self._jobs[i] for i in self._queue]
            owned = [self._inputs.pop(i)[1] for i in self._queue]
            self._queue.clear()
            worker = self._worker
            self._cond.notify_all()
        for job, d in zip(waiting, owned):
            _remove(d)
            self._finish(job, "cancelled", error="The server stopped before this upload ran; upload it again.")
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    # -- the worker --------------------------------------------------------------------------------
    def _start_worker(self) -> None:  # under the lock
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._serve, name="ingest-jobs", daemon=True)
            self._worker.start()

    def _serve(self) -> None:
        from rag.interactive import lower_priority

        lower_priority()  # parsing and chunking give way to chats and searches (this thread only does ingest)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if self._closing:
                    return
                job = self._jobs[self._queue.popleft()]
                files, owned = self._inputs.pop(job.id)
                job.state, job.started_at, job.message = "running", time.time(), "starting"
                self._cond.notify_all()
            self._run(job, files, owned)

    def _run(self, job: Job, files: list, owned: Path | None) -> None:
        def progress(frac: float, message: str) -> None:
            frac = min(max(float(frac), 0.0), 1.0)
            with self._cond:
                job.progress, job.message = frac, str(message)

        def file_states(states) -> None:
            states = tuple(states)
            with self._cond:
                job.file_states = states

        progress.files = file_states

        def cancelled() -> bool:
            with self._cond:
                return job.id in self._cancel_requested

        state, results, error = "failed", [], "The ingest stopped unexpectedly; the server log has the details."
        try:
            results = list(self._ingest_fn(job.collection, files, progress, cancelled) or [])
            state, error = "done", None
        except IngestCancelled as e:  # what it committed before the cancel stays
            state, error, results = "cancelled", str(e), list(e.results)
        except Exception as e:  # the worker keeps serving later jobs
            error = user_message(e, f"Ingesting into {job.collection!r}")
        finally:
            _remove(owned)
            self._finish(job, state, results=results, error=error)

    def _finish(self, job: Job, state: str, *, results: list | None = None, error: str | None = None) -> None:
        with self._cond:
            job.results = list(results or [])
            job.chunks = sum(getattr(r, "chunks", 0) for r in job.results)
            job.error = error
            if state == "done":
                job.progress = 1.0
            elif any(not s.final for s in job.file_states):  # never started, or stopped without saying
                job.file_states = tuple(s if s.final else FileState(s.name, state, detail="not ingested")
                                        for s in job.file_states)
            job.finished_at = time.time()
            job.state = state
            self._cancel_requested.discard(job.id)
            self._forget_old()
            self._cond.notify_all()
        log.info("jobs: %s %s (%s): %d chunk(s)%s", job.id, state, job.collection, job.chunks,
                 f": {error}" if error else "")
        if self._on_finish is not None:
            try:
                self._on_finish(job)
            except Exception:
                log.exception("jobs: the on_finish hook failed for job %s", job.id)

    def _forget_old(self) -> None:  # under the lock
        done = sorted((j for j in self._jobs.values() if j.finished), key=lambda j: j.finished_at or 0.0)
        for j in done[:max(0, len(done) - self.keep)]:
            del self._jobs[j.id]


def _in_use(name: str) -> bool:
    """A staging entry made by a live manager: one of this process's, or another live server's on the
    same data directory."""
    m = _STAGING_RE.match(name)
    if not m:
        return False
    pid = int(m.group(1))
    return m.group(2) in _LIVE_TOKENS if pid == os.getpid() else _alive(pid)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # exists, owned by another user
    except (OSError, OverflowError):
        return False
    return True


def _remove(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["Job", "JobManager", "JobNotFound", "JOB_STATES"]
