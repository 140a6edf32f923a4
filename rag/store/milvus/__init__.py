"""The Milvus store backend (``store.backend: milvus``), through pymilvus' ``MilvusClient``: Milvus Lite (a file,
embedded, one process, CPU only) or a Milvus Standalone / Distributed server at ``store.milvus.uri``.

Each app collection is one Milvus collection (``hr_<name>_<hash>``): per chunk its text and metadata (document,
title, page, heading, offsets, the document's content hash), its ordinal in the document, the dense vector
(inner product on normalised vectors = cosine) and a BM25 sparse vector made by Milvus's own BM25 function.
The BM25 input field holds the chunk's terms as the app's tokenizer makes them (lower-cased words, English
stopwords out, Snowball stems: the collection's ``sparse.*`` build settings), split by Milvus's standard
analyzer; queries go through the same tokenizer. So BM25 sees exactly the tokens of the files backend, on
Milvus Lite (whose analyzers have no stemmer) and on a server alike. Milvus's BM25 is Lucene's (k1, b).

Commits without transactions: every row carries the generation (``gen``) that wrote it, and a state record in
the ``hybrid_rag_collections`` collection names the committed generation ``G`` (plus embedder, build settings
and counts). Readers search ``gen <= G`` (less the pending rows below). A commit inserts its rows as ``G+1`` (invisible), then writes state
``G+1`` listing the documents it replaced or removed (``pending``: their rows older than ``G+1`` are filtered
out). Those rows are deleted :data:`writer.PURGE_AFTER_S` later, by a later commit or writer (then the state is
written again without them): a search that began on ``G`` still reads every row it found. A writer that dies
leaves the last state in force; the next writer deletes the rows above it and finishes the deletes that are due. The state record
lives in Milvus, so every app process that points at the same server sees the same collections.

Modules: ``connection`` (clients), ``records`` (state records, filters), ``reader`` (a committed generation,
open/list/delete, release), ``writer`` (staging and commits).
"""
from .connection import client, client_args, in_use, is_lite, uri_of
from .reader import (
    _CACHE,  # noqa: F401  (tests clear it)
    MilvusCollection,
    delete_collection,
    has_collection,
    list_collections,
    open_collection,
    release,
)
from .records import _LOADED, META, milvus_name, read_state  # noqa: F401
from .writer import MilvusWriter

__all__ = ["MilvusCollection", "MilvusWriter", "open_collection", "list_collections", "delete_collection",
           "has_collection", "in_use", "release", "uri_of", "client", "client_args", "is_lite", "milvus_name",
           "read_state", "META"]
