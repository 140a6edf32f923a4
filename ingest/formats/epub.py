"""EPUB e-books (ebooklib): the chapters in reading (spine) order, each through the HTML loader.

So a chapter keeps only its visible text (scripts, styles, hidden elements and attributes are dropped, as for
any uploaded page), and its h1-h6 become sections; a chapter without headings is headed by its entry in the
table of contents. Chapters without visible text (a cover picture) are left out. A DRM-protected book (its
chapters listed in ``META-INF/encryption.xml``) is refused with that reason; obfuscated fonts are fine.
"""
from __future__ import annotations

import io
import logging
import posixpath
import re

from rag.types import Document, Section

from .common import LoadError
from .container import open_container, read_part
from .html import load_html

log = logging.getLogger(__name__)

WHAT = ".epub e-book"
RESAVE = "Convert it again (for example with Calibre) and upload the new file, or export it as PDF."
_XMLENC = "http://www.w3.org/2001/04/xmlenc#"
_FONTS = (".otf", ".ttf", ".woff", ".woff2", ".eot")
MAX_TOC_ENTRIES = 100_000
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]{0,200}\?>")  # XHTML goes to the HTML loader as HTML


def load_epub(data: bytes, shown: str) -> Document:
    try:
        from ebooklib import ITEM_DOCUMENT, epub
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("ebooklib is not installed: `pip install ebooklib`.") from None
    with open_container(data, shown, WHAT, RESAVE) as zf:
        if _drm(read_part(zf, "META-INF/encryption.xml", shown, WHAT, RESAVE)):
            raise LoadError(f"{shown}: the {WHAT} is protected by DRM (its chapters are encrypted), so its text "
                            "cannot be read. Upload a DRM-free copy of the book.")
    try:
        book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
        chapters = []
        for idref, _linear in book.spine:
            item = book.get_item_with_id(idref)
            if item is not None and item.get_type() == ITEM_DOCUMENT and not isinstance(item, epub.EpubNav):
                chapters.append((item.get_name(), _XML_DECL.sub(b"", item.get_content(), count=1)))
        toc = _toc_titles(book.toc)
        meta_title = book.get_metadata("DC", "title")
    except Exception as e:  # ebooklib raises many kinds of errors on damaged files
        log.debug("%s: ebooklib cannot read the file: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the {WHAT} is damaged (its contents cannot be read). {RESAVE}") from None
    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    for name, content in chapters:
        try:
            chapter = load_html(content, shown, len(content))
        except LoadError:  # no visible text (a cover image, a blank page): nothing to add
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        secs = chapter.sections or [Section(0, len(chapter.text), None, None)]
        fallback = toc.get(name) or chapter.title or None
        for s in secs:
            heading = s.heading if s.heading else (fallback if s.start == 0 else None)
            sections.append(Section(pos + s.start, pos + s.end, None, heading))
        parts.append(chapter.text)
        pos += len(chapter.text)
    text = "".join(parts)
    if not text.strip():
        raise LoadError(f"{shown}: the {WHAT} has no text (its pages may be pictures). Check that you picked the "
                        "right file.")
    title = ""
    if meta_title:
        title = " ".join(str(meta_title[0][0] or "").split())
    title = title or next((s.heading for s in sections if s.heading), "")
    return Document(shown, shown, text, title, sections,
                    {"format": "epub", "bytes": len(data), "chapters": len(chapters)})


def _drm(encryption: bytes | None) -> bool:
    """True when ``META-INF/encryption.xml`` lists anything but fonts (fonts are only obfuscated)."""
    if not encryption:
        return False
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=True)
    try:
        root = etree.fromstring(encryption, parser)
    except Exception:  # unreadable: ebooklib decides whether the book opens
        return False
    if root is None:
        return False
    uris = [el.get("URI", "") for el in root.iter(f"{{{_XMLENC}}}CipherReference")]
    return any(not u.lower().endswith(_FONTS) for u in uris)


def _toc_titles(toc) -> dict[str, str]:
    """Chapter file (as ebooklib names items) -> its title in the table of contents (the first one)."""
    out: dict[str, str] = {}
    stack = list(reversed(list(toc or [])))
    seen = 0
    while stack and seen < MAX_TOC_ENTRIES:
        seen += 1
        entry = stack.pop()
        if isinstance(entry, (tuple, list)):
            stack.extend(reversed(list(entry)))
            continue
        href, title = getattr(entry, "href", None), getattr(entry, "title", None)
        if href and title:
            name = posixpath.normpath(str(href).split("#", 1)[0])
            out.setdefault(name, " ".join(str(title).split()))
    return out
