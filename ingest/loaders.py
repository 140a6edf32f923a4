"""Bytes + a file name → ``Document`` objects.

The format is sniffed from the bytes; the name's suffix is only a hint for the text kinds
(Markdown, HTML, BEIR ``jsonl``, plain text). Everything that can go wrong with a user's file is
reported as a ``LoadError`` whose message names the file, says what is wrong and what to do.

Formats: PDF (pypdf; one ``Section`` per page), DOCX (python-docx; one ``Section`` per heading),
HTML (BeautifulSoup + lxml; visible text only, h1-h6 as sections), Markdown (``#`` and setext
headings as sections, text kept as-is), plain text (BOM, UTF-8, then charset-normalizer), BEIR
``corpus.jsonl`` / ``.jsonl.gz`` (one ``Document`` per line). ``.zip`` archives are not documents:
expand them with ``iter_archive`` and load each member.

In every loaded text, line ends are normalised to ``"\\n"``; section offsets refer to that text.
"""
from __future__ import annotations

import io
import json
import re
import stat
import unicodedata
import zipfile
import zlib
from typing import Iterator

from rag.types import Document, Section

__all__ = ["LoadError", "load", "iter_archive", "is_archive", "safe_name"]


class LoadError(ValueError):
    """A file could not be turned into documents. The message says why and how to fix it."""


# --------------------------------------------------------------------------------------------
# names

MAX_NAME_CHARS = 150  # leaves room for prefixes (archive member paths, "(2)") under the 255-byte limit
_MAX_EXT_CHARS = 16
_UNSAFE_CHARS = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                     *(f"lpt{i}" for i in range(10))}


def safe_name(name: str) -> str:
    """A file name that is safe to show and to use as a file name.

    Keeps only the last path component (``../``, absolute paths, drive letters and backslashes go),
    removes control and format characters (NUL, bidi overrides), replaces characters Windows forbids,
    strips leading dots and trailing dots/spaces, limits the length to ``MAX_NAME_CHARS`` while
    keeping the extension, and never returns an empty string (``"unnamed"``).
    """
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\t\n\r\v\f]+", " ", name)
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():  # "C:file.txt"
        name = name[2:]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn")
                   and c not in "\u2028\u2029")
    name = _UNSAFE_CHARS.sub("_", name)
    name = " ".join(name.split())  # no tabs/newlines/odd spaces; single spaces
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return "unnamed"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > _MAX_EXT_CHARS or " " in ext:
        stem, dot, ext = name, "", ""
    if stem.lower() in _WINDOWS_RESERVED:
        stem = "_" + stem
    if len(stem) + len(dot) + len(ext) > MAX_NAME_CHARS:
        stem = stem[: MAX_NAME_CHARS - len(dot) - len(ext)].rstrip(". ") or "unnamed"
    return f"{stem}{dot}{ext}"


def _suffix(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".jsonl.gz", ".ndjson.gz")):
        return "jsonl.gz"
    return lower.rsplit(".", 1)[-1] if "." in lower else ""


# --------------------------------------------------------------------------------------------
# sniffing

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_GZIP_MAGIC = b"\x1f\x8b"

# (magic, offset, what it is, what to do)
_BINARY_MAGIC: list[tuple[bytes, int, str, str]] = [
    (b"\x7fELF", 0, "an ELF executable", "Upload the document itself, not a program."),
    (b"\xfe\xed\xfa\xce", 0, "a Mach-O executable", "Upload the document itself, not a program."),
    (b"\xfe\xed\xfa\xcf", 0, "a Mach-O executable", "Upload the document itself, not a program."),
    (b"\xce\xfa\xed\xfe", 0, "a Mach-O executable", "Upload the document itself, not a program."),
    (b"\xcf\xfa\xed\xfe", 0, "a Mach-O executable", "Upload the document itself, not a program."),
    (b"\xca\xfe\xba\xbe", 0, "a Java class or Mach-O binary", "Upload the document itself, not a program."),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "an old Microsoft Office file (.doc/.xls/.ppt)",
     "Save it as .docx or PDF and upload that."),
    (b"{\\rtf", 0, "an RTF document", "Save it as .docx or PDF and upload that."),
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image", "Images are not indexed; upload a PDF with a text layer (run OCR first)."),
    (b"\xff\xd8\xff", 0, "a JPEG image", "Images are not indexed; upload a PDF with a text layer (run OCR first)."),
    (b"GIF87a", 0, "a GIF image", "Images are not indexed; upload a document with text."),
    (b"GIF89a", 0, "a GIF image", "Images are not indexed; upload a document with text."),
    (b"II*\x00", 0, "a TIFF image", "Images are not indexed; run OCR on it first (e.g. ocrmypdf)."),
    (b"MM\x00*", 0, "a TIFF image", "Images are not indexed; run OCR on it first (e.g. ocrmypdf)."),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive", "Repack it as a .zip and upload that."),
    (b"Rar!\x1a\x07", 0, "a RAR archive", "Repack it as a .zip and upload that."),
    (b"BZh", 0, "a bzip2 archive", "Decompress it (or repack it as .zip) and upload that."),
    (b"\xfd7zXZ\x00", 0, "an xz archive", "Decompress it (or repack it as .zip) and upload that."),
    (b"\x28\xb5\x2f\xfd", 0, "a zstd archive", "Decompress it (or repack it as .zip) and upload that."),
    (b"ustar", 257, "a tar archive", "Repack it as a .zip and upload that."),
    (b"SQLite format 3\x00", 0, "an SQLite database", "Export the text you need and upload that."),
    (b"\x00asm", 0, "a WebAssembly binary", "Upload the document itself, not a program."),
]


def _binary_kind(data: bytes) -> tuple[str, str] | None:
    for magic, off, what, fix in _BINARY_MAGIC:
        if data[off:off + len(magic)] == magic:
            return what, fix
    if data[:2] == b"MZ" and len(data) >= 0x40:  # DOS/Windows executable: MZ header pointing at "PE\0\0"
        pe = int.from_bytes(data[0x3C:0x40], "little")
        if data[pe:pe + 4] == b"PE\x00\x00" or b"This program cannot be run in DOS mode" in data[:512]:
            return "a Windows executable", "Upload the document itself, not a program."
    return None


def _is_pdf(data: bytes, suffix: str = "") -> bool:
    """``%PDF-`` at the start; readers accept junk before it (up to 1 KiB) only when the name says .pdf."""
    at = data.find(b"%PDF-", 0, 1024)
    return at >= 0 and (not data[:at].strip() or suffix == "pdf")


_ZIP_MAX_ENTRIES = 100_000


def _zip_entry_count(data: bytes) -> int | None:
    """Entries declared by the end-of-central-directory record (read before zipfile builds them all)."""
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if eocd < 0 or eocd + 22 > len(data):
        return None
    n = int.from_bytes(data[eocd + 10:eocd + 12], "little")
    loc = eocd - 20
    if n == 0xFFFF and loc >= 0 and data[loc:loc + 4] == b"PK\x06\x07":  # zip64
        off = int.from_bytes(data[loc + 8:loc + 16], "little")
        if data[off:off + 4] == b"PK\x06\x06":
            n = int.from_bytes(data[off + 32:off + 40], "little")
    return n


def _zip_kind(data: bytes) -> str | None:
    """'docx', 'office' (another zip-based document format), 'zip', 'broken' or None (not a zip)."""
    if not data.startswith(_ZIP_MAGIC):
        return None
    if (_zip_entry_count(data) or 0) > _ZIP_MAX_ENTRIES:
        return "zip"  # no document has that many parts; iter_archive refuses it without parsing it
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            mimetype = zf.read("mimetype")[:100] if "mimetype" in names else b""
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError, KeyError):
        return "broken"
    if "word/document.xml" in names:
        return "docx"
    if "[Content_Types].xml" in names or mimetype.startswith(b"application/") or "META-INF/MANIFEST.MF" in names:
        return "office"
    return "zip"


def is_archive(data: bytes, name: str) -> bool:
    """True for a zip archive that should be expanded with ``iter_archive`` (not a .docx or similar).

    A damaged zip counts as an archive unless the name says .docx, so that the caller gets
    ``iter_archive``'s error for it.
    """
    kind = _zip_kind(data)
    if kind == "broken":
        return _suffix(name) not in ("docx", "xlsx", "pptx", "odt", "epub")
    return kind == "zip"


# --------------------------------------------------------------------------------------------
# load

_NON_SPACE_BYTES = re.compile(rb"[^ \t\r\n\f\v]")
MAX_GUNZIP_BYTES = 1 << 30  # a .gz upload never expands past 1 GiB ...
MAX_GUNZIP_RATIO = 200.0    # ... nor past 200x its compressed size (text compresses 3-10x)
_DOCX_MAX_XML_BYTES = 256 << 20


def load(data: bytes, name: str) -> list[Document]:
    """Load one uploaded file. Raises ``LoadError`` with a message for the user."""
    data = bytes(data)
    shown = safe_name(name)
    suffix = _suffix(name)
    if not _NON_SPACE_BYTES.search(data):
        raise LoadError(f"{shown}: the file is empty. Check that you picked the right file and upload it again.")

    if _is_pdf(data, suffix):
        return [_load_pdf(data, shown)]

    zkind = _zip_kind(data)
    if zkind == "docx":
        return [_load_docx(data, shown)]
    if zkind == "office":
        raise LoadError(f"{shown}: this is an office or e-book file that is not supported (only .docx is). "
                        "Save it as .docx or PDF and upload that.")
    if zkind == "zip":
        raise LoadError(f"{shown}: this is a zip archive, not a single document. Upload it as a .zip so its "
                        "files are loaded one by one (in code: expand it with ingest.loaders.iter_archive).")
    if zkind == "broken":
        if suffix == "docx":
            raise LoadError(f"{shown}: the .docx file is damaged (its zip structure cannot be read). "
                            "Open it in Word or LibreOffice, save it again, and upload the new file.")
        raise LoadError(f"{shown}: the zip archive is damaged or truncated. Create it again and upload it.")

    if suffix in ("pdf", "docx"):
        what = _binary_kind(data)
        looks = f" (it looks like {what[0]})" if what else ""
        raise LoadError(f"{shown}: the name ends in .{suffix} but the file is not a "
                        f"{'PDF' if suffix == 'pdf' else 'Word .docx document'}{looks}. "
                        "Check that you picked the right file; export the document again if needed.")

    if data.startswith(_GZIP_MAGIC):
        inner_name = name[:-3] if name.lower().endswith(".gz") else name
        inner = _gunzip(data, shown)
        if not inner.strip():
            raise LoadError(f"{shown}: the compressed file is empty. Check that you picked the right file.")
        if _is_pdf(inner) or inner.startswith(_ZIP_MAGIC) or inner.startswith(_GZIP_MAGIC):
            raise LoadError(f"{shown}: only text files (such as a BEIR corpus.jsonl) may be gzip-compressed. "
                            "Decompress it and upload the file inside.")
        docs = _load_text_kinds(inner, shown, _suffix(inner_name), len(data))
        for d in docs:
            d.metadata["compression"] = "gzip"
        return docs

    what = _binary_kind(data)
    if what:
        raise LoadError(f"{shown}: this is {what[0]}, not a document. {what[1]}")
    return _load_text_kinds(data, shown, suffix, len(data))


def _gunzip(data: bytes, shown: str) -> bytes:
    cap = int(min(MAX_GUNZIP_BYTES, max(1 << 20, MAX_GUNZIP_RATIO * len(data))))
    out = bytearray()
    rest = data
    try:
        while rest.startswith(_GZIP_MAGIC):  # concatenated gzip members are one stream
            d = zlib.decompressobj(wbits=31)
            piece = rest
            while piece:
                out += d.decompress(piece, cap + 1 - len(out))
                if len(out) > cap:
                    raise LoadError(f"{shown}: expands to more than {cap >> 20} MiB "
                                    f"({MAX_GUNZIP_RATIO:.0f}x its size at most); it may be a decompression bomb. "
                                    "Split the corpus into smaller files, or decompress it and upload the file.")
                piece = d.unconsumed_tail
            if not d.eof:
                raise LoadError(f"{shown}: the gzip data is truncated. Download or compress it again.")
            rest = d.unused_data
    except zlib.error as e:
        raise LoadError(f"{shown}: the gzip data is damaged ({e}). Download or compress it again.") from None
    return bytes(out)


# --- text kinds -----------------------------------------------------------------------------

_BOMS = [
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
]
_SAMPLE = 65536
_OK_CONTROLS = set("\t\n\r\f\v\x1b")


def _looks_binary(text: str) -> bool:
    """Too many control, unassigned or replacement characters for a text file."""
    samples = [text[:_SAMPLE]]
    if len(text) > 2 * _SAMPLE:
        mid = len(text) // 2
        samples += [text[mid:mid + _SAMPLE], text[-_SAMPLE:]]
    for s in samples:
        if not s:
            continue
        bad = 0
        for c in s:
            if c < " " or "\x7f" <= c <= "\x9f":
                bad += c not in _OK_CONTROLS
            elif c == "\ufffd" or (c > "\u00ff" and unicodedata.category(c) in ("Cn", "Co", "Cs")):
                bad += 1
        if bad > max(2, 0.02 * len(s)):
            return True
    return False


def _binary_error(shown: str) -> LoadError:
    return LoadError(f"{shown}: the file looks binary, not like text or a supported document "
                     "(PDF, DOCX, HTML, Markdown, text, BEIR jsonl). Check that you picked the right file; "
                     "if it is UTF-16 text, save it with a byte-order mark or as UTF-8.")


def _decode(data: bytes, shown: str) -> tuple[str, str]:
    """Bytes → (text, encoding). BOM first, then strict UTF-8, then charset-normalizer."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            text = data[len(bom):].decode(enc, errors="replace")
            if _looks_binary(text):
                raise _binary_error(shown)
            return text, enc
    if b"\x00" in data[:_SAMPLE]:
        raise _binary_error(shown)
    try:
        text, enc = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        try:
            import charset_normalizer
        except ImportError:  # pragma: no cover - a hard dependency
            raise LoadError("charset-normalizer is not installed: `pip install charset-normalizer`.") from None
        western = _western(data)
        if western is not None:
            text, enc = western, "cp1252"
        else:
            best = charset_normalizer.from_bytes(data).best()
            if best is None:
                raise _binary_error(shown) from None
            text, enc = str(best), best.encoding
    if _looks_binary(text):
        raise _binary_error(shown)
    return text, enc


def _western(data: bytes) -> str | None:
    """The text as Windows-1252 (a superset of Latin-1's printable characters) when that is plausible.

    charset-normalizer cannot tell the Western single-byte code pages apart on short texts (it picks
    cp1257 for German). Western European text decoded as cp1252 has mostly ASCII letters; Cyrillic or
    Greek bytes decoded as cp1252 give words made only of accented letters, so those go on to
    charset-normalizer.
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    sample = text[:_SAMPLE]
    letters = sum(c.isalpha() for c in sample)
    accented = sum(c.isalpha() and c > "\x7f" for c in sample)
    if letters == 0 or accented > 0.25 * letters:
        return None
    return text


def _normalise_newlines(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


_HTML_START = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
                         rb"<(?:!doctype\s+html|html|head|body|div|p|h[1-6]|table|section|article|main)[\s>]",
                         re.IGNORECASE | re.DOTALL)
_MD_HINT = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.MULTILINE)


def _load_text_kinds(data: bytes, shown: str, suffix: str, nbytes: int) -> list[Document]:
    head = data[:4096]
    for bom, enc in _BOMS:  # sniff HTML in UTF-16/32 files too
        if head.startswith(bom):
            head = head[len(bom):].decode(enc, errors="ignore").encode("utf-8")
            break
    if suffix in ("jsonl", "jsonl.gz", "ndjson") or (suffix not in ("txt", "text", "md", "markdown", "html", "htm")
                                                     and _looks_like_beir(head)):
        text, _ = _decode(data, shown)
        return _load_beir(text, shown, nbytes)
    if suffix in ("html", "htm", "xhtml") or (suffix not in ("txt", "text", "md", "markdown")
                                              and _HTML_START.match(head)):
        return [_load_html(data, shown, nbytes)]
    text, enc = _decode(data, shown)
    text = _normalise_newlines(text)
    if not text.strip():
        raise LoadError(f"{shown}: the file has no text (only whitespace). Check that you picked the right file.")
    if suffix in ("md", "markdown") or (suffix not in ("txt", "text") and _MD_HINT.search(text[:_SAMPLE])):
        sections = _markdown_sections(text)
        title = next((s.heading for s in sections if s.heading), "")
        return [Document(shown, shown, text, title, sections,
                         {"format": "markdown", "bytes": nbytes, "encoding": enc})]
    return [Document(shown, shown, text, "", [], {"format": "text", "bytes": nbytes, "encoding": enc})]


def _looks_like_beir(head: bytes) -> bool:
    line = head.lstrip().split(b"\n", 1)[0]
    if not line.startswith(b"{"):
        return False
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    return isinstance(rec, dict) and "_id" in rec and "text" in rec


# --- BEIR jsonl ---------------------------------------------------------------------------

def _load_beir(text: str, shown: str, nbytes: int) -> list[Document]:
    docs: list[Document] = []
    seen: dict[str, int] = {}
    fix = "Fix or remove that line and upload the file again."
    for n, line in enumerate(io.StringIO(text), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise LoadError(f"{shown}: line {n} is not valid JSON ({e.msg} at column {e.colno}). {fix}") from None
        if not isinstance(rec, dict):
            raise LoadError(f"{shown}: line {n} is not a JSON object; a BEIR corpus has one "
                            '{"_id": ..., "title": ..., "text": ...} object per line. ' + fix)
        doc_id, body, title = rec.get("_id"), rec.get("text"), rec.get("title", "")
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool) or str(doc_id).strip() == "":
            raise LoadError(f'{shown}: line {n} has no "_id" (a non-empty string or integer). ' + fix)
        if not isinstance(body, str):
            raise LoadError(f'{shown}: line {n} has no "text" string. ' + fix)
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise LoadError(f'{shown}: line {n} has a "title" that is not a string. ' + fix)
        doc_id = str(doc_id)
        if doc_id in seen:
            raise LoadError(f'{shown}: line {n} repeats the "_id" {doc_id!r} of line {seen[doc_id]}; '
                            "document ids must be unique. Remove or rename one of them.")
        seen[doc_id] = n
        meta = {"format": "beir", "bytes": nbytes, "line": n}
        if isinstance(rec.get("metadata"), dict):
            meta["beir_metadata"] = rec["metadata"]
        docs.append(Document(_no_surrogates(doc_id), shown, _normalise_newlines(_no_surrogates(body)),
                             _no_surrogates(title).strip(), [], meta))
    if not docs:
        raise LoadError(f"{shown}: the corpus has no records. A BEIR corpus.jsonl has one "
                        '{"_id": ..., "title": ..., "text": ...} object per line.')
    return docs


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(s: str) -> str:
    """JSON escapes can produce lone surrogates, which cannot be encoded; replace them with U+FFFD."""
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


# --- Markdown -----------------------------------------------------------------------------

_MD_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _markdown_sections(text: str) -> list[Section]:
    """ATX (``# x``) and setext (``x`` over ``===``) headings outside fenced code blocks."""
    starts: list[tuple[int, str]] = []
    pos = 0
    fence: str | None = None
    prev: tuple[int, str] | None = None  # (offset, line) of the previous non-blank paragraph line
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        m = _MD_FENCE.match(body)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            prev = None
        elif m:
            fence, prev = m.group(1), None
        elif len(body) < 2000 and (h := _MD_ATX.match(body)):
            starts.append((pos, (h.group(2) or "").strip()))
            prev = None
        elif (s := _MD_SETEXT.match(body)) and prev is not None:
            starts.append((prev[0], prev[1].strip()))
            prev = None
        else:
            prev = (pos, body) if body.strip() and len(body) < 2000 and not body.startswith("    ") else None
        pos += len(line)
    starts.sort()
    sections: list[Section] = []
    if starts and text[:starts[0][0]].strip():
        sections.append(Section(0, starts[0][0], None, None))
    for i, (s, heading) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        sections.append(Section(s, end, None, heading or None))
    return sections


# --- HTML ---------------------------------------------------------------------------------

_HTML_DROP = ("script", "style", "noscript", "iframe", "template", "svg", "head", "object", "embed",
              "canvas", "math", "frame", "frameset", "applet", "audio", "video", "map", "button", "select",
              "input", "textarea", "meta", "link", "base")
_HTML_BLOCK = {"address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog",
               "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr",
               "html", "legend", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table",
               "tbody", "td", "tfoot", "th", "thead", "tr", "ul"}
_HTML_PARA = {"p", "pre", "blockquote", "table", "ul", "ol", "dl", "section", "article", "figure", "hr"}
_HTML_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_WS = re.compile(r"\s+")


class _TextWriter:
    """Appends text pieces with HTML-like whitespace collapsing and tracks the output offset."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.pending = 0  # 0 nothing, 1 space, 2 newline, 3 blank line
        self.at_start = True

    def brk(self, level: int) -> None:
        self.pending = max(self.pending, level)

    def text(self, s: str, pre: bool = False) -> int | None:
        """Write ``s``; returns the offset where its first visible character landed."""
        if not pre:
            if s[:1].isspace():
                self.pending = max(self.pending, 1)
            trailing = s[-1:].isspace()
            s = _WS.sub(" ", s).strip()
        else:
            trailing = False
        if not s:
            return None
        if not self.at_start and self.pending:
            sep = " " if self.pending == 1 else "\n" if self.pending == 2 else "\n\n"
            self.parts.append(sep)
            self.pos += len(sep)
        self.pending = 1 if trailing else 0
        self.at_start = False
        start = self.pos
        self.parts.append(s)
        self.pos += len(s)
        return start

    def value(self) -> str:
        return "".join(self.parts)


def _load_html(data: bytes, shown: str, nbytes: int) -> Document:
    try:
        from bs4 import BeautifulSoup, Tag
        from bs4.element import NavigableString, PreformattedString
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("beautifulsoup4 is not installed: `pip install beautifulsoup4 lxml`.") from None
    if b"\x00" in data[:_SAMPLE] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _binary_error(shown)
    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception as e:  # lxml/bs4 raise many kinds of errors on hostile input
        raise LoadError(f"{shown}: the HTML could not be parsed ({type(e).__name__}). "
                        "Save the page again (or as PDF) and upload that.") from None
    title_tag = soup.find("title")
    page_title = _WS.sub(" ", title_tag.get_text(" ")).strip() if title_tag else ""

    out = _TextWriter()
    heads: list[tuple[int, str]] = []
    pending_heading: str | None = None
    pre_depth = 0
    # Iterative depth-first walk: deeply nested hostile HTML must not hit the recursion limit.
    stack: list[tuple[bool, object]] = [(False, soup)]
    while stack:
        leaving, node = stack.pop()
        if leaving:
            pre_depth -= node.name == "pre"
            _close(node, out)
            continue
        if isinstance(node, Tag):
            name = node.name
            if name in _HTML_DROP or _hidden(node):
                continue  # invisible: neither its text nor its attributes are kept
            if name in _HTML_HEADINGS:
                out.brk(3)
                pending_heading = _heading_text(node) or None
            elif name == "br":
                out.brk(2)
            elif name in _HTML_BLOCK:
                out.brk(3 if name in _HTML_PARA else 2)
            elif name in ("td", "th"):
                out.brk(1)
            pre_depth += name == "pre"
            stack.append((True, node))
            stack.extend((False, c) for c in reversed(node.contents))
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            at = out.text(str(node), pre=pre_depth > 0)
            if at is not None and pending_heading is not None:
                heads.append((at, pending_heading))
                pending_heading = None
    text = out.value()
    if not text.strip():
        raise LoadError(f"{shown}: the HTML page has no visible text (it may be built by JavaScript). "
                        "Save the rendered page as PDF, or copy its text, and upload that.")
    sections: list[Section] = []
    if heads and heads[0][0] > 0:
        sections.append(Section(0, heads[0][0], None, None))
    for i, (s, h) in enumerate(heads):
        sections.append(Section(s, heads[i + 1][0] if i + 1 < len(heads) else len(text), None, h))
    title = page_title or (heads[0][1] if heads else "")
    return Document(shown, shown, text, title, sections, {"format": "html", "bytes": nbytes})


def _hidden(tag) -> bool:
    attrs = tag.attrs
    return bool(attrs) and ("hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true"
                            or bool(_HIDDEN_STYLE.search(str(attrs.get("style", "")))))


def _heading_text(tag) -> str:
    """Visible text of a heading (skipping scripts and hidden parts inside it)."""
    from bs4 import Tag
    from bs4.element import NavigableString, PreformattedString

    parts, stack = [], [tag]
    while stack:
        node = stack.pop()
        if isinstance(node, Tag):
            if node is tag or not (node.name in _HTML_DROP or _hidden(node)):
                stack.extend(reversed(node.contents))
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            parts.append(str(node))
    return _WS.sub(" ", "".join(parts)).strip()


def _close(tag, out: _TextWriter) -> None:
    name = tag.name
    if name in _HTML_HEADINGS or name in _HTML_PARA:
        out.brk(3)
    elif name in _HTML_BLOCK:
        out.brk(2)
    elif name in ("td", "th"):
        out.brk(1)


# --- PDF ----------------------------------------------------------------------------------

def _load_pdf(data: bytes, shown: str) -> Document:
    try:
        import pypdf
        from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("pypdf is not installed: `pip install pypdf`.") from None
    damaged = (f"{shown}: the PDF is damaged or truncated and cannot be read. "
               "Download it again or re-export it (e.g. print to PDF), then upload the new file.")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except DependencyError:
                raise LoadError(f"{shown}: the PDF is encrypted with AES; reading it needs the cryptography "
                                "package: `pip install cryptography`. Or save an unencrypted copy.") from None
            if not ok:
                raise LoadError(f"{shown}: the PDF is protected by a password. Save a copy without the password "
                                "(e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`) and upload that.")
        pages = reader.pages
        n_pages = len(pages)
    except LoadError:
        raise
    except FileNotDecryptedError:
        raise LoadError(f"{shown}: the PDF is protected by a password. Save a copy without the password "
                        "and upload that.") from None
    except (PdfReadError, Exception):  # pypdf raises many exception types on damaged files
        raise LoadError(damaged) from None
    if n_pages == 0:
        raise LoadError(damaged if b"/Page" not in data else
                        f"{shown}: the PDF has no pages. Re-export it and upload it again.")
    texts: list[str] = []
    failed = 0
    for page in pages:
        try:
            t = page.extract_text() or ""
        except Exception:  # one bad page must not lose the others
            t, failed = "", failed + 1
        t = _normalise_newlines(t.replace("\x00", "")).strip("\n")
        texts.append(t)
    if not any(t.strip() for t in texts):
        if failed == n_pages:
            raise LoadError(damaged)
        raise LoadError(f"{shown}: the PDF has no text layer (it is probably scanned). Run OCR on it first, "
                        "e.g. `ocrmypdf in.pdf out.pdf`, then upload it again.")
    parts, sections, pos = [], [], 0
    for i, t in enumerate(texts):
        if i:
            parts.append("\n\n")
            pos += 2
        sections.append(Section(pos, pos + len(t), i + 1, None))
        parts.append(t)
        pos += len(t)
    title = ""
    try:
        meta = reader.metadata
        if meta is not None and meta.title:
            title = " ".join(str(meta.title).split())
    except Exception:
        pass
    metadata = {"format": "pdf", "bytes": len(data), "pages": n_pages}
    if failed:
        metadata["unreadable_pages"] = failed
    return Document(shown, shown, "".join(parts), title, sections, metadata)


# --- DOCX ---------------------------------------------------------------------------------

def _load_docx(data: bytes, shown: str) -> Document:
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("python-docx is not installed: `pip install python-docx`.") from None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # python-docx trusts the zip: check it first
        total = sum(i.file_size for i in zf.infolist())
        if total > max(_DOCX_MAX_XML_BYTES, 0) or total > 200 * max(len(data), 1 << 16):
            raise LoadError(f"{shown}: the .docx expands to {total >> 20} MiB, which looks like a "
                            "decompression bomb. Save it again from Word or export it as PDF.")
    try:
        d = docx.Document(io.BytesIO(data))
        blocks = list(d.iter_inner_content()) if hasattr(d, "iter_inner_content") else list(d.paragraphs)
    except Exception as e:
        raise LoadError(f"{shown}: the .docx file is damaged ({type(e).__name__}). Open it in Word or "
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
                t = _normalise_newlines(block.text).strip()
                if not t:
                    continue
                style = (block.style.name if block.style is not None else "") or ""
                at = add(t)
                if style.lower().startswith(("heading", "title")):
                    heads.append((at, " ".join(t.split())))
            elif isinstance(block, Table):
                rows = []
                for row in block.rows:
                    cells = []
                    for cell in row.cells:
                        c = " ".join(cell.text.split())
                        if c and (not cells or cells[-1] != c):  # merged cells repeat their text
                            cells.append(c)
                    if cells:
                        rows.append(" | ".join(cells))
                if rows:
                    add("\n".join(rows))
        except Exception:  # a strange block must not lose the rest of the document
            continue
    text = "".join(parts).replace("\x00", "")
    if not text.strip():
        raise LoadError(f"{shown}: the .docx has no text. If it holds scanned pages, export it as PDF, "
                        "run OCR (e.g. ocrmypdf) and upload that.")
    sections: list[Section] = []
    if heads and heads[0][0] > 0:
        sections.append(Section(0, heads[0][0], None, None))
    for i, (s, h) in enumerate(heads):
        sections.append(Section(s, heads[i + 1][0] if i + 1 < len(heads) else len(text), None, h))
    title = ""
    try:
        title = " ".join((d.core_properties.title or "").split())
    except Exception:
        pass
    title = title or (heads[0][1] if heads else "")
    return Document(shown, shown, text, title, sections, {"format": "docx", "bytes": len(data)})


# --------------------------------------------------------------------------------------------
# archives

_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".git", ".svn"}
_READ_BLOCK = 1 << 16
RATIO_MIN_BYTES = 1 << 16  # members smaller than this are never refused for their ratio alone


def iter_archive(data: bytes, name: str, *, max_files: int, max_total_bytes: int,
                 max_ratio: float = 100.0, max_depth: int = 1) -> Iterator[tuple[str, bytes | LoadError]]:
    """Expand a .zip safely into ``(member name, bytes or LoadError)`` pairs.

    - Member names are flattened and made safe: ``folder/sub/a.txt`` → ``folder__sub__a.txt``;
      members of a nested zip get the nested zip's name as a prefix; duplicates get `` (2)``.
    - Sizes are checked against the headers *and* while decompressing (the headers are never
      trusted): a member that expands past the remaining ``max_total_bytes``, past ``max_ratio``
      times its compressed size (members over 64 KiB), or past its declared size is refused.
    - Zips inside the zip are expanded up to ``max_depth`` levels (0: never); deeper ones are refused.
    - Directories, symlinks and macOS/Windows junk (``__MACOSX/``, ``._*``, ``.DS_Store``) are skipped.
    - A bad member yields ``(name, LoadError)``; only a damaged archive as a whole raises
      ``LoadError`` (immediately, when this function is called).
    - At most ``max_files`` members are yielded; if there are more, one final
      ``(archive name, LoadError)`` says how many were left out. An archive with no files at all
      also yields one ``(archive name, LoadError)``.
    """
    if max_files < 1 or max_total_bytes < 1 or max_ratio <= 1 or max_depth < 0:
        raise ValueError("iter_archive needs max_files >= 1, max_total_bytes >= 1, max_ratio > 1 and max_depth >= 0")
    shown = safe_name(name)
    # entries are counted before zipfile builds one object per entry (folders and junk count too)
    zf = _open_zip(bytes(data), shown, max(10 * max_files, 1000))
    budget = {"bytes": max_total_bytes, "files": max_files, "skipped": 0}
    used: set[str] = set()

    def gen() -> Iterator[tuple[str, bytes | LoadError]]:
        yield from _walk_zip(zf, shown, "", 0, budget, used, max_ratio=max_ratio, max_depth=max_depth)
        if not used:
            yield shown, LoadError(f"{shown}: the archive holds no files (only folders or system files). "
                                   "Check that you zipped the right folder.")
        if budget["skipped"]:
            yield shown, LoadError(
                f"{shown}: the archive holds more than {max_files} files; {budget['skipped']} were not read. "
                "Split it into smaller archives and upload them one at a time.")

    return gen()


def _open_zip(data: bytes, shown: str, max_entries: int = _ZIP_MAX_ENTRIES) -> zipfile.ZipFile:
    n = _zip_entry_count(data)
    if n is not None and n > max_entries:
        raise LoadError(f"{shown}: the archive declares {n} entries, more than the {max_entries} allowed. "
                        "Split it into smaller archives and upload them one at a time.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        zf.infolist()
        return zf
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError, KeyError):
        raise LoadError(f"{shown}: the zip archive is damaged or truncated and cannot be opened. "
                        "Create the archive again and upload it.") from None


def _flat_name(member: str, prefix: str) -> str | None:
    """``a/b/c.txt`` → ``a__b__c.txt`` (made safe); None for junk entries."""
    parts = [p for p in member.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts or any(p in _JUNK_PARTS for p in parts) or parts[-1].startswith("._"):
        return None
    flat = "__".join(safe_name(p) for p in parts)
    return safe_name(f"{prefix}__{flat}" if prefix else flat)


def _unique(name: str, used: set[str]) -> str:
    if name not in used:
        used.add(name)
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    i = 2
    while True:
        cand = f"{stem} ({i}){dot}{ext}"
        if cand not in used:
            used.add(cand)
            return cand
        i += 1


def _walk_zip(zf: zipfile.ZipFile, shown: str, prefix: str, depth: int, budget: dict, used: set[str],
              *, max_ratio: float, max_depth: int) -> Iterator[tuple[str, bytes | LoadError]]:
    with zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename.endswith(("/", "\\")):
                continue
            flat = _flat_name(info.filename, prefix)
            if flat is None:
                continue
            if budget["files"] <= 0:
                budget["skipped"] += 1
                continue
            label = _unique(flat, used)
            budget["files"] -= 1
            mode = (info.external_attr >> 16) & 0xFFFF
            if info.create_system == 3 and stat.S_ISLNK(mode):
                yield label, LoadError(f"{label}: is a symbolic link inside the archive; links are not followed. "
                                       "Put the file itself into the archive.")
                continue
            if info.flag_bits & 0x1:
                yield label, LoadError(f"{label}: is password-protected inside the archive. "
                                       "Create the archive without a password and upload it again.")
                continue
            payload = _read_member(zf, info, label, budget, max_ratio)
            if isinstance(payload, LoadError):
                yield label, payload
                continue
            if payload.startswith(_ZIP_MAGIC) and _zip_kind(payload) in ("zip", "broken"):
                if depth + 1 > max_depth:
                    yield label, LoadError(
                        f"{label}: is a zip inside a zip nested deeper than {max_depth} level(s); it was not "
                        "expanded. Unpack the inner archive and upload its files (or the archive) directly.")
                    continue
                try:
                    inner = _open_zip(payload, label, max(10 * budget["files"], 1000))
                except LoadError as e:
                    yield label, e
                    continue
                inner_prefix = label[:-4] if label.lower().endswith(".zip") else label
                yield from _walk_zip(inner, label, inner_prefix, depth + 1, budget, used,
                                     max_ratio=max_ratio, max_depth=max_depth)
                continue
            yield label, payload


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, budget: dict,
                 max_ratio: float) -> bytes | LoadError:
    left = budget["bytes"]
    too_big = LoadError(f"{label}: the archive expands past its size limit ({_mib(left)} left of the "
                        "allowed total); it was not read. Split the archive and upload the parts separately.")
    ratio_cap = max(RATIO_MIN_BYTES, int(max_ratio * max(info.compress_size, 1)))
    bomb = LoadError(f"{label}: compresses more than {max_ratio:.0f}:1, which looks like a zip bomb; it was "
                     "not read. If it is a genuine file, upload it on its own rather than inside a zip.")
    if info.file_size > ratio_cap:
        return bomb
    if info.file_size > left:
        return too_big
    cap = min(left, ratio_cap, info.file_size)
    out = bytearray()
    try:
        with zf.open(info) as f:
            while True:
                block = f.read(_READ_BLOCK)
                if not block:
                    break
                out += block
                if len(out) > cap:
                    if len(out) > info.file_size:
                        return LoadError(f"{label}: expands to more than the size its header declares; the archive "
                                         "is damaged or malicious. Create it again and upload it.")
                    return bomb if len(out) > ratio_cap else too_big
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as e:
        return LoadError(f"{label}: cannot be extracted ({_short(e)}); the archive is damaged or uses an "
                         "unsupported compression method. Create it again (standard zip/deflate) and upload it.")
    budget["bytes"] -= len(out)
    return bytes(out)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _short(e: Exception) -> str:
    msg = str(e) or type(e).__name__
    return msg if len(msg) < 120 else msg[:117] + "..."
