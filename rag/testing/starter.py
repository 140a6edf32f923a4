"""The starter collection (this project's README and docs/, as ``hybrid-rag serve`` indexes them on first run)
and questions about it: what the offline-answer test and ``python -m bench.offline`` ask the embedded model."""
from __future__ import annotations

from pathlib import Path

# about 24 questions a newcomer asks of the project's own documentation (README.md, docs/*.md)
QUESTIONS = [
    "How do I upload documents, and what happens to a file that fails?",
    "Which embedding model does hybrid-rag use offline?",
    "How are dense and sparse results fused?",
    "How many chunks does retrieval return by default?",
    "How do I create an API key?",
    "What does the readiness endpoint report?",
    "Which offline chat model answers when no NIM endpoint is available?",
    "How do I set the admin password?",
    "Which file types can be uploaded?",
    "How do I run the benchmarks?",
    "What happens when every model endpoint fails?",
    "How does the router choose between the speed and quality routes?",
    "How is a collection stored on disk?",
    "Can search run on a GPU?",
    "How do I cancel an ingest job?",
    "What does the Compare tab do?",
    "How is the prompt budget computed?",
    "How do I use the openai SDK with the HTTP API?",
    "How do I override a setting with an environment variable?",
    "What happens when a zip archive is too large?",
    "How many answers can one API key generate at the same time?",
    "What is BM25 used for?",
    "How do I start the web app?",
    "Why is weight repacking off for the offline model?",
]


def build_starter(settings, embedder, name: str = "starter", root: Path | None = None) -> int:
    """Ingest README and docs/ of the source checkout (``root``) into collection ``name``; return its chunks.

    The files are those ``hybrid-rag serve`` indexes into its starter collection (``ui.serve.starter_files``)."""
    from ingest.pipeline import ingest
    from rag.config import SOURCE_ROOT
    from ui.serve import starter_files

    root = root or SOURCE_ROOT
    if root is None:
        raise RuntimeError("The starter collection needs a source checkout (README.md and docs/).")
    results = ingest(name, starter_files(root), settings=settings, embedder=embedder)
    return sum(r.chunks for r in results)


__all__ = ["QUESTIONS", "build_starter"]
