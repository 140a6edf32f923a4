"""Crash safety: an ingest killed with SIGKILL at random points leaves the last committed version loadable
and consistent; readers querying during ingests never see a half-built index."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reliability_kit import FakeEmbedder, collection_counts

from ingest.pipeline import ingest, remove_documents
from rag.retrieve import Retriever
from rag.store import open_collection

WORKER = Path(__file__).with_name("crash_worker.py")
KILLS = int(os.environ.get("HYBRID_RAG_CRASH_KILLS", "15"))


def _committed(log: Path) -> dict[str, int]:
    out = {}
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "committed":
                out[parts[1]] = int(parts[2])
    return out


def _counts(data: Path, backend: str) -> dict:
    """The collection's counts, read independently, with ``consistent``; lets go of Milvus Lite after (the next
    worker needs the file: Milvus Lite serves one process)."""
    if backend == "files":
        return collection_counts(data, "c")
    from rag.config import load_settings
    from rag.store import milvus

    settings = load_settings(data_dir=data)
    try:
        col = open_collection("c", settings)
        docs = col.documents()
        counted = col.counts()
        return {"version": col.version, "manifest_chunks": col.size, "documents": len(docs),
                "consistent": counted == {"chunks": col.size, "documents": col.manifest["counts"]["documents"]}
                and counted["chunks"] == sum(d["chunks"] for d in docs) and counted["documents"] == len(docs)}
    finally:
        milvus.release(settings)


@pytest.mark.slow
def test_sigkill_during_ingest_never_loses_the_last_good_version(tmp_path, backend, monkeypatch):
    data, log = tmp_path / "data", tmp_path / "commits.log"
    monkeypatch.setenv("HYBRID_RAG__STORE__BACKEND", backend)  # for the workers and the checks here
    rng = random.Random(1234)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    mid_write = 0
    history = []
    kills = KILLS if backend == "files" else max(3, KILLS // 2)  # a Milvus Lite start per worker and per check
    for kill in range(kills):
        proc = subprocess.Popen([sys.executable, str(WORKER), str(data), str(log)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
            before = _committed(log)
            if kill and not before:
                # only the first kill may come before any commit: a loaded machine (a Milvus Lite start per
                # worker) can take longer than the random wait to commit, and then no kill tests a committed
                # collection; wait (bounded) for this worker's first commit before the random wait
                deadline = time.monotonic() + 120
                while not _committed(log) and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 1.5))
            assert proc.poll() is None, f"the worker died on its own:\n{proc.stderr.read()}"
            coldir = data / "collections" / "c"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        leftovers = [p.name for p in coldir.glob(".tmp-*")] if coldir.exists() else []
        mid_write += bool(leftovers)
        committed = _committed(log)
        if not committed:
            # killed before the first commit finished: there may be no collection yet, but never a broken one
            if backend == "files":
                assert not (coldir / "CURRENT").exists() or collection_counts(data, "c")["consistent"]
            continue
        counts = _counts(data, backend)
        assert counts["consistent"], (kill, counts)
        last = max(committed)
        v = counts["version"]
        # the loaded version is the last one logged, or the one after it when the kill fell between the
        # CURRENT swap and the log line; never an older one, never a half-built one
        assert v == last or int(v[1:]) == int(last[1:]) + 1, (v, last)
        if v in committed:
            assert counts["documents"] == committed[v], (v, counts, committed[v])
        history.append((v, counts["manifest_chunks"], leftovers))
        assert len(committed) >= len(before)
    # after all that, a normal ingest still works and cleans up what the kills left behind
    from rag.config import load_settings

    settings = load_settings(data_dir=data)
    settings.chunking.chunk_tokens, settings.chunking.overlap_tokens = 48, 8
    try:
        res = ingest("c", [("after.md", b"# After\n\nwritten after the last kill")], settings=settings,
                     embedder=FakeEmbedder())
    finally:
        if backend == "milvus":
            from rag.store import milvus

            milvus.release(settings)
    assert res[0].status == "added"
    assert _counts(data, backend)["consistent"]
    assert not list((data / "collections" / "c").glob(".tmp-*"))
    assert len(history) >= kills // 2, "most kills should land after a first commit"
    print(f"\nSIGKILL ({backend}): {kills} kills, {mid_write} during a version build (.tmp dir left), "
          f"{len(_committed(log))} versions committed, final {history[-1][0] if history else '-'}; 0 inconsistent")


# --- readers during ingest ----------------------------------------------------------------------------

def _text(i: int) -> str:
    return f"# Note {i}\n\n" + f"Note {i} is about topic {i % 5} and keyword{i}. " * (4 + i % 9)


@pytest.mark.slow
def test_readers_never_see_a_half_built_index(store_settings):
    settings = store_settings
    settings.chunking.chunk_tokens, settings.chunking.overlap_tokens = 32, 4
    emb = FakeEmbedder()
    ingest("live", [(f"n{i}.md", _text(i).encode()) for i in range(3)], settings=settings, embedder=emb)
    states: dict[str, set[str]] = {}  # version -> its documents, recorded by the writer after each commit
    states_lock = threading.Lock()
    seen: list[tuple[str, frozenset]] = []
    errors: list[str] = []
    stop = threading.Event()

    def record():
        col = open_collection("live", settings)
        with states_lock:
            states[col.version] = {d["doc_id"] for d in col.documents()}

    record()

    def writer():
        try:
            for r in range(12):
                base = 3 + 4 * r
                ingest("live", [(f"n{i}.md", _text(i).encode()) for i in range(base, base + 4)],
                       settings=settings, embedder=emb)
                record()
                if r % 3 == 2:
                    remove_documents("live", [f"n{base}.md"], settings=settings)
                    record()
        except Exception as e:  # noqa: BLE001
            errors.append(f"writer: {type(e).__name__}: {e}")
        finally:
            stop.set()

    def reader(k: int):
        rnd = random.Random(k)
        while not stop.is_set():
            try:
                col = open_collection("live", settings)
                assert col.counts()["chunks"] == col.size, col.version
                docs = {d["doc_id"] for d in col.documents()}
                res = Retriever(col, emb, settings.retrieval).search(f"keyword{rnd.randrange(50)} topic", k=5,
                                                                     mode=rnd.choice(["hybrid", "dense", "sparse"]))
                for h in res.hits:
                    assert h.chunk.doc_id in docs, (col.version, h.chunk.doc_id)
                    i = int(h.chunk.doc_id[1:-3])
                    assert h.chunk.text in _text(i), "a hit's text is not its document's"
                seen.append((col.version, frozenset(docs)))
            except Exception as e:  # noqa: BLE001
                errors.append(f"reader {k}: {type(e).__name__}: {e}")
                return

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors[:5]
    versions = {v for v, _ in seen}
    assert len(versions) >= 3, f"readers should have seen several versions, saw {sorted(versions)}"
    for v, docs in seen:
        assert docs == states[v], f"a reader saw {v} with documents that version never had"
    print(f"\nreaders: {len(seen)} queries over {len(versions)} versions during {len(states) - 1} commits, 0 errors")


def test_a_reader_keeps_the_version_it_opened(store_settings):
    """A query that started before several commits finishes on the version it opened."""
    settings, emb = store_settings, FakeEmbedder()
    ingest("held", [("a.md", _text(1).encode())], settings=settings, embedder=emb)
    old = open_collection("held", settings)
    for i in range(2, 6):  # more commits than the versions kept on disk
        ingest("held", [(f"n{i}.md", _text(i).encode())], settings=settings, embedder=emb)
    assert open_collection("held", settings).version != old.version
    out: list = []

    def query():  # a fresh thread: no connection opened before the old version's files were collected
        try:
            res = Retriever(old, emb, settings.retrieval).search("keyword1", k=3)
            out.append([h.chunk.doc_id for h in res.hits])
        except Exception as e:  # noqa: BLE001
            out.append(e)

    t = threading.Thread(target=query)
    t.start()
    t.join()
    assert out and not isinstance(out[0], Exception), out
    assert out[0] == ["a.md"]
