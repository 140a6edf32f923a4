"""Excel .xlsx (openpyxl, read-only, cached values): each sheet a table, in blocks that repeat its header.

Sections are headed ``"Sheet Budget, rows 2-41"`` (row numbers as Excel shows them; the first non-empty row
of a sheet is its header). Formulas give the value Excel last saved; a workbook written by a program that
never calculated them has empty cells there. Dimensions declared by the file are not trusted (openpyxl
would pad every row to them), and a sheet past Excel's own limits is refused.
"""
from __future__ import annotations

import io
import logging

from rag.types import Document

from .common import LoadError
from .container import open_container
from .table import MAX_COLUMNS, TableFit, TableText, cell_text, table_document

log = logging.getLogger(__name__)

WHAT = ".xlsx workbook"
RESAVE = ("Open it in Excel or LibreOffice Calc, save it again, and upload the new file "
          "(or save each sheet as CSV).")
MAX_ROWS = 1_048_576       # Excel's own limit
MAX_CELLS = 20_000_000     # cells read (empty ones between filled ones count too)


class _TooBig(Exception):
    pass


def load_xlsx(data: bytes, shown: str, fit: TableFit | None = None) -> Document:
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - a hard dependency
        raise LoadError("openpyxl is not installed: `pip install openpyxl`.") from None
    open_container(data, shown, WHAT, RESAVE).close()
    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
    except Exception as e:  # openpyxl raises many kinds of errors on damaged files
        log.debug("%s: openpyxl cannot read the file: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the {WHAT} is damaged (its contents cannot be read). {RESAVE}") from None
    tables = TableText(fit)
    budget = [MAX_CELLS]
    sheets = 0
    try:
        for ws in wb.worksheets:
            sheets += 1
            ws.reset_dimensions()  # declared dimensions would pad every row to them
            tables.add(f"Sheet {ws.title}", _rows(ws, budget, shown))
    except LoadError:
        raise
    except _TooBig as e:
        raise LoadError(f"{shown}: {e}") from None
    except Exception as e:
        log.debug("%s: openpyxl cannot read a sheet: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the {WHAT} is damaged (a sheet cannot be read). {RESAVE}") from None
    finally:
        wb.close()
    title = ""
    try:
        title = " ".join((wb.properties.title or "").split())
    except Exception:  # a damaged core-properties part only costs the title
        pass
    return table_document(shown, tables, "xlsx", len(data), title, sheets=sheets)


def _rows(ws, budget: list[int], shown: str):
    for n, values in enumerate(ws.iter_rows(values_only=True), start=1):
        if n > MAX_ROWS:
            raise _TooBig(f"sheet {ws.title!r} has more than {MAX_ROWS} rows, more than Excel allows; the file "
                          f"is damaged or malicious. {RESAVE}")
        budget[0] -= len(values) + 1
        if budget[0] < 0:
            raise _TooBig(f"the workbook has more than {MAX_CELLS} cells, more than this server reads from one "
                          "file. Split the workbook, or save the sheets you need as CSV, and upload those.")
        if len(values) > MAX_COLUMNS:
            values = values[:MAX_COLUMNS]
        yield n, [cell_text(v) for v in values]
