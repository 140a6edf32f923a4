"""Plain data types shared by every stage: documents, chunks, hits.

Kept dependency-free so that ingest, retrieval, generation and the UI can all
import them without pulling in models or indexes.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """A span of a document's text with its page number or heading.

    ``start``/``end`` are character offsets into ``Document.text``.
    """

    start: int
    end: int
    page: int | None = None
    heading: str | None = None


@dataclass
class Document:
    """One loaded document: its full text and where pages/headings begin."""

    doc_id: str
    source: str  # the file name shown to users (sanitised, never a path)
    text: str
    title: str = ""
    sections: list[Section] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A retrievable piece of a document.

    ``text[start:end]`` of the parent ``Document.text`` equals ``text``.
    """

    id: str  # f"{doc_id}#{ordinal}"
    doc_id: str
    source: str
    text: str
    start: int
    end: int
    page: int | None = None
    heading: str | None = None
    title: str = ""


@dataclass
class Hit:
    """A retrieved chunk with the explanation of its rank.

    Ranks are 1-based; ``None`` means that retriever did not return the chunk.
    """

    chunk: Chunk
    score: float  # fused score (or the single retriever's score in dense/sparse mode)
    dense_rank: int | None = None
    dense_score: float | None = None
    sparse_rank: int | None = None
    sparse_score: float | None = None
    fused_rank: int | None = None
    rerank_score: float | None = None  # the rerank NIM's score (rag/rerank.py); None when no rerank ran
    rerank_rank: int | None = None     # 1-based rank after reranking


__all__ = ["Section", "Document", "Chunk", "Hit"]
