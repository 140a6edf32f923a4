"""DOCX (python-docx): paragraphs and tables in document order; one ``Section`` per heading."""
from __future__ import annotations

import io
import logging
import zipfile

from rag.types import Document

from .common import LoadError, heading_sections, normalise_newlines, table_text

log = logging.getLogger(__name__)

MAX_XML_BYTES = 256 << 20  # a .docx never expands past this (nor past 200x its size)


def load_docx(data: bytes, shown: str) -> Document:
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("python-docx is not installed: `pip install python-docx`.") from None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # python-docx trusts the zip: check it first
        total = sum(i.file_size for i in zf.infolist())
        if total > MAX_XML_BYTES or total > 200 * max(len(data), 1 << 16):
            raise LoadError(f"{shown}: the .docx expands to {total >> 20} MiB, which looks like a "
                            "decompression bomb. Save it again from Word or export it as PDF.")
    try:
        d = docx.Document(io.BytesIO(data))
        blocks = list(d.iter_inner_content()) if hasattr(d, "iter_inner_content") else list(d.paragraphs)
    except Exception as e:
        log.debug("%s: python-docx cannot read the file: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the .docx file is damaged (its contents cannot be read). Open it in Word or "
                        "LibreOffice, save it again, and upload the new file.") from None
    parts: list[str] = []
    heads: list[tuple[int, str]] = []
    pos = 0

    def add(t: str) -> int:
        nonlocal pos
        if parts:
            parts.append("\n\n")
            pos += 2
        start = pos
        parts.append(t)
        pos += len(t)
        return start

    for block in blocks:
        try:
            if isinstance(block, Paragraph):
                t = normalise_newlines(block.text).strip()
                if not t:
                    continue
                style = (block.style.name if block.style is not None else "") or ""
                at = add(t)
                if style.lower().startswith(("heading", "title")):
                    heads.append((at, " ".join(t.split())))
            elif isinstance(block, Table):
                text = table_text(block.rows)
                if text:
                    add(text)
        except Exception as e:  # a strange block must not lose the rest of the document
            log.debug("%s: skipped an unreadable block: %s: %s", shown, type(e).__name__, e)
            continue
    text = "".join(parts)  # no NULs: XML cannot hold them
    if not text.strip():
        raise LoadError(f"{shown}: the .docx has no text. If it holds scanned pages, export it as PDF, "
                        "run OCR (e.g. ocrmypdf) and upload that.")
    sections = heading_sections(heads, len(text))
    title = ""
    try:
        title = " ".join((d.core_properties.title or "").split())
    except Exception:  # a damaged core-properties part only costs the title
        pass
    title = title or (heads[0][1] if heads else "")
    return Document(shown, shown, text, title, sections, {"format": "docx", "bytes": len(data)})
