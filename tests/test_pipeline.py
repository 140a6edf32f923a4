import io
import json
import threading
import zipfile

import pytest
from reliability_kit import FakeEmbedder

from ingest import pipeline
from ingest.pipeline import (
    FILE_STATES,
    IngestCancelled,
    display_name,
    ingest,
    remove_documents,
)
from rag.retrieve import Retriever
from rag.store import open_collection

DOC_A = "# Alpha\n\nAlpha particles are helium nuclei emitted in radioactive decay.\n"
DOC_B = "Beta decay turns a neutron into a proton, an electron and an antineutrino.\n"


def _ingest(settings, embedder, files, name="docs"):
    return ingest(name, files, settings=settings, embedder=embedder)


def test_bad_files_fail_alone_and_the_rest_lands(store_settings, embedder):
    settings = store_settings
    corrupt_pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not really a pdf" + b"\x00" * 50
    results = _ingest(settings, embedder, [
        ("alpha.md", DOC_A.encode()),
        ("broken.pdf", corrupt_pdf),
        ("empty.txt", b""),
        ("beta.txt", DOC_B.encode()),
    ])
    by_name = {r.name: r for r in results}
    assert by_name["alpha.md"].status == "added" and by_name["alpha.md"].chunks >= 1
    assert by_name["beta.txt"].status == "added"
    for bad in ("broken.pdf", "empty.txt"):
        r = by_name[bad]
        assert r.status == "failed" and bad in r.error and len(r.error) > 20, r.error
    col = open_collection("docs", settings)
    assert {d["doc_id"] for d in col.documents()} == {"alpha.md", "beta.txt"}


def test_reingest_is_a_noop_and_a_changed_file_replaces_its_chunks(store_settings, embedder):
    settings = store_settings
    _ingest(settings, embedder, [("alpha.md", DOC_A.encode()), ("beta.txt", DOC_B.encode())])
    v1 = open_collection("docs", settings).version
    again = _ingest(settings, embedder, [("alpha.md", DOC_A.encode())])
    assert again[0].status == "duplicate" and again[0].chunks == 0
    assert open_collection("docs", settings).version == v1  # nothing written
    changed = _ingest(settings, embedder, [("alpha.md", (DOC_A + "\nGamma rays are photons.\n").encode())])
    assert changed[0].status == "replaced"
    col = open_collection("docs", settings)
    assert col.version != v1
    texts = " ".join(c.text for c in col.document_chunks("alpha.md"))
    assert "Gamma rays" in texts
    assert col.size == sum(d["chunks"] for d in col.documents())
    # the same content under another name is a duplicate too
    twin = _ingest(settings, embedder, [("copy-of-beta.txt", DOC_B.encode())])
    assert twin[0].status == "duplicate" and "beta.txt" in twin[0].details[0]


def test_zip_members_are_ingested_one_by_one(store_settings, embedder):
    settings = store_settings
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes/alpha.md", DOC_A)
        z.writestr("beta.txt", DOC_B)
        z.writestr("empty.txt", "")
    results = _ingest(settings, embedder, [("bundle.zip", buf.getvalue())])
    statuses = sorted(r.status for r in results)
    assert statuses == ["added", "added", "failed"], results
    assert all(r.name.startswith("bundle.zip/") for r in results)


def test_limits_give_clear_errors(store_settings, embedder):
    settings = store_settings
    settings.limits.max_file_bytes = 100
    results = _ingest(settings, embedder, [("big.txt", b"word " * 100), ("script.exe", b"MZ...."),
                                           ("ok.txt", b"small text")])
    by = {r.name: r for r in results}
    assert "limit" in by["big.txt"].error and "max_file_bytes" in by["big.txt"].error
    assert "not accepted" in by["script.exe"].error
    assert by["ok.txt"].status == "added"


def test_remove_documents(store_settings, embedder):
    settings = store_settings
    _ingest(settings, embedder, [("alpha.md", DOC_A.encode()), ("beta.txt", DOC_B.encode())])
    assert remove_documents("docs", ["beta.txt", "nope"], settings=settings) == 1
    col = open_collection("docs", settings)
    assert [d["doc_id"] for d in col.documents()] == ["alpha.md"]
    _consistent(col)


def test_display_names_are_made_safe():
    assert display_name("../../etc/passwd") == "etc/passwd"
    assert display_name("/abs/path.txt") == "abs/path.txt"
    assert "\x00" not in display_name("a\x00b.txt")
    assert display_name("sub\\win.txt") == "sub/win.txt"


# --- big files do not hold a batch hostage ------------------------------------------------------------------
# FakeEmbedder (tiny, deterministic) wrapped to block on an Event while it embeds the big file's chunks; every
# wait has a timeout, so a bug fails, never hangs; no test asserts on timing.

T = 60.0
BIG = ("# Big\n\n" + "".join(f"Zebrafinch line {i} sings a long song in the reeds. " for i in range(400))).encode()
SMALL = {"a.md": b"# Herons\n\nHerons wade in shallow water.", "b.txt": b"Egrets are white herons.",
         "c.md": b"# Storks\n\nStorks nest on chimneys."}
ORDER = ["queued", "loading", "embedding", "embedded", "committed"]


class BlockingEmbedder(FakeEmbedder):
    """Blocks its ``block_at``-th call that embeds the big file's text until ``release`` is set."""

    def __init__(self, marker="Zebrafinch", block_at=2):
        super().__init__()
        self.marker, self.block_at = marker, block_at
        self.entered, self.release = threading.Event(), threading.Event()
        self.big_calls = 0

    def encode_documents(self, texts):
        if any(self.marker in t for t in texts):
            self.big_calls += 1
            if self.big_calls == self.block_at:
                self.entered.set()
                assert self.release.wait(T), "the test never released the embedder"
        return super().encode_documents(texts)


@pytest.fixture
def small_big(monkeypatch):
    monkeypatch.setattr(pipeline, "BIG_FILE_BYTES", 4096)  # BIG is ~22 KB, the others a few dozen bytes
    monkeypatch.setattr(pipeline, "EMBED_SLICE", 4)  # the big file takes several embedder calls


def _start(settings, emb, files, **kw):
    out, snaps = {}, []

    def run():
        try:
            out["results"] = ingest("kb", files, settings=settings, embedder=emb, on_files=snaps.append, **kw)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out, snaps


def _consistent(col):
    docs = col.documents()
    assert col.counts() == {"chunks": col.size, "documents": len(docs)}
    assert col.size == sum(d["chunks"] for d in docs)


def _commits(col) -> int:
    """How many versions (files) or generations (milvus) the collection has committed."""
    return int(col.version[1:])


def _doc_ids(settings):
    return sorted(d["doc_id"] for d in open_collection("kb", settings).documents())


def test_small_files_are_searchable_while_a_big_one_embeds(store_settings, small_big):
    settings = store_settings
    emb = BlockingEmbedder()
    files = [("big.txt", BIG), *SMALL.items()]  # the big one first: it is still taken last
    t, out, snaps = _start(settings, emb, files)
    try:
        assert emb.entered.wait(T)
        col = open_collection("kb", settings)
        assert _doc_ids(settings) == ["a.md", "b.txt", "c.md"]  # committed, the big one still embedding
        _consistent(col)
        hits = Retriever(col, emb, settings.retrieval).search("storks chimneys", k=1).hits
        assert hits[0].chunk.doc_id == "c.md"
        now = {s.name: s for s in snaps[-1]}
        assert {n: s.state for n, s in now.items()} == {"big.txt": "embedding", "a.md": "committed",
                                                          "b.txt": "committed", "c.md": "committed"}
        assert 0 < now["big.txt"].embedded < now["big.txt"].chunks
    finally:
        emb.release.set()
        t.join(T)
    assert "error" not in out, out.get("error")
    assert [r.name for r in out["results"]] == ["big.txt", "a.md", "b.txt", "c.md"]  # input order
    assert all(r.status == "added" for r in out["results"])
    assert _doc_ids(settings) == ["a.md", "b.txt", "big.txt", "c.md"]
    _consistent(open_collection("kb", settings))
    assert _commits(open_collection("kb", settings)) == 2  # the small files, then the big one
    # each file's states move forward only, in order, and end committed
    for name in ["big.txt", *SMALL]:
        seq = [s.state for snap in snaps for s in snap if s.name == name]
        seq = [x for i, x in enumerate(seq) if i == 0 or x != seq[i - 1]]
        assert seq == [x for x in ORDER if x in seq] and seq[0] == "queued" and seq[-1] == "committed", (name, seq)
        assert "embedding" in seq
    assert [s.name for s in snaps[0]] == ["big.txt", "a.md", "b.txt", "c.md"] and set(ORDER) <= set(FILE_STATES)


def test_a_cancel_keeps_the_files_already_committed_and_not_the_big_one(store_settings, small_big):
    settings = store_settings
    ingest("kb", [("old.md", b"# Old\n\nAn older note about owls.")], settings=settings, embedder=FakeEmbedder())
    emb = BlockingEmbedder()
    stop = threading.Event()
    t, out, snaps = _start(settings, emb, [("big.txt", BIG), *SMALL.items()], cancelled=stop.is_set)
    try:
        assert emb.entered.wait(T)
        stop.set()
    finally:
        emb.release.set()
        t.join(T)
    e = out["error"]
    assert isinstance(e, IngestCancelled)
    assert str(e).startswith("Cancelled: 3 files were already added") and "the rest were not added" in str(e)
    assert [r.name for r in e.results] == ["a.md", "b.txt", "c.md"]
    assert _doc_ids(settings) == ["a.md", "b.txt", "c.md", "old.md"]
    _consistent(open_collection("kb", settings))
    assert {s.name: s.state for s in snaps[-1]} == {"big.txt": "cancelled", "a.md": "committed",
                                                     "b.txt": "committed", "c.md": "committed"}
    # the writer lock was released: the big file lands next time, the small ones are duplicates now
    again = ingest("kb", [("big.txt", BIG), *SMALL.items()], settings=settings, embedder=FakeEmbedder())
    assert [r.status for r in again] == ["added", "duplicate", "duplicate", "duplicate"]
    assert "big.txt" in _doc_ids(settings)


def test_a_batch_of_small_files_is_one_version(store_settings):
    settings = store_settings
    emb = FakeEmbedder()
    ingest("kb", [("old.md", b"# Old\n\nOwls.")], settings=settings, embedder=emb)
    res = ingest("kb", [(f"n{i}.md", f"# N{i}\n\nNote {i} about wrens.".encode()) for i in range(30)]
                 + [("twin.md", b"# N3\n\nNote 3 about wrens.")], settings=settings, embedder=emb)
    assert [r.status for r in res] == ["added"] * 30 + ["duplicate"]
    assert _commits(open_collection("kb", settings)) == 2


def test_finished_files_are_committed_while_a_later_file_embeds(store_settings, monkeypatch):
    """Not big, but slow: once finished files have waited COMMIT_AFTER_S (here 0) they are committed."""
    settings = store_settings
    monkeypatch.setattr(pipeline, "COMMIT_AFTER_S", 0.0)
    monkeypatch.setattr(pipeline, "COMMIT_SHARE", 1e9)  # no spacing for the commits' own cost
    monkeypatch.setattr(pipeline, "EMBED_BATCH", 1)
    monkeypatch.setattr(pipeline, "EMBED_SLICE", 4)
    emb = BlockingEmbedder()
    t, out, snaps = _start(settings, emb, [("a.md", SMALL["a.md"]), ("slow.txt", BIG)])
    try:
        assert emb.entered.wait(T)
        assert _doc_ids(settings) == ["a.md"]
    finally:
        emb.release.set()
        t.join(T)
    assert [r.status for r in out["results"]] == ["added", "added"] and _doc_ids(settings) == ["a.md", "slow.txt"]


def test_a_file_that_fails_part_way_adds_none_of_its_documents(store_settings, monkeypatch):
    settings = store_settings
    monkeypatch.setattr(pipeline, "EMBED_BATCH", 1)  # its first document is embedded before the second fails
    lines = [{"_id": "d1", "title": "Wrens", "text": "Wrens are small birds."},
             {"_id": "d2", "title": "Finches", "text": "Zebrafinch songs are learned."}]
    corpus = "\n".join(json.dumps(x) for x in lines).encode()

    class FailOnSecond(FakeEmbedder):
        def encode_documents(self, texts):
            if any("Zebrafinch" in t for t in texts):
                raise RuntimeError("the embedder broke on this document")
            return super().encode_documents(texts)

    res = ingest("kb", [("corpus.jsonl", corpus), ("c.md", SMALL["c.md"])], settings=settings,
                 embedder=FailOnSecond())
    assert [r.status for r in res] == ["failed", "added"]
    assert _doc_ids(settings) == ["c.md"]  # not d1: a file is committed whole or not at all
    _consistent(open_collection("kb", settings))


def test_archives_are_ordered_by_their_unpacked_size(store_settings):
    settings = store_settings
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("long.txt", "Wrens sing. " * 20000)  # compresses to far less than it unpacks to
    packed = buf.getvalue()
    limits = settings.limits
    assert pipeline._work_estimate("x.zip", packed, limits) == 12 * 20000 > len(packed)
    assert pipeline._work_estimate("x.txt", b"abc", limits) == 3
    damaged = b"PK\x03\x04 damaged"
    assert pipeline._work_estimate("x.zip", damaged, limits) == len(damaged)  # by its packed size
    assert pipeline._work_estimate("gone.txt", "/nonexistent/gone.txt", limits) == 0
