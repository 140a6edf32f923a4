"""hybrid-rag: retrieval (FAISS + BM25 + fusion), routing and generation."""
from . import _compat  # noqa: F401  (thread-safety work-around; see rag/_compat.py)
from .types import Chunk, Document, Hit, Section

__all__ = ["Chunk", "Document", "Hit", "Section"]
