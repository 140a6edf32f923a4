"""Collections: a chunk table plus a dense and a sparse index, behind one interface with two backends.

``base`` is the interface (``Collection`` for search, the staging half of a writer); ``backends`` routes each
collection to the backend that holds it. The ``files`` backend (the default) is versioned plain-file
directories: ``reader`` opens versions for search, ``writer`` builds new ones, ``layout`` is what both share
(names, versions, the writer lock). The ``milvus`` backend is ``milvus`` (Milvus Lite or a Milvus server).
See ``docs/architecture.md`` and ``docs/scale.md``.
"""
from .backends import (
           CollectionWriter,
           backend_of,
           delete_collection,
           list_collections,
           migrate,
           open_collection,
)
from .base import Collection, DocRecord
from .layout import CollectionError, CollectionNotFound, validate_name

__all__ = ["Collection", "CollectionWriter", "DocRecord", "CollectionError", "CollectionNotFound",
           "open_collection", "list_collections", "delete_collection", "validate_name", "backend_of", "migrate"]
