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


# --- PowerPoint, Excel, CSV, OpenDocument, EPUB, reStructuredText -------------------------------

def make_pptx(slides: list[dict], title: str | None = None) -> bytes:
    """A .pptx from dicts with "title", "body" (lines), "table" (rows), "notes", "group" (text in a group)."""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    if title is not None:
        prs.core_properties.title = title
    for spec in slides:
        slide = prs.slides.add_slide(prs.slide_layouts[1 if spec.get("title") else 6])
        if spec.get("title"):
            slide.shapes.title.text = spec["title"]
            body = slide.placeholders[1]
            body.text_frame.text = "\n".join(spec.get("body", []))
        elif spec.get("body"):
            box = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(5), Inches(1))
            box.text_frame.text = "\n".join(spec["body"])
        if spec.get("table"):
            rows = spec["table"]
            shape = slide.shapes.add_table(len(rows), len(rows[0]), Inches(1), Inches(3), Inches(6), Inches(2))
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    shape.table.cell(r, c).text = cell
        if spec.get("group"):
            group = slide.shapes.add_group_shape()
            box = group.shapes.add_textbox(Inches(1), Inches(5), Inches(3), Inches(1))
            box.text_frame.text = spec["group"]
        if spec.get("notes"):
            slide.notes_slide.notes_text_frame.text = spec["notes"]
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def make_xlsx(sheets: dict[str, list[list]], title: str | None = None) -> bytes:
    """A .xlsx with one sheet per entry (rows of values; None leaves a cell empty)."""
    import openpyxl

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    if title is not None:
        wb.properties.title = title
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def make_csv(rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    import csv

    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode(encoding)


def budget_csv(n_rows: int = 500) -> bytes:
    """A header and ``n_rows`` rows of a plausible budget table."""
    rows = [["Region", "Quarter", "Item", "Amount (USD)", "Owner"]]
    for i in range(n_rows):
        rows.append([["North", "South", "East", "West"][i % 4], f"Q{i % 4 + 1}", f"item number {i}",
                     f"{1000 + 37 * i}.{i % 100:02d}", f"owner-{i % 7}"])
    return make_csv(rows)


ODT_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
          'xmlns:dc="http://purl.org/dc/elements/1.1/" '
          'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0"')


def make_odt(body_xml: str, title: str | None = None, manifest_extra: str = "",
             mimetype: bytes = b"application/vnd.oasis.opendocument.text") -> bytes:
    """An .odt whose office:text holds ``body_xml`` (ODF elements with the text:/table: prefixes)."""
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODT_NS} office:version="1.3">'
               f"<office:body><office:text>{body_xml}</office:text></office:body></office:document-content>")
    meta = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-meta {ODT_NS}><office:meta>'
            f"{'<dc:title>' + title + '</dc:title>' if title else ''}</office:meta></office:document-meta>")
    manifest = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">'
                '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>'
                f'<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">{manifest_extra}'
                "</manifest:file-entry></manifest:manifest>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), mimetype)  # first and stored, as ODF requires
        zf.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        zf.writestr("meta.xml", meta, zipfile.ZIP_DEFLATED)
        zf.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def make_epub(chapters: list[tuple[str, str]], title: str = "A Small Book", encryption_xml: str | None = None) -> bytes:
    """An EPUB 3 from (toc title, xhtml body) chapters, written with ebooklib."""
    import os
    import tempfile

    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-book")
    book.set_title(title)
    book.set_language("en")
    items = []
    for i, (name, body) in enumerate(chapters, start=1):
        ch = epub.EpubHtml(title=name, file_name=f"chap_{i}.xhtml", lang="en")
        ch.content = body
        book.add_item(ch)
        items.append(ch)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "book.epub")
        epub.write_epub(path, book)
        with open(path, "rb") as f:
            data = f.read()
    if encryption_xml is None:
        return data
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            zf.writestr(info, src.read(info.filename))
        zf.writestr("META-INF/encryption.xml", encryption_xml)
    return buf.getvalue()


RST = """\
==============
OpenUSD primer
==============

A *stage* holds prims. See :ref:`the layer guide <layers>` and :usdcpp:`UsdStage`.

Layers
======

Layers are composed in strength order.

.. code-block:: usda

   def Xform "World" {}

.. note:: Sublayers are weaker than the root layer.

.. versionadded:: 23.11
   Variant fallbacks.

Payloads
--------

+--------+----------+
| Arc    | Loads    |
+========+==========+
| payload| deferred |
+--------+----------+

.. toctree::

   intro
"""


def make_container_bomb(kind: str, expanded_bytes: int = 300 << 20) -> bytes:
    """A zip that is sniffed as ``kind`` (pptx, xlsx, odt, epub) with one part of zeros (~1000:1)."""
    marker = {"pptx": {"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"},
              "xlsx": {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<w/>"},
              "odt": {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"},
              "epub": {"mimetype": b"application/epub+zip", "META-INF/container.xml": b"<c/>"}}[kind]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in marker.items():
            zf.writestr(name, data)
        with zf.open("bomb.bin", "w", force_zip64=True) as f:
            block = b"\x00" * (1 << 20)
            for _ in range(expanded_bytes >> 20):
                f.write(block)
    return buf.getvalue()


def make_encrypted_office() -> bytes:
    """The start of an OLE compound file holding an ``EncryptedPackage`` stream (a password-protected .xlsx)."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    entry = "EncryptedPackage".encode("utf-16-le").ljust(64, b"\x00") + b"\x00" * 64
    return header + entry + bytes(range(256)) * 8


def make_usdc() -> bytes:
    """The start of a binary USD crate file."""
    return b"PXR-USDC" + b"\x00\x00\x00\x00\x08\x00\x00\x00" + bytes(range(256)) * 4


def set_encrypted_flag(data: bytes, entry: int = -1) -> bytes:
    """The zip with the "encrypted" flag set on one entry of its central directory (what zipfile reads)."""
    out = bytearray(data)
    eocd = out.rfind(b"PK\x05\x06")
    pos = int.from_bytes(out[eocd + 16:eocd + 20], "little")
    starts = []
    while out[pos:pos + 4] == b"PK\x01\x02":
        starts.append(pos)
        n, m, k = (int.from_bytes(out[pos + o:pos + o + 2], "little") for o in (28, 30, 32))
        pos += 46 + n + m + k
    out[starts[entry] + 8] |= 1
    return bytes(out)
