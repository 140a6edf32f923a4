"""Bytes + a file name → ``Document`` objects: ``load(data, name)``.

The format is sniffed from the bytes; the name's suffix is only a hint for the text kinds
(Markdown, HTML, BEIR ``jsonl``, plain text). Everything that can go wrong with a user's file is
reported as a ``LoadError`` whose message names the file, says what is wrong and what to do.

One module per format: ``pdf`` (pypdf; one ``Section`` per page), ``docx`` (python-docx; one
``Section`` per heading), ``pptx`` (python-pptx; one per slide), ``xlsx`` (openpyxl) and ``delimited``
(CSV/TSV; both through ``table``: Markdown-style rows in blocks that repeat the header, one per chunk),
``odt`` (OpenDocument text; one per heading), ``epub`` (ebooklib + the HTML loader; chapters in reading
order), ``rst`` (docutils, with file insertion and raw output disabled; one per section title), ``html``
(BeautifulSoup + lxml; visible text only, h1-h6 as sections), ``markdown`` (``#`` and setext headings as
sections, text kept as-is), ``code`` (source, configuration and USD text by suffix, kept as written),
``text`` (BOM, UTF-8, then charset-normalizer), ``beir`` (``corpus.jsonl`` / ``.jsonl.gz``, one
``Document`` per line). ``sniff`` recognises the bytes, ``container`` checks zip-based documents before a
library opens them, ``gz`` decompresses gzip uploads. ``.zip`` archives are not documents: expand them with
``ingest.archive.iter_archive`` and load each member.

In every loaded text, line ends are normalised to ``"\\n"``; section offsets refer to that text.
"""
from __future__ import annotations

import re

from rag.types import Document

from ..names import safe_name
from .beir import load_beir, looks_like_beir
from .code import LANGUAGES, load_code
from .common import LoadError, normalise_newlines
from .common import suffix as _suffix
from .delimited import load_csv
from .docx import load_docx
from .epub import load_epub
from .gz import gunzip
from .html import load_html, looks_like_html
from .markdown import load_markdown, looks_like_markdown
from .odt import load_odt
from .pdf import load_pdf
from .pptx import load_pptx
from .rst import load_rst
from .sniff import (
    GZIP_MAGIC,
    ZIP_MAGIC,
    binary_kind,
    is_encrypted_office,
    is_pdf,
    zip_kind,
)
from .table import TableFit, chunk_table, is_table, token_fit
from .text import decode, head_as_utf8, load_text
from .xlsx import load_xlsx

__all__ = ["LoadError", "load", "TableFit", "token_fit", "chunk_table", "is_table", "SUFFIXES"]

_NON_SPACE_BYTES = re.compile(rb"[^ \t\r\n\f\v]")

# what each zip-based or binary suffix promises, for "the name says X but the file is not X"
_CONTAINERS = {"pdf": "a PDF", "docx": "a Word .docx document", "pptx": "a PowerPoint .pptx presentation",
               "xlsx": "an Excel .xlsx workbook", "odt": "an OpenDocument text file (.odt)", "epub": "an EPUB e-book"}
_RESAVE = {"docx": "Open it in Word or LibreOffice, save it again, and upload the new file.",
           "pptx": "Open it in PowerPoint or LibreOffice Impress, save it again, and upload the new file.",
           "xlsx": "Open it in Excel or LibreOffice Calc, save it again, and upload the new file.",
           "odt": "Open it in LibreOffice Writer, save it again, and upload the new file.",
           "epub": "Convert it again (for example with Calibre) and upload the new file."}
_TABLE_SUFFIXES = ("csv", "tsv")
_RST_SUFFIXES = ("rst",)

# every suffix a loader reads as its own format (configs/default.yaml limits.allowed_types lists these)
SUFFIXES = ("pdf", "docx", "pptx", "xlsx", "odt", "epub", "html", "htm", "xhtml", "md", "markdown", "txt",
            "text", "jsonl", "ndjson", "gz", *_TABLE_SUFFIXES, *_RST_SUFFIXES, *LANGUAGES)


def load(data: bytes, name: str, *, table_fit: TableFit | None = None) -> list[Document]:
    """Load one uploaded file. Raises ``LoadError`` with a message for the user.

    ``table_fit`` sizes the row blocks of spreadsheets and CSV files to the chunks they will be cut into
    (the pipeline passes ``token_fit(tokenizer, chunk_tokens)``); without it a default estimate is used.
    """
    data = bytes(data)
    shown = safe_name(name)
    suffix = _suffix(name)
    if not _NON_SPACE_BYTES.search(data):
        raise LoadError(f"{shown}: the file is empty. Check that you picked the right file and upload it again.")

    if is_pdf(data, suffix):
        return [load_pdf(data, shown)]
    if is_encrypted_office(data):
        raise LoadError(f"{shown}: the Office file is protected by a password (it is encrypted). Open it, remove "
                        "the password (File > Info > Protect), save it, and upload the new file.")

    zkind = zip_kind(data)
    if zkind == "docx":
        return [load_docx(data, shown)]
    if zkind == "pptx":
        return [load_pptx(data, shown)]
    if zkind == "xlsx":
        return [load_xlsx(data, shown, table_fit)]
    if zkind == "odt":
        return [load_odt(data, shown)]
    if zkind == "epub":
        return [load_epub(data, shown)]
    if zkind == "office":
        raise LoadError(f"{shown}: this is an office or e-book file of a kind that is not supported (.docx, .pptx, "
                        ".xlsx, .odt and .epub are). Save it as one of those or as PDF and upload that.")
    if zkind == "zip":
        raise LoadError(f"{shown}: this is a zip archive, not a single document. Upload it as a .zip so its "
                        "files are loaded one by one (in code: expand it with ingest.archive.iter_archive).")
    if zkind == "broken":
        if suffix in _RESAVE:
            raise LoadError(f"{shown}: the .{suffix} file is damaged (its zip structure cannot be read). "
                            f"{_RESAVE[suffix]}")
        raise LoadError(f"{shown}: the zip archive is damaged or truncated. Create it again and upload it.")

    if suffix in _CONTAINERS:
        what = binary_kind(data)
        looks = f" (it looks like {what[0]})" if what else ""
        raise LoadError(f"{shown}: the name ends in .{suffix} but the file is not {_CONTAINERS[suffix]}{looks}. "
                        "Check that you picked the right file; export the document again if needed.")

    if data.startswith(GZIP_MAGIC):
        inner_name = name[:-3] if name.lower().endswith(".gz") else name
        inner = gunzip(data, shown)
        if not inner.strip():
            raise LoadError(f"{shown}: the compressed file is empty. Check that you picked the right file.")
        if is_pdf(inner) or inner.startswith(ZIP_MAGIC) or inner.startswith(GZIP_MAGIC):
            raise LoadError(f"{shown}: only text files (such as a BEIR corpus.jsonl) may be gzip-compressed. "
                            "Decompress it and upload the file inside.")
        docs = _load_text_kinds(inner, shown, _suffix(inner_name), len(data), table_fit)
        for d in docs:
            d.metadata["compression"] = "gzip"
        return docs

    what = binary_kind(data)
    if what:
        raise LoadError(f"{shown}: this is {what[0]}, not a document. {what[1]}")
    return _load_text_kinds(data, shown, suffix, len(data), table_fit)


def _load_text_kinds(data: bytes, shown: str, suffix: str, nbytes: int,
                     table_fit: TableFit | None = None) -> list[Document]:
    """CSV, reStructuredText, source code, BEIR jsonl, HTML, Markdown or plain text: the suffix decides, else
    the content."""
    if suffix in _TABLE_SUFFIXES or suffix in _RST_SUFFIXES or suffix in LANGUAGES:
        text, enc = decode(data, shown)
        if not text.strip():
            raise LoadError(f"{shown}: the file has no text (only whitespace). Check that you picked the right file.")
        if suffix in _TABLE_SUFFIXES:
            return [load_csv(text, shown, nbytes, enc, suffix, table_fit)]
        text = normalise_newlines(text)
        if suffix in _RST_SUFFIXES:
            return [load_rst(text, shown, nbytes, enc)]
        return [load_code(text, shown, nbytes, enc, suffix)]
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
