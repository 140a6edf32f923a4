"""hybrid-rag: retrieval (FAISS + BM25 + fusion), routing and generation."""
from .types import Chunk, Document, Hit, Section

__all__ = ["Chunk", "Document", "Hit", "Section"]
