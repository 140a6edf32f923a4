"""Tables kept as tables (spreadsheets, CSV): Markdown-style rows in blocks that each start with the header.

A table becomes::

    | Region | Q1 | Q2 |
    | - | - | - |
    | North | 10 | 12 |
    ...

cut into blocks of whole rows, each block starting with the header and its ``| - |`` line, blocks apart by a
blank line. Each block is one ``Section`` (heading ``"Sheet Budget, rows 2-41"``) sized to fit one chunk, and
``chunk_table`` chunks a table document block by block, so every chunk carries the header. How large a block
may be is a ``TableFit``: the pipeline passes ``token_fit(tokenizer, chunk_tokens)``; without one, blocks are
sized by ``estimate_tokens`` against the default 200-token chunk. The one exception: a single row larger than
a chunk is still cut by the chunker, and the pieces after the first lack the header.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from rag.types import Chunk, Document, Section

from .common import LoadError

MAX_COLUMNS = 16_384           # Excel's own limit; a row with more is not a table
MAX_CELL_CHARS = 32_767        # Excel's own limit for one cell
DEFAULT_CHUNK_TOKENS = 200     # configs/default.yaml chunking.chunk_tokens
_COUNT_BATCH = 2048            # rows measured per tokenizer call
_BLOCK_BATCH = 256             # blocks measured per tokenizer call

_PIECES = re.compile(r"\w+|[^\w\s]")
_CELL_WS = re.compile(r"\s+")


def estimate_tokens(texts: list[str]) -> list[int]:
    """A tokenizer-free size: words, numbers and punctuation marks count one each, long words more."""
    return [sum(1 + len(p) // 6 for p in _PIECES.findall(t)) for t in texts]


@dataclass(frozen=True)
class TableFit:
    """``count(texts)`` gives each text's size in tokens; a block (header + rows) holds at most ``limit``."""

    count: Callable[[list[str]], list[int]] = estimate_tokens
    limit: int = DEFAULT_CHUNK_TOKENS
    additive: bool = False   # lines joined by "\n" count exactly their sum (no block needs measuring again)


def token_fit(tokenizer, chunk_tokens: int) -> TableFit:
    """Blocks sized in the embedder's tokenizer, one chunk each (``ingest.chunking`` counts the same way)."""
    # WordPiece behind a whitespace pre-tokenizer (MiniLM): the counts of lines add up to the block's
    from ..chunking import _separable

    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        enc = tokenizer(texts, add_special_tokens=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    return TableFit(count, chunk_tokens, additive=_separable(tokenizer))


def cell_text(value) -> str:
    """One cell as table text: whitespace collapsed, ``|`` escaped, at most ``MAX_CELL_CHARS``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        s = "TRUE" if value else "FALSE"
    elif isinstance(value, float):
        s = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    elif hasattr(value, "isoformat"):
        s = value.isoformat()
        if s.endswith("T00:00:00"):
            s = s[:-9]
    else:
        s = str(value)
    s = _CELL_WS.sub(" ", s[:MAX_CELL_CHARS]).strip()
    return s.replace("|", "\\|").replace("\x00", "")


def _line(cells: list[str], width: int) -> str:
    cells = cells + [""] * (width - len(cells))
    return "| " + " | ".join(cells) + " |"


@dataclass
class _Table:
    label: str                           # "Sheet Budget" or "" (a CSV)
    header: list[str]
    header_row: int
    rows: list[tuple[int, list[str]]]    # (row number as the user counts it, cells)


class TableText:
    """Builds a table document's text and sections, table by table (one per sheet)."""

    def __init__(self, fit: TableFit | None):
        self.fit = fit or TableFit()
        self.parts: list[str] = []
        self.pos = 0
        self.sections: list[Section] = []
        self.rows = 0

    def add(self, label: str, rows: Iterable[tuple[int, list[str]]]) -> None:
        """One table: ``rows`` are (row number, cell texts); the first non-empty row is the header."""
        header: list[str] | None = None
        header_row = 0
        body: list[tuple[int, list[str]]] = []
        for n, cells in rows:
            while cells and not cells[-1]:
                cells = cells[:-1]
            if not cells:
                continue
            if header is None:
                header, header_row = cells, n
            else:
                body.append((n, cells))
        if header is None:
            return
        self._emit(_Table(label, header, header_row, body))

    def _emit(self, t: _Table) -> None:
        width = max([len(t.header)] + [len(c) for _, c in t.rows])
        head = _line(t.header, width) + "\n" + _line(["-"] * width, width)
        lines = [_line(c, width) for _, c in t.rows]
        if not lines:
            self._block(t.label, head, 0, t.header_row, t.header_row)
            return
        sizes = self.fit.count([head])
        for i in range(0, len(lines), _COUNT_BATCH):  # a bounded number of encodings at a time
            sizes += self.fit.count(lines[i:i + _COUNT_BATCH])
        budget = self.fit.limit - sizes[0]
        ranges: list[tuple[int, int]] = []
        start = 0
        while start < len(lines):  # greedy: as many whole rows as the sum of their sizes allows
            end, used = start + 1, sizes[1 + start]
            while end < len(lines) and used + sizes[1 + end] <= budget:
                used += sizes[1 + end]
                end += 1
            ranges.append((start, end))
            start = end
        for start, end in ranges if self.fit.additive else self._verified(head, lines, ranges):
            self._block(t.label, head + "\n" + "\n".join(lines[start:end]), end - start,
                        t.rows[start][0], t.rows[end - 1][0])

    def _verified(self, head: str, lines: list[str], ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The ranges, each block measured as one text (sizes need not add up) and halved until it fits."""
        ok: list[tuple[int, int]] = []
        while ranges:
            split: list[tuple[int, int]] = []
            for i in range(0, len(ranges), _BLOCK_BATCH):
                batch = ranges[i:i + _BLOCK_BATCH]
                counts = self.fit.count([head + "\n" + "\n".join(lines[a:b]) for a, b in batch])
                for (a, b), n in zip(batch, counts):
                    if n > self.fit.limit and b - a > 1:
                        split += [(a, (a + b) // 2), ((a + b) // 2, b)]
                    else:
                        ok.append((a, b))
            ranges = split
        return sorted(ok)

    def _block(self, label: str, block: str, rows: int, first: int, last: int) -> None:
        if self.parts:
            self.parts.append("\n\n")
            self.pos += 2
        where = f"row {first}" if first == last else f"rows {first}-{last}"
        heading = f"{label}, {where}" if label else where[:1].upper() + where[1:]
        self.sections.append(Section(self.pos, self.pos + len(block), None, heading))
        self.parts.append(block)
        self.pos += len(block)
        self.rows += rows

    def text(self) -> str:
        return "".join(self.parts)


def table_document(shown: str, tables: TableText, fmt: str, nbytes: int, title: str = "", **meta) -> Document:
    text = tables.text()
    if not text.strip():
        raise LoadError(f"{shown}: the {'spreadsheet' if fmt == 'xlsx' else 'file'} has no cells with text. "
                        "Check that you picked the right file.")
    # sections touch: a chunk of a block never starts in the blank line before the next one
    secs = tables.sections
    sections = [Section(s.start, secs[i + 1].start if i + 1 < len(secs) else len(text), None, s.heading)
                for i, s in enumerate(secs)]
    metadata = {"format": fmt, "bytes": nbytes, "table": True, "rows": tables.rows, **meta}
    return Document(shown, shown, text, title, sections, metadata)


def is_table(doc: Document) -> bool:
    return bool(doc.metadata.get("table"))


def chunk_table(doc: Document, tokenizer, *, chunk_tokens: int = 200, overlap_tokens: int = 40) -> list[Chunk]:
    """Chunks of a table document, block by block: a block that fits is one chunk, so each starts with the
    header. A block larger than a chunk (one over-long row) is cut by ``chunk_document`` like any text."""
    from ..chunking import chunk_document

    count = token_fit(tokenizer, chunk_tokens).count
    chunks: list[Chunk] = []

    def add(start: int, end: int, sec: Section) -> None:
        chunks.append(Chunk(id=f"{doc.doc_id}#{len(chunks)}", doc_id=doc.doc_id, source=doc.source,
                            text=doc.text[start:end], start=start, end=end, page=sec.page, heading=sec.heading,
                            title=doc.title))

    sections = doc.sections
    for i in range(0, len(sections), _BLOCK_BATCH):
        batch = sections[i:i + _BLOCK_BATCH]
        for sec, n in zip(batch, count([doc.text[s.start:s.end] for s in batch])):
            text = doc.text[sec.start:sec.end]
            lead = len(text) - len(text.lstrip())
            body = text.strip()
            if not body:
                continue
            if n <= chunk_tokens:
                add(sec.start + lead, sec.start + lead + len(body), sec)
                continue
            part = Document(doc.doc_id, doc.source, text, doc.title)
            for c in chunk_document(part, tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens):
                add(sec.start + c.start, sec.start + c.end, sec)
    return chunks
