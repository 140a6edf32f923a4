"""CSV and TSV (the csv module): the file is one table, in blocks that repeat its header row.

The text is decoded like any text file (BOM, UTF-8, then charset-normalizer; binary content is refused).
The delimiter is tab for ``.tsv``, else whichever of ``, ; TAB |`` splits the first lines most
consistently. Sections are headed ``"Rows 2-41"`` (records counted from the header, which is row 1).
"""
from __future__ import annotations

import csv
import io
from collections import Counter

from rag.types import Document

from .common import LoadError
from .table import MAX_COLUMNS, TableFit, TableText, cell_text, table_document

_CANDIDATES = (",", ";", "\t", "|")
_SNIFF_LINES = 50
_SNIFF_CHARS = 65536
_LONG_LINE = 1 << 18  # lines this long are checked for their number of fields before csv splits them


def load_csv(text: str, shown: str, nbytes: int, encoding: str, suffix: str, fit: TableFit | None = None) -> Document:
    delimiter = "\t" if suffix == "tsv" else sniff_delimiter(text)
    _check_long_lines(text, delimiter, shown)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    tables = TableText(fit)
    try:
        tables.add("", _records(reader, shown))
    except csv.Error:
        raise LoadError(f"{shown}: line {reader.line_num} cannot be read as CSV: a value is over "
                        f"{csv.field_size_limit() >> 10} KiB long, or an unclosed quote runs on to the end of the "
                        "file. Check the quoting, or rename the file to .txt to index it as plain text.") from None
    name = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}[delimiter]
    return table_document(shown, tables, "csv", nbytes, encoding=encoding, delimiter=name)


def _records(reader, shown: str):
    for n, row in enumerate(reader, start=1):
        if len(row) > MAX_COLUMNS:
            raise _too_wide(shown, n, "record")
        yield n, [cell_text(v) for v in row]


def _check_long_lines(text: str, delimiter: str, shown: str) -> None:
    """Refuse a line of millions of fields before csv builds them all (a 50 MB line would take GBs)."""
    pos, line = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        if end - pos > _LONG_LINE and text.count(delimiter, pos, end) > MAX_COLUMNS:
            raise _too_wide(shown, line, "line")
        pos, line = end + 1, line + 1


def _too_wide(shown: str, n: int, where: str) -> LoadError:
    return LoadError(f"{shown}: {where} {n} has more than {MAX_COLUMNS} columns, more than a spreadsheet can hold, "
                     "so it is not a table. Check the delimiter, or rename the file to .txt to index it as plain "
                     "text.")


def sniff_delimiter(text: str) -> str:
    """The candidate that splits the first lines into the same number of fields most often (comma on ties)."""
    lines = [ln for ln in text[:_SNIFF_CHARS].split("\n")[:_SNIFF_LINES] if ln.strip()]
    if len(lines) > 1 and not text[:_SNIFF_CHARS].endswith("\n"):
        lines = lines[:-1]  # the last line may be cut off
    best, best_score = ",", 0
    for cand in _CANDIDATES:
        counts = [_outside_quotes(ln).count(cand) for ln in lines]
        common, hits = Counter(counts).most_common(1)[0] if counts else (0, 0)
        if common > 0 and hits > best_score:
            best, best_score = cand, hits
    return best


def _outside_quotes(line: str) -> str:
    return line if '"' not in line else "".join(line.split('"')[::2])
