"""ingest.loaders: format sniffing, text extraction, hostile inputs and archive expansion."""
from __future__ import annotations

import gzip
import json
import time
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import filegen as g
from ingest.loaders import LoadError, is_archive, iter_archive, load, safe_name

ZIP_LIMITS = dict(max_files=50, max_total_bytes=10 << 20, max_ratio=100.0)


def load_one(data: bytes, name: str):
    docs = load(data, name)
    assert len(docs) == 1
    d = docs[0]
    assert d.doc_id == d.source == safe_name(name)
    assert d.metadata["bytes"] == len(data)
    for s in d.sections:
        assert 0 <= s.start <= s.end <= len(d.text)
    return d


def error_of(data: bytes, name: str) -> str:
    with pytest.raises(LoadError) as e:
        load(data, name)
    return str(e.value)


# --- PDF --------------------------------------------------------------------------------------

def test_pdf_pages_become_sections():
    data = g.make_pdf(["Alpha page one.\nSecond line (with parens).", "Beta page two."], title="My Report")
    d = load_one(data, "report.pdf")
    assert d.metadata["format"] == "pdf" and d.metadata["pages"] == 2
    assert d.title == "My Report"
    assert [s.page for s in d.sections] == [1, 2]
    p1, p2 = (d.text[s.start:s.end] for s in d.sections)
    assert "Alpha page one." in p1 and "(with parens)" in p1 and "Beta" not in p1
    assert p2 == "Beta page two."
    assert d.text == p1 + "\n\n" + p2


def test_pdf_sniffed_not_suffix():
    data = g.make_pdf(["Content decides."])
    assert load_one(data, "misnamed.txt").metadata["format"] == "pdf"
    text = b"Notes on the format: every file starts with %PDF-1.7 and ends with %%EOF."
    assert load_one(text, "notes.txt").metadata["format"] == "text"
    assert load_one(b"junk\n" + data, "prefixed.pdf").metadata["format"] == "pdf"


def test_pdf_with_user_password_is_refused_with_a_fix():
    msg = error_of(g.make_encrypted_pdf(["Secret"]), "locked.pdf")
    assert "locked.pdf" in msg and "password" in msg and "upload" in msg


def test_pdf_with_only_an_owner_password_opens():
    d = load_one(g.make_encrypted_pdf(["Readable text"], user_password=""), "owner.pdf")
    assert "Readable text" in d.text


def test_aes_pdf_with_empty_user_password_opens():
    pytest.importorskip("cryptography", reason="pypdf needs cryptography for AES")
    data = g.make_encrypted_pdf(["AES protected text"], user_password="", algorithm="AES-256")
    assert "AES protected text" in load_one(data, "aes.pdf").text
    msg = error_of(g.make_encrypted_pdf(["x"], user_password="pw", algorithm="AES-128"), "aes-locked.pdf")
    assert "password" in msg


def test_aes_pdf_without_cryptography_names_the_install(monkeypatch):
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    def decrypt(self, password):
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PdfReader, "decrypt", decrypt)
    msg = error_of(g.make_encrypted_pdf(["x"], user_password=""), "aes.pdf")
    assert "pip install cryptography" in msg


def test_pdf_without_text_layer_suggests_ocr():
    msg = error_of(g.make_blank_pdf(2), "scan.pdf")
    assert msg.startswith("scan.pdf:") and "no text layer" in msg and "OCR" in msg


def test_corrupt_pdf():
    msg = error_of(g.make_corrupt_pdf(), "broken.pdf")
    assert "damaged" in msg
    assert "damaged" in error_of(b"%PDF-1.7\n" + g.make_binary_garbage(2000), "noise.pdf")


def test_executable_renamed_pdf_is_not_a_pdf():
    msg = error_of(g.make_elf(), "invoice.pdf")
    assert "not a PDF" in msg and "ELF" in msg
    assert "ELF executable" in error_of(g.make_elf(), "program")


def test_html_renamed_pdf_is_not_a_pdf():
    assert "not a PDF" in error_of(b"<html><body>404 Not Found</body></html>", "paper.pdf")


# --- DOCX -------------------------------------------------------------------------------------

def test_docx_headings_paragraphs_and_tables():
    data = g.make_docx([("h1", "Introduction"), ("p", "First paragraph."), ("h2", "Details"),
                        ("p", "Second paragraph.")], title="Doc Title", table=[["a1", "b1"], ["a2", "b2"]])
    d = load_one(data, "notes.docx")
    assert d.metadata["format"] == "docx" and d.title == "Doc Title"
    assert [s.heading for s in d.sections] == ["Introduction", "Details"]
    intro = d.text[d.sections[0].start:d.sections[0].end]
    assert "First paragraph." in intro and "Second" not in intro
    assert "a1 | b1\na2 | b2" in d.text


def test_docx_title_falls_back_to_first_heading():
    d = load_one(g.make_docx([("p", "Preface."), ("h1", "Chapter One"), ("p", "Body.")]), "x.docx")
    assert d.title == "Chapter One"
    assert d.sections[0].heading is None and d.sections[1].heading == "Chapter One"


def test_damaged_docx():
    data = g.make_docx([("p", "text")])
    msg = error_of(data[: len(data) // 2], "cut.docx")
    assert "cut.docx" in msg and "damaged" in msg
    assert not is_archive(data[: len(data) // 2], "cut.docx")


def test_zip_that_is_not_docx_points_to_iter_archive():
    data = g.make_zip({"a.txt": b"hello"})
    assert is_archive(data, "a.zip") and is_archive(data, "renamed.docx")
    assert "iter_archive" in error_of(data, "a.zip")
    assert not is_archive(g.make_docx([("p", "x")]), "x.docx")
    assert not is_archive(b"plain text", "a.zip")


# --- HTML -------------------------------------------------------------------------------------

def test_html_visible_text_only():
    d = load_one(g.HOSTILE_HTML.encode(), "page.html")
    assert d.metadata["format"] == "html"
    for marker in g.HIDDEN_MARKERS:
        assert marker not in d.text, marker
    assert "First visible paragraph." in d.text and "link" in d.text
    assert "cell one" in d.text and "cell two" in d.text
    assert d.title == "Page title"
    heads = {s.heading: d.text[s.start:s.end] for s in d.sections}
    assert heads["Main heading"].startswith("Main heading") and "First visible" in heads["Main heading"]
    assert "Second paragraph" in heads["Second heading"]


def test_html_sniffed_without_suffix_and_deep_nesting():
    deep = "<html><body>" + "<div>" * 5000 + "deep text" + "</div>" * 5000 + "</body></html>"
    t = time.perf_counter()
    d = load_one(deep.encode(), "upload")
    assert time.perf_counter() - t < 5
    assert d.metadata["format"] == "html" and "deep text" in d.text


def test_html_without_visible_text():
    assert "no visible text" in error_of(b"<html><script>app()</script></html>", "spa.html")


# --- Markdown and text ------------------------------------------------------------------------

def test_markdown_headings_and_text_kept_as_is():
    d = load_one(g.MARKDOWN.encode(), "guide.md")
    assert d.metadata["format"] == "markdown"
    assert d.text == g.MARKDOWN
    assert d.title == "Guide title"
    assert [s.heading for s in d.sections] == ["Guide title", "Install", "Setext heading"]
    assert d.text[d.sections[2].start:].startswith("Setext heading\n---")


def test_latin1_text():
    d = load_one(g.make_latin1(), "legacy.txt")
    assert d.metadata["format"] == "text"
    assert d.text == g.LATIN1_TEXT.replace("—", "-")


def test_utf16_with_bom():
    d = load_one(g.make_utf16_bom(), "wide.txt")
    assert d.text == "Grüße aus Köln: UTF-16 text with a BOM.\nSecond line ✓."
    assert load_one(b"\xfe\xff" + "x\r\ny".encode("utf-16-be"), "be.txt").text == "x\ny"
    assert load_one(b"\xef\xbb\xbfBOM utf-8", "b.txt").text == "BOM utf-8"


def test_crlf_is_normalised():
    assert load_one(b"one\r\ntwo\rthree", "a.txt").text == "one\ntwo\nthree"


def test_binary_garbage_named_txt():
    assert "looks binary" in error_of(g.make_binary_garbage(), "notes.txt")
    assert "looks binary" in error_of(b"text\x00with\x00nuls" * 10, "nul.txt")


@pytest.mark.parametrize("data", [b"", b"   \n\t  \r\n", "  \n".encode("utf-16")])
def test_empty_files(data):
    msg = error_of(data, "empty.txt")
    assert msg.startswith("empty.txt:") and ("empty" in msg or "no text" in msg)


# --- BEIR -------------------------------------------------------------------------------------

def _check_beir(docs, data):
    assert [d.doc_id for d in docs] == ["d1", "d2", "3"]
    assert [d.title for d in docs] == ["Aspirin", "", "Numeric id"]
    assert docs[0].text == g.BEIR_RECORDS[0]["text"]
    assert all(d.metadata["format"] == "beir" and d.metadata["bytes"] == len(data) for d in docs)
    assert all(d.source == "corpus.jsonl" or d.source == "corpus.jsonl.gz" for d in docs)


def test_beir_jsonl():
    data = g.make_beir_jsonl()
    _check_beir(load(data, "corpus.jsonl"), data)


def test_beir_jsonl_gz():
    data = g.make_beir_jsonl_gz()
    docs = load(data, "corpus.jsonl.gz")
    _check_beir(docs, data)
    assert docs[0].metadata["compression"] == "gzip"


def test_beir_sniffed_from_content():
    assert len(load(g.make_beir_jsonl(), "corpus")) == 3


@pytest.mark.parametrize("bad, line", [
    (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', 2),
    (b'{"_id": "a", "text": "x"}\n\n[1, 2]\n', 3),
    (b'{"_id": "a", "text": "x"}\n{"text": "no id"}\n', 2),
    (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": 5}\n', 2),
    (b'{"_id": "a", "text": "x"}\n{"_id": "a", "text": "dup"}\n', 2),
])
def test_beir_malformed_line_is_named(bad, line):
    msg = error_of(bad, "corpus.jsonl")
    assert f"line {line}" in msg


def test_beir_gz_bomb_and_truncation():
    bomb = gzip.compress(b'{"_id": "a", "text": "' + b"a" * (20 << 20) + b'"}\n', compresslevel=1)
    assert "decompression bomb" in error_of(bomb, "corpus.jsonl.gz")
    assert "truncated" in error_of(g.make_beir_jsonl_gz()[:-12], "corpus.jsonl.gz")


# --- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", g.HOSTILE_NAMES)
def test_safe_name(name):
    s = safe_name(name)
    assert s and len(s) <= 150
    assert "/" not in s and "\\" not in s and s not in (".", "..") and not s.startswith(".")
    assert all(ord(c) >= 32 and c not in '<>:"|?*' for c in s)
    assert "\u202e" not in s and s.lower() not in ("con", "nul", "con.txt")


def test_safe_name_examples():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("/abs/path.txt") == "path.txt"
    assert safe_name("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert safe_name("a\x00b.txt") == "ab.txt"
    long = safe_name("x" * 1000 + ".txt")
    assert long.endswith(".txt") and len(long) == 150
    assert safe_name("") == safe_name("..") == "unnamed"
    assert safe_name("ok name (1).md") == "ok name (1).md"


def test_document_names_are_safe():
    d = load_one(b"hello", "../../secret/..\\x\x00.txt")
    assert d.doc_id == "x.txt"


# --- archives ---------------------------------------------------------------------------------

def test_zip_members_flattened_and_junk_skipped():
    data = g.make_zip({
        "docs/": b"",
        "docs/a.txt": b"alpha",
        "docs/sub/b.md": b"# B\n\nbeta",
        "c.html": b"<p>gamma</p>",
        "__MACOSX/docs/._a.txt": b"\x00\x05\x16\x07junk",
        "docs/._b.md": b"junk",
        ".DS_Store": b"junk",
    })
    got = dict(iter_archive(data, "upload.zip", **ZIP_LIMITS))
    assert got == {"docs__a.txt": b"alpha", "docs__sub__b.md": b"# B\n\nbeta", "c.html": b"<p>gamma</p>"}
    assert load(got["docs__sub__b.md"], "docs__sub__b.md")[0].title == "B"


def test_zip_hostile_member_names():
    data = g.make_zip({"../../etc/passwd": b"root", "/abs/path.txt": b"abs", "C:\\win\\evil.txt": b"win",
                       "x" * 300 + ".txt": b"long", "a/b.txt": b"1", "a__b.txt": b"2"})
    got = dict(iter_archive(data, "evil.zip", **ZIP_LIMITS))
    assert len(got) == 6
    for name in got:
        assert name == safe_name(name) and ".." not in name.split("__")
    assert got["etc__passwd"] == b"root" and got["abs__path.txt"] == b"abs"
    assert {got["a__b.txt"], got["a__b (2).txt"]} == {b"1", b"2"}


def test_zip_bomb_member_refused_others_kept():
    got = list(iter_archive(g.make_zip_bomb(20 << 20), "bomb.zip", **ZIP_LIMITS))
    by_name = dict(got)
    assert by_name["readme.txt"] == b"harmless\n"
    assert isinstance(by_name["bomb.txt"], LoadError) and "zip bomb" in str(by_name["bomb.txt"])


def test_zip_total_size_limit():
    members = {f"f{i}.txt": g.make_binary_garbage(100_000, seed=i) for i in range(5)}  # incompressible
    got = dict(iter_archive(g.make_zip(members), "big.zip", max_files=50, max_total_bytes=250_000))
    ok = [n for n, v in got.items() if isinstance(v, bytes)]
    bad = [v for v in got.values() if isinstance(v, LoadError)]
    assert len(ok) == 2 and len(bad) == 3 and "size limit" in str(bad[0])


def test_zip_headers_are_not_trusted():
    got = dict(iter_archive(g.make_lying_zip(), "liar.zip", **ZIP_LIMITS))
    err = got["liar.txt"]
    assert isinstance(err, LoadError)
    assert "damaged" in str(err) or "declares" in str(err)


def test_zip_file_count_limit():
    data = g.make_zip({f"f{i}.txt": b"x" for i in range(10)})
    got = list(iter_archive(data, "many.zip", max_files=3, max_total_bytes=1 << 20))
    assert [n for n, v in got if isinstance(v, bytes)] == ["f0.txt", "f1.txt", "f2.txt"]
    assert isinstance(got[-1][1], LoadError) and "7 were not read" in str(got[-1][1])


def test_nested_zip_depth():
    one = g.make_nested_zip(1)  # outer → level0.zip → leaf.txt
    assert dict(iter_archive(one, "n.zip", **ZIP_LIMITS)) == {"level0__leaf.txt": b"deep text\n"}
    (name, err), = iter_archive(one, "n.zip", **ZIP_LIMITS, max_depth=0)
    assert name == "level0.zip" and isinstance(err, LoadError) and "nested" in str(err)
    deep = list(iter_archive(g.make_nested_zip(3), "n.zip", **ZIP_LIMITS))
    assert len(deep) == 1 and isinstance(deep[0][1], LoadError)


def test_docx_inside_zip_is_a_member_not_an_archive():
    docx = g.make_docx([("p", "inside")])
    got = dict(iter_archive(g.make_zip({"w.docx": docx}), "z.zip", **ZIP_LIMITS))
    assert got["w.docx"] == docx and "inside" in load(docx, "w.docx")[0].text


def test_broken_archive_raises_at_call():
    data = g.make_zip({"a.txt": b"a" * 1000})
    with pytest.raises(LoadError, match="damaged"):
        iter_archive(data[:30], "cut.zip", **ZIP_LIMITS)
    with pytest.raises(ValueError):
        iter_archive(data, "a.zip", max_files=0, max_total_bytes=1)


def test_empty_archive_says_so():
    got = list(iter_archive(g.make_zip({"folder/": b"", "__MACOSX/._x": b"junk"}), "e.zip", **ZIP_LIMITS))
    assert len(got) == 1 and isinstance(got[0][1], LoadError) and "no files" in str(got[0][1])


def test_archive_declaring_too_many_entries_is_refused_before_parsing():
    data = bytearray(g.make_zip({"a.txt": b"a"}))
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 8:eocd + 12] = (60000).to_bytes(2, "little") * 2  # entries on this disk / in total
    with pytest.raises(LoadError, match="entries"):
        iter_archive(bytes(data), "many.zip", **ZIP_LIMITS)


def test_encrypted_zip_member():
    data = bytearray(g.make_zip({"a.txt": b"secret"}, compression=zipfile.ZIP_STORED))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        i = data.find(sig)
        data[i + off] |= 1
    (name, err), = iter_archive(bytes(data), "enc.zip", **ZIP_LIMITS)
    assert isinstance(err, LoadError) and "password" in str(err)


# --- robustness -------------------------------------------------------------------------------

def test_huge_single_line_text_loads_linearly():
    data = b"lorem ipsum dolor sit amet " * (50_000_000 // 27)
    t = time.perf_counter()
    d = load_one(data, "huge.txt")
    assert len(d.text) == len(data) and time.perf_counter() - t < 20


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(["a.txt", "a.md", "a.html", "a.pdf", "a.jsonl", "a.jsonl.gz",
                                                  "a.docx", "a", "a.zip"]))
def test_arbitrary_bytes_only_raise_load_error(data, name):
    try:
        docs = load(data, name)
    except LoadError as e:
        assert str(e).startswith(safe_name(name) + ":")
        return
    for d in docs:
        assert isinstance(d.text, str) and d.text.strip()
        d.text.encode("utf-8")  # always encodable


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "latin-1"]),
       st.sampled_from(["a.txt", "a.md", "a.html", "a.jsonl", "noext"]))
def test_arbitrary_text_only_raises_load_error(text, encoding, name):
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        return
    try:
        docs = load(data, name)
    except LoadError:
        return
    for d in docs:
        for s in d.sections:
            assert 0 <= s.start <= s.end <= len(d.text)


def test_json_escaped_surrogates_are_replaced():
    data = json.dumps({"_id": "s", "text": "bad \ud800 char"}).encode()
    d, = load(data, "corpus.jsonl")
    assert d.text == "bad \ufffd char"
