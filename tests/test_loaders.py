"""ingest.formats, ingest.archive, ingest.names: format sniffing, text extraction, hostile inputs and
archive expansion."""
from __future__ import annotations

import gzip
import json
import re
import unicodedata
import zipfile

import filegen as g
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingest.archive import is_archive, iter_archive
from ingest.formats import LoadError, load
from ingest.formats.beir import load_beir
from ingest.formats.code import load_code
from ingest.formats.delimited import load_csv
from ingest.formats.docx import load_docx
from ingest.formats.epub import load_epub
from ingest.formats.html import load_html
from ingest.formats.markdown import load_markdown
from ingest.formats.odt import load_odt
from ingest.formats.pdf import load_pdf
from ingest.formats.pptx import load_pptx
from ingest.formats.rst import load_rst
from ingest.formats.text import load_text
from ingest.formats.xlsx import load_xlsx
from ingest.names import safe_name, unique_name

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


# every message names the file and says what to do, and never quotes an exception ("Error -3 while ...",
# "KeyError", "Bad CRC-32 for file ...")
FIX_HINT = re.compile(r"\b(upload|save|split|check|run|create|export|decompress|repack|unpack|open|download|"
                      r"put|install|fix|remove|use)\b", re.I)
RAW_EXCEPTION = re.compile(r"\b\w*(Error|Exception)\b|Error -\d|Bad CRC|Expecting \w")


def assert_clear(msg: str, name: str) -> None:
    assert msg.startswith(safe_name(name) + ":"), msg
    assert FIX_HINT.search(msg), f"no fix in {msg!r}"
    assert not RAW_EXCEPTION.search(msg), f"raw exception text in {msg!r}"


def error_of(data: bytes, name: str) -> str:
    with pytest.raises(LoadError) as e:
        load(data, name)
    msg = str(e.value)
    assert_clear(msg, name)
    return msg


# --- one tiny valid file per format module ----------------------------------------------------

# each format module's loader, called directly and through load(): (file, name, loader, text it must hold)
TINY = {
    "pdf": (lambda: g.make_pdf(["Tiny PDF text."]), "tiny.pdf", load_pdf, "Tiny PDF text."),
    "docx": (lambda: g.make_docx([("p", "Tiny DOCX text.")]), "tiny.docx", load_docx, "Tiny DOCX text."),
    "html": (lambda: b"<p>Tiny HTML text.</p>", "tiny.html",
             lambda data, shown: load_html(data, shown, len(data)), "Tiny HTML text."),
    "markdown": (lambda: b"# Tiny\n\nTiny Markdown text.\n", "tiny.md",
                 lambda data, shown: load_markdown(data.decode(), shown, len(data), "utf-8"), "Tiny Markdown text."),
    "text": (lambda: b"Tiny plain text.", "tiny.txt",
             lambda data, shown: load_text(data.decode(), shown, len(data), "utf-8"), "Tiny plain text."),
    "beir": (lambda: b'{"_id": "t1", "title": "Tiny", "text": "Tiny BEIR text."}\n', "tiny.jsonl",
             lambda data, shown: load_beir(data.decode(), shown, len(data))[0], "Tiny BEIR text."),
    "pptx": (lambda: g.make_pptx([{"title": "Tiny", "body": ["Tiny PPTX text."]}]), "tiny.pptx", load_pptx,
             "Tiny PPTX text."),
    "xlsx": (lambda: g.make_xlsx({"Tiny": [["Word"], ["Tiny XLSX text."]]}), "tiny.xlsx", load_xlsx, "Tiny XLSX text."),
    "csv": (lambda: b"Word\nTiny CSV text.\n", "tiny.csv",
            lambda data, shown: load_csv(data.decode(), shown, len(data), "utf-8", "csv"), "Tiny CSV text."),
    "odt": (lambda: g.make_odt("<text:p>Tiny ODT text.</text:p>"), "tiny.odt", load_odt, "Tiny ODT text."),
    "epub": (lambda: g.make_epub([("Tiny", "<p>Tiny EPUB text.</p>")]), "tiny.epub", load_epub, "Tiny EPUB text."),
    "rst": (lambda: b"Tiny\n====\n\nTiny RST text.\n", "tiny.rst",
            lambda data, shown: load_rst(data.decode(), shown, len(data), "utf-8"), "Tiny RST text."),
    "code": (lambda: b"# Tiny Python text.\nx = 1\n", "tiny.py",
             lambda data, shown: load_code(data.decode(), shown, len(data), "utf-8", "py"), "Tiny Python text."),
}


@pytest.mark.parametrize("fmt", list(TINY))
def test_each_format_module_loads_a_tiny_file(fmt):
    make, name, module_loader, phrase = TINY[fmt]
    data = make()
    direct = module_loader(data, name)
    (d,) = load(data, name)
    assert d.source == name and d.metadata["bytes"] == len(data)
    assert d.metadata["format"] == direct.metadata["format"] == fmt
    assert phrase in d.text and d.text == direct.text


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


def test_docx_with_unreadable_parts_says_damaged_without_the_exception():
    data = g.make_zip({"word/document.xml": b"<not xml"})  # python-docx: KeyError for [Content_Types].xml
    msg = error_of(data, "parts.docx")
    assert "damaged" in msg and "Word or LibreOffice" in msg


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
    d = load_one(deep.encode(), "upload")  # no RecursionError, no quadratic walk (bench/, not timed here)
    assert d.metadata["format"] == "html" and "deep text" in d.text


def test_html_without_visible_text():
    assert "no visible text" in error_of(b"<html><script>app()</script></html>", "spa.html")
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):  # an empty page saved with a byte-order mark
        assert "no visible text" in error_of(bom, "empty.html")


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


def test_beir_lines_json_cannot_parse_are_named():
    head = b'{"_id": "a", "text": "x"}\n'
    assert "too deeply" in error_of(head + b"[" * 100_000 + b"\n", "corpus.jsonl")
    assert "line 2 is not valid JSON" in error_of(head + b"1" * 5000 + b"\n", "corpus.jsonl")  # too long for int()
    assert "(the error is at column 13)" in error_of(head + b'{"_id": "b" "text": "y"}\n', "corpus.jsonl")
    assert load_one(b'{"a": ' + b"[" * 100_000, "nested").metadata["format"] == "text"  # not sniffed as BEIR


def test_beir_without_records():
    assert "empty" in error_of(b"\n\n", "corpus.jsonl")
    assert "no records" in error_of("\u3000\n".encode(), "corpus.jsonl")


def test_beir_gz_bomb_and_truncation():
    bomb = gzip.compress(b'{"_id": "a", "text": "' + b"a" * (20 << 20) + b'"}\n', compresslevel=1)
    assert "decompression bomb" in error_of(bomb, "corpus.jsonl.gz")
    assert "truncated" in error_of(g.make_beir_jsonl_gz()[:-12], "corpus.jsonl.gz")
    damaged = g.make_beir_jsonl_gz()[:10] + b"\xff" * 40  # zlib: "invalid block type"
    assert "gzip data is damaged" in error_of(damaged, "corpus.jsonl.gz")


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


def test_unique_name():
    used: set[str] = set()
    assert [unique_name(n, used) for n in ("a.txt", "a.txt", "a.txt", "b", "b")] == \
        ["a.txt", "a (2).txt", "a (3).txt", "b", "b (2)"]
    assert used == {"a.txt", "a (2).txt", "a (3).txt", "b", "b (2)"}


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


def test_damaged_zip_member_says_so_without_the_exception():
    data = bytearray(g.make_zip({"a.txt": b"hello world", "b.txt": b"fine"}, compression=zipfile.ZIP_STORED))
    at = data.find(b"hello world")
    data[at] ^= 0xFF  # the CRC no longer matches
    got = dict(iter_archive(bytes(data), "crc.zip", **ZIP_LIMITS))
    assert got["b.txt"] == b"fine"
    msg = str(got["a.txt"])
    assert_clear(msg, "a.txt")
    assert "damaged" in msg and "CRC" not in msg


def test_zip_member_with_unsupported_compression_says_so():
    data = bytearray(g.make_zip({"a.txt": b"hello"}, compression=zipfile.ZIP_STORED))
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # compression method 9: Deflate64
        i = data.find(sig)
        data[i + off:i + off + 2] = (9).to_bytes(2, "little")
    ((name, err),) = iter_archive(bytes(data), "d64.zip", **ZIP_LIMITS)
    assert isinstance(err, LoadError)
    assert_clear(str(err), name)
    assert "compressed with a method" in str(err) and "That compression method" not in str(err)


# --- robustness -------------------------------------------------------------------------------

def test_huge_single_line_text_loads_linearly():
    data = b"lorem ipsum dolor sit amet " * (50_000_000 // 27)
    d = load_one(data, "huge.txt")
    assert len(d.text) == len(data)


def _clean_text(text: str) -> bool:
    """Text a loader must accept: no control characters but tab and line ends, nothing unassigned or private,
    no replacement characters, something besides whitespace, and not the signature of a binary format
    (a text file that starts with "%PDF-" or "GIF89a" is sniffed as what it claims to be)."""
    return bool(text.strip()) and not _starts_like_binary(text) and not any(
        (unicodedata.category(c) in ("Cc", "Cn", "Co", "Cs") and c not in "\t\n\r") or c == "\ufffd" for c in text)


def _starts_like_binary(text: str) -> bool:
    return bool(re.match(r"\s*%PDF-", text)) or text.startswith(("BZh", "GIF87a", "GIF89a", "{\\rtf")) \
        or text[257:262] == "ustar"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(["a.txt", "a.md", "a.html", "a.pdf", "a.jsonl", "a.jsonl.gz",
                                                  "a.docx", "a", "a.zip", "a.pptx", "a.xlsx", "a.odt", "a.epub",
                                                  "a.csv", "a.tsv", "a.rst", "a.py", "a.usda", "a.json", "a.xml"]))
def test_arbitrary_bytes_load_or_raise_a_clear_load_error(data, name):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    must_load = name in ("a.txt", "a.md") and text is not None and _clean_text(text) and not text.startswith("\ufeff")
    try:
        docs = load(data, name)
    except LoadError as e:
        assert not must_load, f"clean UTF-8 text named {name} was refused: {e}"
        assert_clear(str(e), name)
        return
    for d in docs:
        assert isinstance(d.text, str) and d.text.strip()
        d.text.encode("utf-8")  # always encodable
    if must_load:
        (d,) = docs
        assert d.text == text.replace("\r\n", "\n").replace("\r", "\n")


# text a user can write: every character but controls (tab and line ends excepted), surrogates, unassigned and
# private-use code points, the BOM and U+FFFD
_printable = st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co"), blacklist_characters="\ufeff\ufffd")
_clean = st.text(st.one_of(_printable, st.sampled_from("\t\n\r")), max_size=300).filter(_clean_text)
_spaces = st.text(st.sampled_from(" \t\n\r\f\v\xa0\u2003\u3000\u2028"), max_size=40)


@settings(max_examples=60, deadline=None)
@given(_clean, st.sampled_from(["utf-8", "utf-16", "utf-8-sig"]), st.sampled_from(["a.txt", "a.md"]))
def test_any_written_text_loads_as_written(text, encoding, name):
    (d,) = load(text.encode(encoding), name)
    assert d.text == text.replace("\r\n", "\n").replace("\r", "\n")
    assert d.metadata["format"] == ("text" if name == "a.txt" else "markdown")
    for s in d.sections:
        assert 0 <= s.start <= s.end <= len(d.text)


_western_words = st.sampled_from(["the", "retrieval", "chunk", "Müller", "façade", "crème", "Brücke", "naïve",
                                  "señor", "Noël", "smørrebrød", "3.14", "(x)", "-"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_western_words, st.sampled_from([" ", "\n", ", ", ". ", "\r\n"])), min_size=1, max_size=60))
def test_western_legacy_text_loads_as_written(pairs):
    """cp1252/latin-1 text whose letters are mostly ASCII (every word here) is decoded exactly."""
    text = "".join(w + sep for w, sep in pairs)
    (d,) = load(text.encode("latin-1"), "legacy.txt")
    assert d.text == text.replace("\r\n", "\n")
    assert d.metadata["encoding"] == ("utf-8" if text.isascii() else "cp1252")


@settings(max_examples=40, deadline=None)
@given(_spaces, st.sampled_from(["utf-8", "utf-16", "utf-8-sig"]),
       st.sampled_from(["a.txt", "a.md", "a", "a.html", "a.jsonl"]))
def test_whitespace_only_files_are_refused_as_empty(spaces, encoding, name):
    msg = error_of(spaces.encode(encoding), name)
    expect = {"a.html": "empty|no visible text", "a.jsonl": "empty|no records"}.get(name, "empty|no text")
    assert re.search(expect, msg), msg


_controls = st.text(st.sampled_from("\x00\x01\x02\x03\x07\x08\x0e\x10\x15\x1a\x7f\x81\x9f\ufffd"), min_size=3,
                    max_size=20)


@settings(max_examples=40, deadline=None)
@given(st.text(_printable, max_size=60), _controls, st.randoms(use_true_random=False),
       st.sampled_from(["utf-8", "utf-16", "utf-8-sig"]), st.sampled_from(["a.txt", "a.md"]))
def test_text_full_of_control_characters_is_refused_as_binary(text, controls, rnd, encoding, name):
    """More than 2 (and 2%) control or replacement characters: the file is not text."""
    chars = list(text) + list(controls * (1 + len(text) // 50))
    rnd.shuffle(chars)
    mixed = "".join(chars)
    assume(not _starts_like_binary(mixed))
    assume(not (encoding == "utf-16" and mixed.startswith("\x00")))  # FF FE 00 00 is the UTF-32 byte-order mark
    assert "looks binary" in error_of(mixed.encode(encoding), name)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3", "p", "div", "li"]),
                          st.lists(st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True), min_size=1, max_size=8)),
                min_size=1, max_size=12),
       st.sampled_from(["page.html", "page"]))
def test_generated_html_loads_with_its_words_and_headings(blocks, name):
    body = "".join(f"<{t}>{' '.join(ws)}</{t}>" if t != "li" else f"<ul><li>{' '.join(ws)}</li></ul>"
                   for t, ws in blocks)
    data = f"<!DOCTYPE html><html><head><title>T</title><script>hidden()</script></head><body>{body}</body></html>"
    d = load_one(data.encode(), name)
    assert d.metadata["format"] == "html" and d.title == "T"
    assert d.text.split() == [w for _, ws in blocks for w in ws]
    assert [s.heading for s in d.sections if s.heading] == [" ".join(ws) for t, ws in blocks if t[0] == "h"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["#", "##", "###", "setext", "p", "fence"]),
                          st.lists(st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True), min_size=1, max_size=8)),
                min_size=1, max_size=12))
def test_generated_markdown_loads_with_its_headings(blocks):
    parts = []
    for kind, ws in blocks:
        line = " ".join(ws)
        if kind == "setext":
            parts.append(f"{line}\n{'=' * len(line)}")
        elif kind == "fence":
            parts.append(f"```\n# {line}\n```")  # not a heading inside a code fence
        elif kind == "p":
            parts.append(line)
        else:
            parts.append(f"{kind} {line}")
    text = "\n\n".join(parts) + "\n"
    d = load_one(text.encode(), "gen.md")
    assert d.text == text and d.metadata["format"] == "markdown"
    headings = [" ".join(ws) for kind, ws in blocks if kind not in ("p", "fence")]
    assert [s.heading for s in d.sections if s.heading] == headings
    assert d.title == (headings[0] if headings else "")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.text(_printable, min_size=1, max_size=12).filter(str.strip),
                                    st.integers(0, 10**6)),
                          st.text(_printable, max_size=20), st.text(max_size=80)),
                min_size=1, max_size=15, unique_by=lambda r: str(r[0])),
       st.sampled_from(["corpus.jsonl", "corpus.jsonl.gz", "corpus"]))
def test_generated_beir_corpus_loads_every_record(records, name):
    data = "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in records).encode()
    if name.endswith(".gz"):
        data = gzip.compress(data)
    docs = load(data, name)
    assert [d.doc_id for d in docs] == [str(i) for i, _, _ in records]
    assert [d.title for d in docs] == [t.strip() for _, t, _ in records]
    assert all(d.metadata["format"] == "beir" and d.source == name for d in docs)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "latin-1"]),
       st.sampled_from(["a.txt", "a.md", "a.html", "a.jsonl", "noext"]))
def test_arbitrary_text_loads_or_raises_a_clear_load_error(text, encoding, name):
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode(encoding, errors="replace")
    must_load = name in ("a.txt", "a.md") and encoding != "latin-1" and _clean_text(text) \
        and not (encoding == "utf-8" and text.startswith("\ufeff"))
    try:
        docs = load(data, name)
    except LoadError as e:
        assert not must_load, f"clean text named {name} in {encoding} was refused: {e}"
        assert_clear(str(e), name)
        return
    for d in docs:
        assert d.text.strip()
        for s in d.sections:
            assert 0 <= s.start <= s.end <= len(d.text)


def test_json_escaped_surrogates_are_replaced():
    data = json.dumps({"_id": "s", "text": "bad \ud800 char"}).encode()
    d, = load(data, "corpus.jsonl")
    assert d.text == "bad \ufffd char"
