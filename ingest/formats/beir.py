"""BEIR corpora: ``corpus.jsonl`` (or ``.jsonl.gz``), one ``{"_id", "title", "text"}`` object per line."""
from __future__ import annotations

import io
import json
import re

from rag.types import Document

from .common import LoadError, normalise_newlines

_FIX = "Fix or remove that line and upload the file again."
_SURROGATE = re.compile("[\ud800-\udfff]")


def looks_like_beir(head: bytes) -> bool:
    """The first line is a JSON object with ``_id`` and ``text`` (for files whose name does not say .jsonl)."""
    line = head.lstrip().split(b"\n", 1)[0]
    if not line.startswith(b"{"):
        return False
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return False
    return isinstance(rec, dict) and "_id" in rec and "text" in rec


def load_beir(text: str, shown: str, nbytes: int) -> list[Document]:
    """One ``Document`` per record; the first bad line raises a ``LoadError`` that names it."""
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(io.StringIO(text), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except RecursionError:
            raise LoadError(f"{shown}: line {n} nests arrays or objects too deeply to be read; a BEIR record "
                            'is one flat {"_id": ..., "title": ..., "text": ...} object. ' + _FIX) from None
        except ValueError as e:  # JSONDecodeError, or a number too long to convert
            where = f" (the error is at column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
            raise LoadError(f"{shown}: line {n} is not valid JSON{where}. {_FIX}") from None
        if not isinstance(rec, dict):
            raise LoadError(f"{shown}: line {n} is not a JSON object; a BEIR corpus has one "
                            '{"_id": ..., "title": ..., "text": ...} object per line. ' + _FIX)
        doc_id, body, title = rec.get("_id"), rec.get("text"), rec.get("title", "")
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool) or str(doc_id).strip() == "":
            raise LoadError(f'{shown}: line {n} has no "_id" (a non-empty string or integer). ' + _FIX)
        if not isinstance(body, str):
            raise LoadError(f'{shown}: line {n} has no "text" string. ' + _FIX)
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise LoadError(f'{shown}: line {n} has a "title" that is not a string. ' + _FIX)
        doc_id = str(doc_id)
        if doc_id in seen:
            raise LoadError(f'{shown}: line {n} repeats the "_id" {doc_id!r} of line {seen[doc_id]}; '
                            "document ids must be unique. Remove or rename one of them.")
        seen[doc_id] = n
        meta = {"format": "beir", "bytes": nbytes, "line": n}
        if isinstance(rec.get("metadata"), dict):
            meta["beir_metadata"] = rec["metadata"]
        docs.append(Document(_no_surrogates(doc_id), shown, normalise_newlines(_no_surrogates(body)),
                             _no_surrogates(title).strip(), [], meta))
    if not docs:
        raise LoadError(f"{shown}: the corpus has no records. A BEIR corpus.jsonl has one "
                        '{"_id": ..., "title": ..., "text": ...} object per line; check that you picked the right file.')
    return docs


def _no_surrogates(s: str) -> str:
    """JSON escapes can produce lone surrogates, which cannot be encoded; replace them with U+FFFD."""
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s
