"""What every format module shares: ``LoadError``, the name's suffix and newline normalisation."""
from __future__ import annotations

from rag.errors import HybridRagError


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
