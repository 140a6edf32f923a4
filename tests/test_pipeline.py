import io
import zipfile

from ingest.pipeline import display_name, ingest, remove_documents
from rag.store import open_collection

DOC_A = "# Alpha\n\nAlpha particles are helium nuclei emitted in radioactive decay.\n"
DOC_B = "Beta decay turns a neutron into a proton, an electron and an antineutrino.\n"


def _ingest(settings, embedder, files, name="docs"):
    return ingest(name, files, settings=settings, embedder=embedder)


def test_bad_files_fail_alone_and_the_rest_lands(settings, embedder):
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


def test_reingest_is_a_noop_and_a_changed_file_replaces_its_chunks(settings, embedder):
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


def test_zip_members_are_ingested_one_by_one(settings, embedder):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes/alpha.md", DOC_A)
        z.writestr("beta.txt", DOC_B)
        z.writestr("empty.txt", "")
    results = _ingest(settings, embedder, [("bundle.zip", buf.getvalue())])
    statuses = sorted(r.status for r in results)
    assert statuses == ["added", "added", "failed"], results
    assert all(r.name.startswith("bundle.zip/") for r in results)


def test_limits_give_clear_errors(settings, embedder):
    settings.limits.max_file_bytes = 100
    results = _ingest(settings, embedder, [("big.txt", b"word " * 100), ("script.exe", b"MZ...."),
                                           ("ok.txt", b"small text")])
    by = {r.name: r for r in results}
    assert "limit" in by["big.txt"].error and "max_file_bytes" in by["big.txt"].error
    assert "not accepted" in by["script.exe"].error
    assert by["ok.txt"].status == "added"


def test_remove_documents(settings, embedder):
    _ingest(settings, embedder, [("alpha.md", DOC_A.encode()), ("beta.txt", DOC_B.encode())])
    assert remove_documents("docs", ["beta.txt", "nope"], settings=settings) == 1
    col = open_collection("docs", settings)
    assert [d["doc_id"] for d in col.documents()] == ["alpha.md"]
    assert col.size == col.dense.size == col.sparse.size


def test_display_names_are_made_safe():
    assert display_name("../../etc/passwd") == "etc/passwd"
    assert display_name("/abs/path.txt") == "abs/path.txt"
    assert "\x00" not in display_name("a\x00b.txt")
    assert display_name("sub\\win.txt") == "sub/win.txt"
