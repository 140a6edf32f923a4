"""Collections: a chunk table plus a dense and a sparse index, persisted as versioned plain-file directories.

``reader`` opens versions for search, ``writer`` builds new ones, ``layout`` is what both share
(names, versions, the writer lock). See ``docs/architecture.md`` for the on-disk format.
"""
from .layout import CollectionError, CollectionNotFound, validate_name
from .reader import Collection, list_collections, open_collection
from .writer import CollectionWriter, DocRecord, delete_collection

__all__ = ["Collection", "CollectionWriter", "DocRecord", "CollectionError", "CollectionNotFound",
           "open_collection", "list_collections", "delete_collection", "validate_name"]
