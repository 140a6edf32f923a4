"""What every format module shares: ``LoadError``, the name's suffix, newline normalisation and sections
from heading offsets."""
from __future__ import annotations

from rag.errors import HybridRagError
from rag.types import Section


class LoadError(HybridRagError, ValueError):
    """A file could not be turned into documents. The message says why and how to fix it."""


def suffix(name: str) -> str:
    """The name's format hint: ``"pdf"``, ``"md"``... (``"jsonl.gz"`` for compressed BEIR corpora)."""
    lower = name.lower()
    if lower.endswith((".jsonl.gz", ".ndjson.gz")):
        return "jsonl.gz"
    return lower.rsplit(".", 1)[-1] if "." in lower else ""


def normalise_newlines(text: str) -> str:
    """``\\r\\n`` and ``\\r`` → ``\\n``."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def table_text(rows) -> str:
    """Rows of cells (objects with ``.text``: python-docx and python-pptx cells) as ``a | b`` lines; merged
    cells, which repeat their text, count once."""
    lines = []
    for row in rows:
        cells: list[str] = []
        for cell in row.cells:
            c = " ".join(cell.text.split())
            if c and (not cells or cells[-1] != c):
                cells.append(c)
        if cells:
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def heading_sections(heads: list[tuple[int, str]], length: int) -> list[Section]:
    """Sections from ``(offset, heading)`` pairs in text order: each heading runs to the next one (the last to
    ``length``); text before the first heading is a section of its own, with no heading."""
    sections: list[Section] = []
    if heads and heads[0][0] > 0:
        sections.append(Section(0, heads[0][0], None, None))
    for i, (s, h) in enumerate(heads):
        sections.append(Section(s, heads[i + 1][0] if i + 1 < len(heads) else length, None, h))
    return sections
