"""Generators for test files, built in memory so that no binary fixtures are committed.

Each function returns the file's bytes. PDFs are written by hand (a content stream per page with
the standard Helvetica font), so they do not depend on a PDF writer that can draw text.
"""
from __future__ import annotations

import gzip
import io
import json
import random
import struct
import zipfile

# --- PDF ------------------------------------------------------------------------------------

def _pdf_escape(s: str) -> bytes:
    return s.encode("latin-1").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A valid PDF with one page per string (lines split on "\\n"); empty strings give blank pages."""
    objs: list[bytes] = []  # object i+1
    n = len(pages)
    page_ids = [4 + 2 * i for i in range(n)]
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % p for p in page_ids) + b"] /Count %d >>" % n)
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, text in enumerate(pages):
        content = b""
        if text:
            lines = b" T* ".join(b"(" + _pdf_escape(line) + b") Tj" for line in text.split("\n"))
            content = b"BT /F1 12 Tf 14 TL 72 720 Td " + lines + b" ET"
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_ids[i] + 1))
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    info_id = None
    if title is not None:
        objs.append(b"<< /Title (" + _pdf_escape(title) + b") /Producer (hybrid-rag tests) >>")
        info_id = len(objs)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R" % (len(objs) + 1)
    if info_id:
        out += b" /Info %d 0 R" % info_id
    out += b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def make_encrypted_pdf(pages: list[str], user_password: str = "secret", owner_password: str = "owner",
                       algorithm: str = "RC4-128") -> bytes:
    """``make_pdf`` encrypted with pypdf. RC4 needs no extra package; AES needs ``cryptography``."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(pages))))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm=algorithm)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_blank_pdf(n_pages: int = 1) -> bytes:
    """A PDF whose pages have no text layer (what a scan without OCR looks like to a text extractor)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(n_pages):
        writer.add_blank_page(width=612, height=792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_corrupt_pdf() -> bytes:
    """A PDF cut off after its header and catalog: no page tree, no xref."""
    return make_pdf(["This text is lost."])[:60]


# --- DOCX -----------------------------------------------------------------------------------

def make_docx(blocks: list[tuple[str, str]], title: str | None = None, table: list[list[str]] | None = None) -> bytes:
    """A .docx from (kind, text) blocks; kind is "h1".."h3", "title" or "p"."""
    import docx

    d = docx.Document()
    if title is not None:
        d.core_properties.title = title
    for kind, text in blocks:
        if kind == "title":
            d.add_heading(text, level=0)
        elif kind.startswith("h"):
            d.add_heading(text, level=int(kind[1:]))
        else:
            d.add_paragraph(text)
    if table:
        t = d.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                t.cell(r, c).text = cell
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


# --- HTML / text ----------------------------------------------------------------------------

HOSTILE_HTML = """<!DOCTYPE html>
<html><head><title>Page title</title>
<style>body { color: red } .secret-style {}</style>
<script>var secret_script = "SCRIPT_TEXT";</script>
<meta name="description" content="META_TEXT">
</head>
<body>
<h1>Main heading</h1>
<p>First <b>visible</b> paragraph.</p>
<img src="x" onerror="alert('ONERROR_TEXT')" alt="ALT_TEXT">
<iframe src="https://example.com">IFRAME_TEXT</iframe>
<noscript>NOSCRIPT_TEXT</noscript>
<template><p>TEMPLATE_TEXT</p></template>
<svg><text>SVG_TEXT</text></svg>
<div hidden>HIDDEN_TEXT</div>
<div style="display: none">DISPLAY_NONE_TEXT</div>
<!-- COMMENT_TEXT -->
<h2>Second heading</h2>
<p onclick="steal('ONCLICK_TEXT')">Second paragraph with a <a href="javascript:evil('HREF_TEXT')">link</a>.</p>
<script type="module">import("SCRIPT2_TEXT")</script>
<table><tr><td>cell one</td><td>cell two</td></tr></table>
</body></html>
"""

HIDDEN_MARKERS = ["SCRIPT_TEXT", "META_TEXT", "ONERROR_TEXT", "ALT_TEXT", "IFRAME_TEXT", "NOSCRIPT_TEXT",
                  "TEMPLATE_TEXT", "SVG_TEXT", "HIDDEN_TEXT", "DISPLAY_NONE_TEXT", "COMMENT_TEXT",
                  "ONCLICK_TEXT", "HREF_TEXT", "SCRIPT2_TEXT", "secret-style", "alert", "Page title"]

MARKDOWN = """# Guide title

Intro paragraph under the title.

## Install

Run `pip install hybrid-rag`.

```bash
# not a heading: inside a code fence
echo hi
```

Setext heading
--------------

Text after the setext heading.
"""

LATIN1_TEXT = ("Über die Brücke gehen Müller und Jäger. Ça coûte très cher à Noël, "
               "déjà vu — naïve façade, crème brûlée, señor, smørrebrød. ") * 3


def make_latin1() -> bytes:
    return LATIN1_TEXT.replace("—", "-").encode("latin-1")


def make_utf16_bom(text: str = "Grüße aus Köln: UTF-16 text with a BOM.\nSecond line ✓.") -> bytes:
    return text.encode("utf-16")  # Python writes the BOM


def make_binary_garbage(n: int = 4096, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def make_elf() -> bytes:
    """The start of a 64-bit x86-64 ELF executable."""
    header = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + struct.pack("<HHI", 2, 0x3E, 1)
    return header + b"\x00" * 200 + b"/lib64/ld-linux-x86-64.so.2\x00" + bytes(range(256))


# --- BEIR -----------------------------------------------------------------------------------

BEIR_RECORDS = [
    {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack.", "metadata": {}},
    {"_id": "d2", "title": "", "text": "Vitamin D is made in the skin under sunlight."},
    {"_id": 3, "title": "Numeric id", "text": "BEIR ids may be integers in some corpora."},
]


def make_beir_jsonl(records: list[dict] | None = None) -> bytes:
    recs = BEIR_RECORDS if records is None else records
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8")


def make_beir_jsonl_gz(records: list[dict] | None = None) -> bytes:
    return gzip.compress(make_beir_jsonl(records), mtime=0)


# --- zip ------------------------------------------------------------------------------------

def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            if name.endswith("/"):
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def make_zip_bomb(expanded_bytes: int = 20 << 20) -> bytes:
    """One member of zeros: ~1000:1 compression."""
    return make_zip({"readme.txt": b"harmless\n", "bomb.txt": b"\x00" * expanded_bytes})


def make_lying_zip(real: bytes = b"A" * 200_000, declared: int = 1000) -> bytes:
    """A zip whose headers declare ``declared`` bytes for a member that really holds ``len(real)``."""
    data = bytearray(make_zip({"liar.txt": real}))
    real_size = struct.pack("<I", len(real))
    fake_size = struct.pack("<I", declared)
    # local header: uncompressed size at offset 22; central directory entry: at offset 24
    lh = data.find(b"PK\x03\x04")
    assert data[lh + 22:lh + 26] == real_size
    data[lh + 22:lh + 26] = fake_size
    cd = data.find(b"PK\x01\x02")
    assert data[cd + 24:cd + 28] == real_size
    data[cd + 24:cd + 28] = fake_size
    return bytes(data)


def make_nested_zip(depth: int, leaf: bytes = b"deep text\n") -> bytes:
    """``depth`` zips inside each other; the innermost holds leaf.txt."""
    data = make_zip({"leaf.txt": leaf})
    for i in range(depth):
        data = make_zip({f"level{i}.zip": data})
    return data


HOSTILE_NAMES = ["../../etc/passwd", "/abs/path.txt", "C:\\Windows\\System32\\evil.txt", "a\x00b.txt",
                 "x" * 1000 + ".txt", "..", ".", "", "  ", "\u202etxt.exe", "con.txt", "dir/../../up.md",
                 "tab\tand\nnewline.txt", "日本語の文書.md"]
