"""OpenDocument text .odt (its content.xml read with lxml): paragraphs, lists and tables in order; one
``Section`` per heading.

lxml rather than odfpy's text helpers: those expand ``<text:s text:c="1000000000"/>`` into a gigabyte of
spaces; here a run of spaces is capped. Entities are not resolved and nothing is fetched. Tracked deletions,
tables of contents and form controls add no text. A password-protected file (its manifest lists encryption
data) is refused with that reason.
"""
from __future__ import annotations

import logging

from rag.types import Document

from .common import LoadError, heading_sections, normalise_newlines
from .container import open_container, read_part

log = logging.getLogger(__name__)

WHAT = ".odt document"
RESAVE = "Open it in LibreOffice Writer, save it again, and upload the new file (or export it as PDF)."
MAX_CONTENT_XML = 64 << 20
MAX_SPACES = 100

_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_DC = "http://purl.org/dc/elements/1.1/"
_T = "{%s}" % _TEXT
_TB = "{%s}" % _TABLE
_SKIP = {_T + n for n in ("tracked-changes", "sequence-decls", "variable-decls", "user-field-decls",
                          "table-of-content", "alphabetical-index", "illustration-index", "table-index",
                          "object-index", "user-index", "bibliography", "note-citation")} | {
    "{%s}forms" % _OFFICE, _TB + "covered-table-cell"}


def load_odt(data: bytes, shown: str) -> Document:
    try:
        from lxml import etree
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("lxml is not installed: `pip install lxml`.") from None
    zf = open_container(data, shown, WHAT, RESAVE)
    with zf:
        manifest = read_part(zf, "META-INF/manifest.xml", shown, WHAT, RESAVE) or b""
        if b"encryption-data" in manifest:
            raise LoadError(f"{shown}: the {WHAT} is protected by a password. Open it in LibreOffice, save a copy "
                            "without the password (File > Properties > Security), and upload that.")
        info = zf.NameToInfo.get("content.xml")
        if info is not None and info.file_size > MAX_CONTENT_XML:
            raise LoadError(f"{shown}: the document's text part is {info.file_size >> 20} MiB, more than the "
                            f"{MAX_CONTENT_XML >> 20} MiB read from one file. Split the document and upload the "
                            "parts.")
        content = read_part(zf, "content.xml", shown, WHAT, RESAVE)
        meta = read_part(zf, "meta.xml", shown, WHAT, RESAVE)
    if content is None:
        raise LoadError(f"{shown}: the {WHAT} is damaged (it has no content part). {RESAVE}")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True,
                             remove_pis=True)
    try:
        root = etree.fromstring(content, parser)
    except Exception as e:  # lxml raises XMLSyntaxError and others on damaged or hostile XML
        log.debug("%s: content.xml cannot be parsed: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the {WHAT} is damaged (its text part is not valid XML). {RESAVE}") from None
    body = root.find(f"{{{_OFFICE}}}body/{{{_OFFICE}}}text")
    if body is None:
        raise LoadError(f"{shown}: this OpenDocument file holds no text document (it may be a spreadsheet or a "
                        "drawing). Save it as .odt, .xlsx or PDF and upload that.")
    text, heads = _walk(body)
    if not text.strip():
        raise LoadError(f"{shown}: the {WHAT} has no text. If it holds scanned pages, export it as PDF, run OCR "
                        "(e.g. ocrmypdf) and upload that.")
    title = _title(meta, parser) or (heads[0][1] if heads else "")
    return Document(shown, shown, text, title, heading_sections(heads, len(text)),
                    {"format": "odt", "bytes": len(data)})


def _walk(body) -> tuple[str, list[tuple[int, str]]]:
    parts: list[str] = []
    heads: list[tuple[int, str]] = []
    pos = 0

    def add(t: str) -> int | None:
        nonlocal pos
        t = normalise_newlines(t).strip()
        if not t:
            return None
        if parts:
            parts.append("\n\n")
            pos += 2
        at = pos
        parts.append(t)
        pos += len(t)
        return at

    stack = list(reversed(body))
    while stack:
        el = stack.pop()
        tag = el.tag
        if not isinstance(tag, str) or tag in _SKIP:
            continue
        if tag == _T + "h":
            t = _inline(el)
            at = add(t)
            if at is not None:
                heads.append((at, " ".join(t.split())[:200]))
        elif tag == _T + "p":
            add(_inline(el))
        elif tag == _TB + "table-row":
            cells = []
            for cell in el:
                if cell.tag == _TB + "table-cell":
                    c = " ".join(_inline(cell).split())
                    if c:
                        cells.append(c)
            if cells:
                add(" | ".join(cells))
        else:  # lists, sections, tables, frames, text boxes: their children in order
            stack.extend(reversed(el))
    return "".join(parts), heads


def _inline(el) -> str:
    """The text of a paragraph or heading: spans opened, ``<text:s>``/``<text:tab>``/``<text:line-break>``
    expanded (runs of spaces capped), paragraphs inside (a cell, a note) on lines of their own."""
    out: list[str] = []
    stack: list = [el]
    while stack:
        cur = stack.pop()
        if isinstance(cur, str):
            out.append(cur)
            continue
        tag = cur.tag
        if not isinstance(tag, str) or (tag in _SKIP and cur is not el):
            if cur.tail and cur is not el:
                out.append(cur.tail)
            continue
        if cur is not el and cur.tail:
            stack.append(cur.tail)
        if tag == _T + "s":
            try:
                n = int(cur.get(_T + "c", "1"))
            except ValueError:
                n = 1
            out.append(" " * max(1, min(n, MAX_SPACES)))
            continue
        if tag == _T + "tab":
            out.append("\t")
            continue
        if tag == _T + "line-break":
            out.append("\n")
            continue
        block = cur is not el and tag in (_T + "p", _T + "h")
        if block:
            stack.append("\n")
        stack.extend(reversed(list(cur)))
        if cur.text:
            stack.append(cur.text)
        if block:
            stack.append("\n")
    return "".join(out)


def _title(meta: bytes | None, parser) -> str:
    if not meta:
        return ""
    from lxml import etree

    try:
        t = etree.fromstring(meta, parser).find(f".//{{{_DC}}}title")
    except Exception:  # a damaged meta part only costs the title
        return ""
    return " ".join((t.text or "").split()) if t is not None else ""
