"""HTML: visible text only (scripts, hidden elements and attributes are dropped); h1-h6 become sections."""
from __future__ import annotations

import logging
import re

from rag.types import Document

from .common import LoadError, heading_sections
from .text import SAMPLE, binary_error

log = logging.getLogger(__name__)

_HTML_START = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
                         rb"<(?:!doctype\s+html|html|head|body|div|p|h[1-6]|table|section|article|main)[\s>]",
                         re.IGNORECASE | re.DOTALL)
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
_BOMS = {0xFEFF: None, 0xFFFE: None}  # U+FEFF, and U+FFFE: a big-endian BOM that was read as little-endian


def looks_like_html(head: bytes) -> bool:
    """The file starts with a doctype or a common HTML element (for files whose name does not say .html)."""
    return bool(_HTML_START.match(head))


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


def load_html(data: bytes, shown: str, nbytes: int) -> Document:
    try:
        from bs4 import BeautifulSoup, Tag
        from bs4.element import NavigableString, PreformattedString
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("beautifulsoup4 is not installed: `pip install beautifulsoup4 lxml`.") from None
    if b"\x00" in data[:SAMPLE] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise binary_error(shown)
    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception as e:  # lxml/bs4 raise many kinds of errors on hostile input
        log.debug("%s: HTML parser failed: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the HTML could not be parsed (it is malformed or not really HTML). "
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
    if not text.translate(_BOMS).strip():  # a file holding only a byte-order mark has no text either
        raise LoadError(f"{shown}: the HTML page has no visible text (it may be built by JavaScript). "
                        "Save the rendered page as PDF, or copy its text, and upload that.")
    sections = heading_sections(heads, len(text))
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
