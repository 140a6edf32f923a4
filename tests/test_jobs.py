"""Background ingest jobs (ingest/jobs.py) and cancelling the pipeline (ingest.pipeline.ingest(cancelled=...)).

Real collections and the real pipeline with the tiny deterministic embedder; ingest functions that block on an
Event where a test needs a job to stay queued or running. Every wait has a timeout, so a bug fails, never hangs.
"""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
import zipfile

import pytest
from reliability_kit import FakeEmbedder

from ingest import pipeline
from ingest.jobs import JOB_STATES, JobManager, JobNotFound
from ingest.pipeline import IngestCancelled, ingest
from rag.errors import HybridRagError
from rag.retrieve import Retriever
from rag.store import open_collection

T = 60.0  # seconds: generous upper bounds for waits; the tests never assert on timing

CATS = b"# Cats\n\nCats sleep sixteen hours a day and purr when content."
DOGS = b"Dogs like long walks in the park and fetching sticks."


@pytest.fixture(scope="module")
def emb():
    return FakeEmbedder()


@pytest.fixture
def managers(tmp_path):
    """Make JobManagers under tmp_path; every one is closed after the test."""
    made = []

    def make(ingest_fn, **kw):
        kw.setdefault("staging_root", tmp_path / "uploads")
        m = JobManager(ingest_fn, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close(timeout=T)


def _pipeline_fn(settings, embedder):
    return lambda c, files, progress, cancelled: ingest(c, files, settings=settings, embedder=embedder,
                                                        progress=progress, cancelled=cancelled)


def _stage(manager, **named) -> tuple:
    """Save files into a fresh staging dir, as an upload handler does: (files, staging dir)."""
    d = manager.staging_dir()
    files = []
    for name, data in named.items():
        p = d / f"{len(files):04d}"
        p.write_bytes(data)
        files.append((name.replace("__", "."), p))
    return files, d


class Gate:
    """An ingest_fn that blocks until released; records what it was asked to do."""

    def __init__(self, then=None):
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[str] = []
        self.then = then

    def __call__(self, collection, files, progress, cancelled):
        self.calls.append(collection)
        self.entered.set()
        assert self.release.wait(T), "the test never released the gate"
        return self.then(collection, files, progress, cancelled) if self.then else []


def _docs(settings, name: str) -> list[str]:
    return sorted(d["doc_id"] for d in open_collection(name, settings).documents())


# ---------------------------------------------------------------------------------------------------
# the pipeline's cancel points
# ---------------------------------------------------------------------------------------------------

def _cancel_batch():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.md", "# A\n\nAlpha text about herons.")
        z.writestr("b.txt", "Beta text about egrets.")
    return [("new.md", b"# New\n\nSomething new about storks."), ("pack.zip", buf.getvalue()),
            ("last.txt", b"The last file, about cranes.")]


def _true_once_at(k: int):
    """A ``cancelled`` that says yes at its k-th call only: a check whose cancel was swallowed would let the
    ingest go on to commit."""
    calls = [0]

    def cancelled() -> bool:
        calls[0] += 1
        return calls[0] == k

    return cancelled


def test_a_cancel_at_any_check_point_commits_nothing(settings, emb, monkeypatch):
    """Before each file, archive member, embedding flush and the commit: a cancel aborts the whole batch,
    even from inside one file's ingest, and the collection keeps exactly its last committed version."""
    monkeypatch.setattr(pipeline, "EMBED_BATCH", 1)  # a flush after every document, inside a file's guard
    ingest("kb", [("cats.md", CATS), ("dogs.txt", DOGS)], settings=settings, embedder=emb)
    before = open_collection("kb", settings).version
    asked = []
    ingest("count", _cancel_batch(), settings=settings, embedder=emb, cancelled=lambda: asked.append(1) or False)
    points = len(asked)
    assert points >= 3 + 2 + 4 + 1  # files, archive members, flushes, commit
    for k in range(1, points + 1):
        with pytest.raises(IngestCancelled, match="keeps its last committed version"):
            ingest("kb", _cancel_batch(), settings=settings, embedder=emb, cancelled=_true_once_at(k))
        assert open_collection("kb", settings).version == before, f"cancel at check {k} committed"
    assert _docs(settings, "kb") == ["cats.md", "dogs.txt"]
    ingest("kb", _cancel_batch(), settings=settings, embedder=emb, cancelled=lambda: False)  # the lock was released
    assert len(_docs(settings, "kb")) == 6
    assert issubclass(IngestCancelled, HybridRagError)


def test_a_cancelled_first_ingest_creates_no_collection(settings, emb):
    with pytest.raises(IngestCancelled):
        ingest("fresh", [("a.md", CATS)], settings=settings, embedder=emb, cancelled=lambda: True)
    from rag.store import list_collections

    assert "fresh" not in [c["name"] for c in list_collections(settings.data_dir)]


# ---------------------------------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------------------------------

def test_a_job_runs_to_done_with_per_file_results(settings, emb, managers):
    finished = []
    jobs = managers(_pipeline_fn(settings, emb), on_finish=finished.append)
    noise_pdf = b"%PDF-1.7\n" + random.Random(7).randbytes(3000)
    files, staging = _stage(jobs, cats__md=CATS, twin__md=CATS, corrupt__pdf=noise_pdf, setup__exe=b"MZ\x00\x00",
                            dogs__txt=DOGS)
    job = jobs.submit("kb", files, owned_dir=staging)
    assert job.state in ("queued", "running", "done") and job.files[0] == "cats.md"
    job = jobs.wait(job.id, timeout=T)
    assert job.state == "done", job.error
    assert job.finished and job.progress == 1.0 and job.error is None
    assert job.created_at <= job.started_at <= job.finished_at
    by_name = {r.name: r for r in job.results}
    assert by_name["cats.md"].status == "added" and by_name["dogs.txt"].status == "added"
    assert by_name["twin.md"].status == "duplicate" and "same content as cats.md" in by_name["twin.md"].details[0]
    assert by_name["corrupt.pdf"].status == "failed" and "damaged" in by_name["corrupt.pdf"].error
    assert by_name["setup.exe"].status == "failed" and "not accepted" in by_name["setup.exe"].error
    assert job.chunks == sum(r.chunks for r in job.results) > 0
    assert _docs(settings, "kb") == ["cats.md", "dogs.txt"]
    assert not staging.exists()
    assert [j.id for j in finished] == [job.id]

    d = json.loads(json.dumps(job.to_dict()))
    assert {"id", "collection", "state", "progress", "message", "files", "created_at", "started_at",
            "finished_at", "chunks", "error", "results"} <= set(d)
    assert d["state"] == "done" and d["files"][2] == "corrupt.pdf"
    assert {"name", "status", "chunks", "documents", "error", "details"} == set(d["results"][0])
    states = {x["name"]: x for x in d["file_states"]}  # one per file, each in its final state
    assert {n: x["state"] for n, x in states.items()} == {
        "cats.md": "committed", "twin.md": "duplicate", "corrupt.pdf": "failed", "setup.exe": "failed",
        "dogs.txt": "committed"}
    assert states["cats.md"]["chunks"] == states["cats.md"]["embedded"] == by_name["cats.md"].chunks
    assert "not accepted" in states["setup.exe"]["detail"]
    assert set(d["file_states"][0]) == {"name", "state", "chunks", "embedded", "detail"}

    again, staging2 = _stage(jobs, cats__md=CATS)
    second = jobs.wait(jobs.submit("kb", again, owned_dir=staging2).id, timeout=T)
    assert second.state == "done" and second.results[0].status == "duplicate" and second.chunks == 0
    assert jobs.get(job.id) is not None and jobs.get(job.id).state == "done"
    assert [j.id for j in jobs.list()] == [second.id, job.id]  # newest first
    assert jobs.list(collection="other") == [] and jobs.list(active=True) == []
    assert len(jobs.list(collection="kb", active=False)) == 2
    assert jobs.counts() == {"queued": 0, "running": 0, "done": 2, "failed": 0, "cancelled": 0}
    assert set(jobs.counts()) == set(JOB_STATES)


def test_unknown_ids_say_so(managers):
    jobs = managers(lambda *a: [])
    for call in (jobs.get, jobs.cancel, jobs.wait):
        with pytest.raises(JobNotFound) as e:
            call("nope")
        assert isinstance(e.value, KeyError) and isinstance(e.value, HybridRagError)
        assert str(e.value).startswith("No ingest job with id 'nope'") and "jobs.keep" in str(e.value)


def test_cancel_while_queued_never_runs(settings, managers):
    gate = Gate()
    jobs = managers(gate)
    first = jobs.submit("a", [])
    assert gate.entered.wait(T)
    files, staging = _stage(jobs, x__md=CATS)
    second = jobs.submit("b", files, owned_dir=staging)
    assert jobs.get(second.id).state == "queued" and jobs.counts()["running"] == 1
    cancelled = jobs.cancel(second.id)
    assert cancelled.state == "cancelled" and cancelled.finished and "nothing was changed" in cancelled.error
    assert [(f.name, f.state) for f in cancelled.file_states] == [("x.md", "cancelled")]
    assert not staging.exists()
    gate.release.set()
    assert jobs.wait(first.id, timeout=T).state == "done"
    assert gate.calls == ["a"]  # the cancelled job never ran
    assert jobs.cancel(first.id).state == "done"  # finished: unchanged


def test_cancel_while_running_keeps_the_collection_as_it_was(settings, emb, managers, monkeypatch):
    """The cancel lands between two embedding flushes: the job ends cancelled, the collection keeps its
    earlier documents, stays searchable, and the next ingest into it works (the writer lock was released)."""
    monkeypatch.setattr(pipeline, "EMBED_BATCH", 1)
    ingest("kb", [("cats.md", CATS), ("dogs.txt", DOGS)], settings=settings, embedder=emb)
    before = open_collection("kb", settings).version

    embedding, release = threading.Event(), threading.Event()

    class SlowEmbedder(FakeEmbedder):
        def encode_documents(self, texts):
            embedding.set()
            assert release.wait(T), "the test never released the embedder"
            return super().encode_documents(texts)

    jobs = managers(_pipeline_fn(settings, SlowEmbedder()))
    files, staging = _stage(jobs, **{f"f{i}__md": f"# F{i}\n\nFile number {i} about birds.".encode()
                                     for i in range(5)})
    job = jobs.submit("kb", files, owned_dir=staging)
    assert embedding.wait(T)
    running = jobs.cancel(job.id)
    assert running.state == "running"  # flagged; it stops at its next check
    assert [j.id for j in jobs.list(active=True)] == [job.id]
    release.set()
    job = jobs.wait(job.id, timeout=T)
    assert job.state == "cancelled" and "keeps its last committed version" in job.error
    assert job.results == [] and job.chunks == 0 and not staging.exists()

    col = open_collection("kb", settings)
    assert col.version == before and _docs(settings, "kb") == ["cats.md", "dogs.txt"]
    hits = Retriever(col, emb, settings.retrieval).search("cats sleep", k=2).hits
    assert hits and hits[0].chunk.doc_id == "cats.md"
    more, staging2 = _stage(jobs, birds__md=b"# Birds\n\nHerons wade.")
    assert jobs.wait(jobs.submit("kb", more, owned_dir=staging2).id, timeout=T).state == "done"
    assert _docs(settings, "kb") == ["birds.md", "cats.md", "dogs.txt"]


def test_a_failing_job_does_not_stop_the_next(managers):
    calls = []

    def flaky(collection, files, progress, cancelled):
        calls.append(collection)
        if collection == "boom":
            raise RuntimeError("secret internal detail /srv/x.py")
        if collection == "known":
            raise HybridRagError("Collection 'known' was built with another embedder: ingest into a new one.")
        progress(0.5, "half way")
        return []

    jobs = managers(flaky)
    ids = [jobs.submit(c, []).id for c in ("boom", "known", "fine")]
    boom, known, fine = (jobs.wait(i, timeout=T) for i in ids)
    assert boom.state == "failed" and "internal error (ref " in boom.error and "secret" not in boom.error
    assert known.state == "failed" and known.error.startswith("Collection 'known' was built")
    assert fine.state == "done" and fine.message == "half way" and fine.progress == 1.0
    assert calls == ["boom", "known", "fine"]  # in submission order
    assert jobs.counts()["failed"] == 2


@pytest.fixture
def other_server():
    """Another live process (standing in for a second server on the same data directory)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_staging_dirs_are_private_and_removed(tmp_path, managers, other_server):
    root = tmp_path / "uploads"
    root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / f"job-{dead.pid}-0123abcd-old").mkdir()
    (root / f"job-{dead.pid}-0123abcd-old" / "0000").write_bytes(b"left by a crash")
    (root / "stray.bin").write_bytes(b"x")
    (root / f"job-{os.getpid()}-0badc0de-x").mkdir()  # this pid, but no manager of ours: a restarted container's
    live = root / f"job-{other_server}-0123abcd-x"  # another live process's
    live.mkdir()

    jobs = managers(lambda c, files, progress, cancelled: [], staging_root=root)
    assert sorted(p.name for p in root.iterdir()) == [live.name]
    d = jobs.staging_dir()
    assert d.parent == root and d.is_dir() and (d.stat().st_mode & 0o777) == 0o700
    spare = jobs.staging_dir()
    assert spare != d
    job = jobs.submit("kb", [("a.md", d / "0000")], owned_dir=d)
    assert jobs.wait(job.id, timeout=T).state == "done" and not d.exists()

    def fail(*a):
        raise RuntimeError("boom")

    failing = managers(fail, staging_root=root)  # a second manager in this process keeps the first one's dirs
    assert spare.exists() and live.exists()
    d2 = failing.staging_dir()
    assert failing.wait(failing.submit("kb", [], owned_dir=d2).id, timeout=T).state == "failed"
    assert not d2.exists()


def test_keep_bounds_finished_jobs_but_never_active_ones(managers):
    jobs = managers(lambda c, files, progress, cancelled: [], keep=2)
    ids = [jobs.submit(f"c{i}", []).id for i in range(5)]
    for i in ids:
        try:
            jobs.wait(i, timeout=T)
        except JobNotFound:
            pass  # already finished and forgotten
    assert [j.id for j in jobs.list()] == ids[:-3:-1]
    with pytest.raises(JobNotFound):
        jobs.get(ids[0])

    gate = Gate()
    held = managers(gate, keep=1)
    running = held.submit("r", [])
    assert gate.entered.wait(T)
    queued = [held.submit(f"q{i}", []) for i in range(3)]
    held.cancel(queued[0].id)
    held.cancel(queued[1].id)
    states = {j.id: j.state for j in held.list()}
    assert states == {running.id: "running", queued[1].id: "cancelled", queued[2].id: "queued"}
    gate.release.set()
    assert held.wait(queued[2].id, timeout=T).state == "done"


def test_wait_times_out_and_on_finish_errors_are_contained(managers, caplog):
    gate = Gate()

    def bad_hook(job):
        raise RuntimeError("hook broke")

    jobs = managers(gate, on_finish=bad_hook)
    job = jobs.submit("kb", [])
    assert gate.entered.wait(T)
    assert not jobs.wait(job.id, timeout=0.05).finished
    gate.release.set()
    assert jobs.wait(job.id, timeout=T).state == "done"
    second = jobs.submit("kb", [])
    assert jobs.wait(second.id, timeout=T).state == "done"  # the worker survived the hook
    assert "on_finish hook failed" in caplog.text


def test_close_cancels_waiting_jobs_and_refuses_new_ones(managers):
    gate = Gate()
    jobs = managers(gate)
    first = jobs.submit("a", [])
    assert gate.entered.wait(T)
    waiting = jobs.submit("b", [])
    closer = threading.Thread(target=jobs.close, kwargs={"timeout": T})
    closer.start()
    assert jobs.wait(waiting.id, timeout=T).state == "cancelled"
    gate.release.set()
    closer.join(T)
    assert jobs.get(first.id).state == "done" and gate.calls == ["a"]
    with pytest.raises(HybridRagError, match="upload again"):
        jobs.submit("c", [])


def test_two_cancels_of_one_queued_job_race_safely(managers, monkeypatch):
    """The UI's Cancel button and DELETE /v1/jobs/{id} at once: neither fails, the job ends cancelled once."""
    import time

    import ingest.jobs as jobs_mod

    slow_remove = jobs_mod._remove
    monkeypatch.setattr(jobs_mod, "_remove", lambda p: (time.sleep(0.3), slow_remove(p)))
    gate = Gate()
    jobs = managers(gate)
    first = jobs.submit("a", [])
    assert gate.entered.wait(T)
    second = jobs.submit("b", [])
    errors, done = [], []

    def cancel():
        try:
            done.append(jobs.cancel(second.id))
        except Exception as e:  # noqa: BLE001 - the failure under test
            errors.append(e)

    threads = [threading.Thread(target=cancel) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert not errors
    assert jobs.wait(second.id, timeout=T).state == "cancelled"
    gate.release.set()
    assert jobs.wait(first.id, timeout=T).state == "done" and gate.calls == ["a"]


def test_cancel_during_a_big_file_keeps_the_files_committed_before_it(settings, managers, monkeypatch):
    """The small files of the upload are committed before the big one starts; the job shows each file's state
    while it runs; a cancel then keeps them (the job's results), and not the big one."""
    monkeypatch.setattr(pipeline, "BIG_FILE_BYTES", 4096)
    monkeypatch.setattr(pipeline, "EMBED_SLICE", 4)
    embedding, release = threading.Event(), threading.Event()

    class SlowOnBig(FakeEmbedder):
        calls = 0

        def encode_documents(self, texts):
            if any("Zebrafinch" in t for t in texts):
                self.calls += 1
                if self.calls == 2:
                    embedding.set()
                    assert release.wait(T), "the test never released the embedder"
            return super().encode_documents(texts)

    jobs = managers(_pipeline_fn(settings, SlowOnBig()))
    big = ("# Big\n\n" + "Zebrafinch songs are learned from a tutor. " * 600).encode()
    files, staging = _stage(jobs, big__txt=big, cats__md=CATS, dogs__txt=DOGS)
    job = jobs.submit("kb", files, owned_dir=staging)
    try:
        assert embedding.wait(T)
        running = jobs.get(job.id)
        assert running.state == "running"
        now = {f["name"]: f for f in running.to_dict()["file_states"]}
        assert {n: f["state"] for n, f in now.items()} == {"big.txt": "embedding", "cats.md": "committed",
                                                          "dogs.txt": "committed"}
        assert 0 < now["big.txt"]["embedded"] < now["big.txt"]["chunks"]
        assert _docs(settings, "kb") == ["cats.md", "dogs.txt"]  # searchable while the big file embeds
        assert "2 files searchable" in running.message
        jobs.cancel(job.id)
    finally:
        release.set()
    job = jobs.wait(job.id, timeout=T)
    assert job.state == "cancelled" and job.error.startswith("Cancelled: 2 files were already added")
    assert [r.name for r in job.results] == ["cats.md", "dogs.txt"] and job.chunks == sum(
        r.chunks for r in job.results) > 0
    assert [(f.name, f.state) for f in job.file_states] == [("big.txt", "cancelled"), ("cats.md", "committed"),
                                                            ("dogs.txt", "committed")]
    assert _docs(settings, "kb") == ["cats.md", "dogs.txt"] and not staging.exists()
    col = open_collection("kb", settings)
    assert col.dense.size == col.sparse.size == col.size
