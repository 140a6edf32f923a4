"""PDF (pypdf): the text layer of each page; one ``Section`` per page."""
from __future__ import annotations

import io
import logging

from rag.types import Document, Section

from .common import LoadError, normalise_newlines

log = logging.getLogger(__name__)


def load_pdf(data: bytes, shown: str) -> Document:
    try:
        import pypdf
        from pypdf.errors import DependencyError, FileNotDecryptedError
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
    except Exception as e:  # pypdf raises many exception types on damaged files
        log.debug("%s: pypdf cannot read the PDF: %s: %s", shown, type(e).__name__, e)
        raise LoadError(damaged) from None
    if n_pages == 0:
        raise LoadError(damaged if b"/Page" not in data else
                        f"{shown}: the PDF has no pages. Re-export it and upload it again.")
    texts: list[str] = []
    failed = 0
    for i, page in enumerate(pages, start=1):
        try:
            t = page.extract_text() or ""
        except Exception as e:  # one bad page must not lose the others
            log.debug("%s: page %d is unreadable: %s: %s", shown, i, type(e).__name__, e)
            t, failed = "", failed + 1
        t = normalise_newlines(t.replace("\x00", "")).strip("\n")
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
    metadata = {"format": "pdf", "bytes": len(data), "pages": n_pages}
    if failed:
        metadata["unreadable_pages"] = failed
    return Document(shown, shown, "".join(parts), _title(reader), sections, metadata)


def _title(reader) -> str:
    """The document-information title, whitespace collapsed; "" when absent or unreadable."""
    try:
        meta = reader.metadata
        if meta is not None and meta.title:
            return " ".join(str(meta.title).split())
    except Exception:  # a damaged info dictionary only costs the title
        pass
    return ""
