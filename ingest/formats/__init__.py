"""Bytes + a file name → ``Document`` objects: ``load(data, name)``.

The format is sniffed from the bytes; the name's suffix is only a hint for the text kinds
(Markdown, HTML, BEIR ``jsonl``, plain text). Everything that can go wrong with a user's file is
reported as a ``LoadError`` whose message names the file, says what is wrong and what to do.

One module per format: ``pdf`` (pypdf; one ``Section`` per page), ``docx`` (python-docx; one
``Section`` per heading), ``html`` (BeautifulSoup + lxml; visible text only, h1-h6 as sections),
``markdown`` (``#`` and setext headings as sections, text kept as-is), ``text`` (BOM, UTF-8, then
charset-normalizer), ``beir`` (``corpus.jsonl`` / ``.jsonl.gz``, one ``Document`` per line).
``sniff`` recognises the bytes, ``gz`` decompresses gzip uploads. ``.zip`` archives are not
documents: expand them with ``ingest.archive.iter_archive`` and load each member.

In every loaded text, line ends are normalised to ``"\\n"``; section offsets refer to that text.
"""
from __future__ import annotations

import re

from rag.types import Document

from ..names import safe_name
from .beir import load_beir, looks_like_beir
from .common import LoadError, normalise_newlines
from .common import suffix as _suffix
from .docx import load_docx
from .gz import gunzip
from .html import load_html, looks_like_html
from .markdown import load_markdown, looks_like_markdown
from .pdf import load_pdf
from .sniff import GZIP_MAGIC, ZIP_MAGIC, binary_kind, is_pdf, zip_kind
from .text import decode, head_as_utf8, load_text

__all__ = ["LoadError", "load"]

_NON_SPACE_BYTES = re.compile(rb"[^ \t\r\n\f\v]")


def load(data: bytes, name: str) -> list[Document]:
    """Load one uploaded file. Raises ``LoadError`` with a message for the user."""
    data = bytes(data)
    shown = safe_name(name)
    suffix = _suffix(name)
    if not _NON_SPACE_BYTES.search(data):
        raise LoadError(f"{shown}: the file is empty. Check that you picked the right file and upload it again.")

    if is_pdf(data, suffix):
        return [load_pdf(data, shown)]

    zkind = zip_kind(data)
    if zkind == "docx":
        return [load_docx(data, shown)]
    if zkind == "office":
        raise LoadError(f"{shown}: this is an office or e-book file that is not supported (only .docx is). "
                        "Save it as .docx or PDF and upload that.")
    if zkind == "zip":
        raise LoadError(f"{shown}: this is a zip archive, not a single document. Upload it as a .zip so its "
                        "files are loaded one by one (in code: expand it with ingest.archive.iter_archive).")
    if zkind == "broken":
        if suffix == "docx":
            raise LoadError(f"{shown}: the .docx file is damaged (its zip structure cannot be read). "
                            "Open it in Word or LibreOffice, save it again, and upload the new file.")
        raise LoadError(f"{shown}: the zip archive is damaged or truncated. Create it again and upload it.")

    if suffix in ("pdf", "docx"):
        what = binary_kind(data)
        looks = f" (it looks like {what[0]})" if what else ""
        raise LoadError(f"{shown}: the name ends in .{suffix} but the file is not a "
                        f"{'PDF' if suffix == 'pdf' else 'Word .docx document'}{looks}. "
                        "Check that you picked the right file; export the document again if needed.")

    if data.startswith(GZIP_MAGIC):
        inner_name = name[:-3] if name.lower().endswith(".gz") else name
        inner = gunzip(data, shown)
        if not inner.strip():
            raise LoadError(f"{shown}: the compressed file is empty. Check that you picked the right file.")
        if is_pdf(inner) or inner.startswith(ZIP_MAGIC) or inner.startswith(GZIP_MAGIC):
            raise LoadError(f"{shown}: only text files (such as a BEIR corpus.jsonl) may be gzip-compressed. "
                            "Decompress it and upload the file inside.")
        docs = _load_text_kinds(inner, shown, _suffix(inner_name), len(data))
        for d in docs:
            d.metadata["compression"] = "gzip"
        return docs

    what = binary_kind(data)
    if what:
        raise LoadError(f"{shown}: this is {what[0]}, not a document. {what[1]}")
    return _load_text_kinds(data, shown, suffix, len(data))


def _load_text_kinds(data: bytes, shown: str, suffix: str, nbytes: int) -> list[Document]:
    """BEIR jsonl, HTML, Markdown or plain text: the suffix decides, else the content."""
    head = head_as_utf8(data)  # sniff HTML and JSON in UTF-16/32 files too
    if suffix in ("jsonl", "jsonl.gz", "ndjson") or (suffix not in ("txt", "text", "md", "markdown", "html", "htm")
                                                     and looks_like_beir(head)):
        text, _ = decode(data, shown)
        return load_beir(text, shown, nbytes)
    if suffix in ("html", "htm", "xhtml") or (suffix not in ("txt", "text", "md", "markdown")
                                              and looks_like_html(head)):
        return [load_html(data, shown, nbytes)]
    text, enc = decode(data, shown)
    text = normalise_newlines(text)
    if not text.strip():
        raise LoadError(f"{shown}: the file has no text (only whitespace). Check that you picked the right file.")
    if suffix in ("md", "markdown") or (suffix not in ("txt", "text") and looks_like_markdown(text)):
        return [load_markdown(text, shown, nbytes, enc)]
    return [load_text(text, shown, nbytes, enc)]
