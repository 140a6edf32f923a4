"""Markdown: the text is kept as written; ATX (``# x``) and setext headings become sections."""
from __future__ import annotations

import re

from rag.types import Document, Section

from .text import SAMPLE

_MD_HINT = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_MD_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def looks_like_markdown(text: str) -> bool:
    """An ATX heading near the start (for files whose name does not say .md)."""
    return bool(_MD_HINT.search(text[:SAMPLE]))


def load_markdown(text: str, shown: str, nbytes: int, encoding: str) -> Document:
    """Decoded, newline-normalised Markdown; the title is the first heading."""
    sections = markdown_sections(text)
    title = next((s.heading for s in sections if s.heading), "")
    return Document(shown, shown, text, title, sections,
                    {"format": "markdown", "bytes": nbytes, "encoding": encoding})


def markdown_sections(text: str) -> list[Section]:
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
        elif prev is not None and _MD_SETEXT.match(body):
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
