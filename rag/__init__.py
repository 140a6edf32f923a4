"""hybrid-rag: retrieval (FAISS + BM25 + fusion), routing and generation.

``rag.ask(question, collection, settings=...)`` is the one question-to-answer path (see ``rag.engine``);
``rag.config.load_settings()`` reads every setting.
"""
from . import _compat  # noqa: F401  (CPython gh-106905 work-around; see rag/_compat.py)
from .types import Chunk, Document, Hit, Section

__all__ = ["ask", "Engine", "Chunk", "Document", "Hit", "Section"]


def __getattr__(name):  # lazy: `import rag` stays free of models, indexes and HTTP clients
    if name in ("ask", "Engine"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
