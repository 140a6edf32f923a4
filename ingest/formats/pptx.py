"""PowerPoint .pptx (python-pptx): one ``Section`` per slide, headed ``"Slide 3: Title"``.

A slide's text is its title, then the text of its shapes in the slide's order (text boxes and placeholders,
tables as ``a | b`` rows, groups opened), then its speaker notes after ``Notes:``. Slides without text
are left out; the numbers stay those of the deck.
"""
from __future__ import annotations

import io
import logging

from rag.types import Document, Section

from .common import LoadError, normalise_newlines, table_text
from .container import open_container

log = logging.getLogger(__name__)

WHAT = ".pptx presentation"
RESAVE = ("Open it in PowerPoint or LibreOffice Impress, save it again, and upload the new file "
          "(or export it as PDF).")
MAX_GROUP_DEPTH = 32


def load_pptx(data: bytes, shown: str) -> Document:
    try:
        import pptx
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("python-pptx is not installed: `pip install python-pptx`.") from None
    open_container(data, shown, WHAT, RESAVE).close()
    try:
        prs = pptx.Presentation(io.BytesIO(data))
        slides = list(prs.slides)
    except Exception as e:  # python-pptx and lxml raise many kinds of errors on damaged files
        log.debug("%s: python-pptx cannot read the file: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the {WHAT} is damaged (its contents cannot be read). {RESAVE}") from None
    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    for number, slide in enumerate(slides, start=1):
        try:
            title, body = _slide_text(slide)
        except Exception as e:  # one strange slide must not lose the others
            log.debug("%s: slide %d is unreadable: %s: %s", shown, number, type(e).__name__, e)
            continue
        text = "\n\n".join(p for p in [title, *body] if p)
        if not text:
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        heading = f"Slide {number}: {' '.join(title.split())[:120]}" if title else f"Slide {number}"
        sections.append(Section(pos, pos + len(text), None, heading))
        parts.append(text)
        pos += len(text)
    text = "".join(parts)
    if not text.strip():
        raise LoadError(f"{shown}: the presentation has no text (its slides may be pictures). Export it as PDF, "
                        "run OCR on it (e.g. `ocrmypdf in.pdf out.pdf`) and upload that.")
    sections = [Section(s.start, sections[i + 1].start if i + 1 < len(sections) else len(text), None, s.heading)
                for i, s in enumerate(sections)]
    title = ""
    try:
        title = " ".join((prs.core_properties.title or "").split())
    except Exception:  # a damaged core-properties part only costs the title
        pass
    if not title:
        title = next((s.heading.split(": ", 1)[1] for s in sections if ": " in s.heading), "")
    return Document(shown, shown, text, title, sections, {"format": "pptx", "bytes": len(data),
                                                            "slides": len(slides)})


def _clean(text: str) -> str:
    return normalise_newlines(text.replace("\v", "\n").replace("\x00", "")).strip()


def _slide_text(slide) -> tuple[str, list[str]]:
    from pptx.shapes.group import GroupShape

    title_shape = slide.shapes.title
    title = _clean(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
    body: list[str] = []
    stack = [(s, 0) for s in reversed(list(slide.shapes))]
    while stack:
        shape, depth = stack.pop()
        if title_shape is not None and shape.shape_id == title_shape.shape_id and depth == 0:
            continue
        if isinstance(shape, GroupShape):
            if depth < MAX_GROUP_DEPTH:
                stack.extend((s, depth + 1) for s in reversed(list(shape.shapes)))
            continue
        if getattr(shape, "has_table", False) and shape.has_table:
            text = table_text(shape.table.rows)
            if text:
                body.append(text)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            t = _clean(shape.text_frame.text)
            if t:
                body.append(t)
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = _clean(frame.text) if frame is not None else ""
        if notes:
            body.append("Notes: " + notes)
    return title, body
