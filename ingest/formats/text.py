"""Plain text: byte-order marks, UTF-8, legacy code pages, and telling text from binary data."""
from __future__ import annotations

import unicodedata

from rag.types import Document

from .common import LoadError

BOMS = [
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
]
SAMPLE = 65536  # characters (or bytes) inspected at a time when sniffing
_OK_CONTROLS = set("\t\n\r\f\v\x1b")


def head_as_utf8(data: bytes, n: int = 4096) -> bytes:
    """The first ``n`` bytes, re-encoded as UTF-8 when a BOM says UTF-16/32 (for sniffing HTML and JSON)."""
    head = data[:n]
    for bom, enc in BOMS:
        if head.startswith(bom):
            return head[len(bom):].decode(enc, errors="ignore").encode("utf-8")
    return head


def looks_binary(text: str) -> bool:
    """Too many control, unassigned or replacement characters for a text file."""
    samples = [text[:SAMPLE]]
    if len(text) > 2 * SAMPLE:
        mid = len(text) // 2
        samples += [text[mid:mid + SAMPLE], text[-SAMPLE:]]
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


def binary_error(shown: str) -> LoadError:
    return LoadError(f"{shown}: the file looks binary, not like text or a supported document (PDF, Office, "
                     "OpenDocument, EPUB, HTML, Markdown, reStructuredText, CSV, source code, text, BEIR jsonl). "
                     "Check that you picked the right file; if it is UTF-16 text, save it with a byte-order mark "
                     "or as UTF-8.")


def decode(data: bytes, shown: str) -> tuple[str, str]:
    """Bytes → (text, encoding). BOM first, then strict UTF-8, then charset-normalizer."""
    for bom, enc in BOMS:
        if data.startswith(bom):
            text = data[len(bom):].decode(enc, errors="replace")
            if looks_binary(text):
                raise binary_error(shown)
            return text, enc
    if b"\x00" in data[:SAMPLE]:
        raise binary_error(shown)
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
                raise binary_error(shown) from None
            text, enc = str(best), best.encoding
    if looks_binary(text):
        raise binary_error(shown)
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
    sample = text[:SAMPLE]
    letters = sum(c.isalpha() for c in sample)
    accented = sum(c.isalpha() and c > "\x7f" for c in sample)
    if letters == 0 or accented > 0.25 * letters:
        return None
    return text


def load_text(text: str, shown: str, nbytes: int, encoding: str) -> Document:
    """Decoded, newline-normalised text as one document without sections."""
    return Document(shown, shown, text, "", [], {"format": "text", "bytes": nbytes, "encoding": encoding})
