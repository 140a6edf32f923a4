"""Writing a Milvus collection: :class:`MilvusWriter` stages additions and removals and commits them as the
next generation (rows first, invisible, then the state record), deleting replaced rows :data:`PURGE_AFTER_S`
later."""
from __future__ import annotations

import logging
import time

from ...sparse import Tokenizer
from ..base import StagingWriter
from ..layout import CollectionError, CollectionNotFound, validate_name, writer_lock
from ..writer import _package_version
from .connection import _reason, client, is_lite, uri_of
from .reader import _lock_path, _visible
from .records import (
    _LOADED,
    FORMAT,
    TEXT_MAX,
    _load,
    _query_all,
    _strs,
    _write_state,
    milvus_name,
    read_state,
)

log = logging.getLogger(__name__)
PURGE_AFTER_S = 30.0  # rows a commit replaced or removed stay, hidden, this long: searches begun before it finish
INSERT_BATCH = 512
LITE_INDEXES = ("HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX")
_STR = {"chunk_id": 4096, "doc_id": 2048, "source": 2048, "title": 2048, "heading": 2048, "sha256": 128,
        "format": 64}


def _index(index_type: str, dense, dim: int) -> dict:
    """The dense index's build parameters, from the ``dense.*`` settings."""
    if index_type in ("HNSW", "HNSW_SQ"):
        return {"M": dense.hnsw_m, "efConstruction": dense.hnsw_ef_construction}
    if index_type in ("IVF_FLAT", "IVF_SQ8", "GPU_IVF_FLAT"):
        return {"nlist": dense.ivf_nlist or 1024}
    if index_type == "GPU_IVF_PQ":
        return {"nlist": dense.ivf_nlist or 1024, "m": next(m for m in (dim // 4, dim // 2, dim) if dim % m == 0)}
    if index_type == "GPU_CAGRA":
        return {"intermediate_graph_degree": 2 * dense.hnsw_m, "graph_degree": dense.hnsw_m}
    return {}


class MilvusWriter(StagingWriter):
    """Stage additions and removals, then ``commit()`` them as the next generation (the Milvus backend).

    Use as a context manager: it holds the collection's writer lock (a file lock in the data directory: one
    writer per collection on this machine) until it exits.
    """

    def __init__(self, name: str, settings, *, embedder_id: str | None = None, dim: int | None = None):
        self.name, self.settings = validate_name(name), settings
        self.embedder_id, self.dim = embedder_id, dim
        self._lock_cm = None
        self._reset_staging()

    def __enter__(self) -> "MilvusWriter":
        self._lock_cm = writer_lock(_lock_path(self.name, self.settings))
        self._lock_cm.__enter__()
        try:
            self._c = client(self.settings)
            self._open_base()
        except BaseException:
            self._lock_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is None and self.gen > 0:
                self._purge()
        finally:
            self._lock_cm.__exit__(*exc)
        return False

    def _open_base(self) -> None:
        state = read_state(self._c, self.name)
        self._docs: dict[str, tuple[str, int]] = {}   # committed doc_id -> (sha256, chunks)
        self._by_sha: dict[str, list[str]] = {}
        if state is None:
            if self.embedder_id is None or self.dim is None:
                raise CollectionNotFound(f"No collection named {self.name!r} in Milvus at {uri_of(self.settings)}: "
                                         f"create it with `hybrid-rag ingest --collection {self.name} FILES...`.",
                                         name=self.name)
            self.gen, self.rev, self.info = 0, 0, self._new_info()
            self.chunking, self.index_title = self.info["chunking"], self.info["index_title"]
            self._tokenizer = Tokenizer(stopwords=self.settings.sparse.stopwords, stemmer=self.settings.sparse.stemmer)
            return
        self.gen, rev, self.info = state
        if self.embedder_id is None:
            self.embedder_id = self.info["embedder"]["id"]
        if self.info["embedder"]["id"] != self.embedder_id:
            raise CollectionError(
                f"Collection {self.name!r} was built with embedder {self.info['embedder']['id']!r}, but "
                f"{self.embedder_id!r} is configured: ingest into a new collection, or switch the embedder back.")
        self.dim = int(self.info["embedder"]["dim"])
        self.chunking, self.index_title = self.info["chunking"], self.info["index_title"]
        sp = self.info["build_settings"]["sparse"]
        self._tokenizer = Tokenizer(stopwords=sp["stopwords"], stemmer=sp["stemmer"])
        mname = self.info["milvus_name"]
        _load(self._c, mname)
        self._c.delete(mname, filter=f"gen > {self.gen}")  # rows of a writer that died before its commit
        self.rev = rev
        self._purge()  # deletes that fell due after the last writer left (or died)
        visible = _visible(self.gen, self.info.get("pending", []))
        for r in _query_all(self._c, mname, f"ordinal == 0 and {visible}", ["doc_id", "sha256", "n_chunks"]):
            self._docs[r["doc_id"]] = (r["sha256"], r["n_chunks"])
            self._by_sha.setdefault(r["sha256"], []).append(r["doc_id"])

    def _new_info(self) -> dict:
        s, uri = self.settings, uri_of(self.settings)
        index_type = s.store.milvus.index_type
        if is_lite(uri) and index_type not in LITE_INDEXES:
            raise CollectionError(
                f"store.milvus.index_type {index_type} needs a Milvus server with GPUs, and Milvus Lite ({uri}) is "
                f"CPU-only: use one of {', '.join(LITE_INDEXES)}, or point store.milvus.uri at a GPU Milvus server "
                "(docs/scale.md).")
        if s.sparse.method != "lucene":
            raise CollectionError(f"Milvus's BM25 is Lucene's, so sparse.method {s.sparse.method!r} cannot be built "
                                  "there: set sparse.method to lucene for a Milvus collection, or use store.backend files.")
        return {"format": FORMAT, "name": self.name, "milvus_name": milvus_name(self.name),
                "embedder": {"id": self.embedder_id, "dim": self.dim}, "chunking": s.chunking.model_dump(),
                "index_title": s.retrieval.index_title,
                "build_settings": {"sparse": {"method": "lucene", "k1": s.sparse.k1, "b": s.sparse.b,
                                              "stopwords": s.sparse.stopwords, "stemmer": s.sparse.stemmer},
                                   "dense": {"index_type": index_type,
                                             "params": _index(index_type, s.dense, self.dim)}},
                "counts": {"documents": 0, "chunks": 0}, "pending": [], "build": {}}

    # -- the committed generation's documents, for dedupe --------------------------------------
    def _base_hash(self, doc_id: str) -> str | None:
        d = self._docs.get(doc_id)
        return d[0] if d else None

    def _base_docs_with_hash(self, sha256: str) -> list[str]:
        return self._by_sha.get(sha256, [])

    # -- commit --------------------------------------------------------------------------------
    def commit(self) -> str | None:
        """Write the next generation and make it the committed one. Returns its name (None when nothing changed)."""
        if not self.pending and self.gen > 0:
            return None
        t0 = time.perf_counter()
        mname = self.info["milvus_name"]
        if self.gen == 0:
            self._create(mname)
        gen = self.gen + 1
        self._insert(mname, gen)
        if is_lite(uri_of(self.settings)):
            self._c.flush(mname)  # Milvus Lite searches unflushed rows by brute force in Python
        hidden = sorted(d for d in self._removed | set(self._staged_hash) if d in self._docs)
        for d in hidden:
            sha, _ = self._docs.pop(d)
            self._by_sha[sha].remove(d)
        for rec, chunks in self._added:
            self._docs[rec.doc_id] = (rec.sha256, len(chunks))
            self._by_sha.setdefault(rec.sha256, []).append(rec.doc_id)
        self.info["counts"] = {"documents": len(self._docs), "chunks": sum(n for _, n in self._docs.values())}
        if hidden:
            self.info["pending"] = self.info.get("pending", []) + [{"gen": gen, "docs": hidden, "at": time.time()}]
        self.info["build"] = {"time": time.time(), "base": self.gen, "hybrid_rag": _package_version(),
                              "seconds": {"rows": round(time.perf_counter() - t0, 3)}}
        _write_state(self._c, self.name, gen, 0, self.info)  # the commit: readers see generation `gen` now
        self.gen, self.rev = gen, 0
        self._purge()
        log.info("collection %s (milvus): committed generation %d", self.name, gen)
        return f"g{gen:06d}"

    def checkpoint(self) -> str | None:
        """Commit what is staged and go on writing on top of it, keeping the writer lock."""
        version = self.commit()
        self._reset_staging()
        return version

    def _create(self, mname: str) -> None:
        from pymilvus import DataType, Function, FunctionType

        c = self._c
        if c.has_collection(mname):
            c.drop_collection(mname)  # a collection whose first commit never happened
        s = c.create_schema(auto_id=True)
        s.add_field("pk", DataType.INT64, is_primary=True)
        s.add_field("gen", DataType.INT64)
        for f in ("chunk_id", "doc_id", "source", "title", "heading", "sha256", "format"):
            s.add_field(f, DataType.VARCHAR, max_length=_STR[f])
        for f in ("ordinal", "start", "end", "page", "n_chunks", "bytes"):
            s.add_field(f, DataType.INT64)
        s.add_field("added_at", DataType.DOUBLE)
        s.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
        s.add_field("terms", DataType.VARCHAR, max_length=TEXT_MAX, enable_analyzer=True,
                    analyzer_params={"tokenizer": "standard"})
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        s.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["terms"],
                                output_field_names=["sparse"]))
        dense, sparse = self.info["build_settings"]["dense"], self.info["build_settings"]["sparse"]
        ip = c.prepare_index_params()
        ip.add_index("vector", index_type=dense["index_type"], metric_type="IP", params=dense["params"])
        ip.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                     params={"bm25_k1": sparse["k1"], "bm25_b": sparse["b"]})
        try:
            c.create_collection(mname, schema=s, index_params=ip, consistency_level="Strong")
        except Exception as e:
            raise CollectionError(f"Milvus at {uri_of(self.settings)} refused to create collection {self.name!r} "
                                  f"({_reason(e)}): check store.milvus.index_type against what that server "
                                  "supports (docs/scale.md).") from None
        _LOADED.discard((id(c), mname))
        _load(c, mname)

    def _insert(self, mname: str, gen: int) -> None:
        now = time.time()
        batch: list[dict] = []
        for (rec, chunks), vecs in zip(self._added, self._vectors):
            for i, (ch, v) in enumerate(zip(chunks, vecs)):
                batch.append({
                    "gen": gen, "chunk_id": ch.id, "doc_id": rec.doc_id, "source": ch.source,
                    "title": _fit(ch.title or "", _STR["title"]), "heading": _fit(ch.heading or "", _STR["heading"]),
                    "sha256": rec.sha256, "format": _fit(rec.format or "", _STR["format"]), "ordinal": i,
                    "start": ch.start, "end": ch.end, "page": -1 if ch.page is None else ch.page,
                    "n_chunks": len(chunks), "bytes": rec.bytes or 0, "added_at": now,
                    "text": _text(ch.text, self.name, rec.doc_id),
                    "terms": _fit(" ".join(self._tokenizer(self.index_text(ch))), TEXT_MAX),
                    "vector": v.tolist()})
                if len(batch) >= INSERT_BATCH:
                    self._c.insert(mname, batch)
                    batch = []
        if batch:
            self._c.insert(mname, batch)

    def _purge(self) -> None:
        """Delete the rows that commits at least :data:`PURGE_AFTER_S` ago replaced or removed, then drop them
        from the state's filter."""
        pending = self.info.get("pending", [])
        due = [p for p in pending if time.time() - p["at"] >= PURGE_AFTER_S]
        if not due:
            return
        for p in due:
            for i in range(0, len(p["docs"]), 500):
                self._c.delete(self.info["milvus_name"],
                               filter=f"doc_id in {_strs(p['docs'][i:i + 500])} and gen < {p['gen']}")
        self.info["pending"] = [p for p in pending if p not in due]
        self.rev += 1
        _write_state(self._c, self.name, self.gen, self.rev, self.info)


def _fit(s: str, limit: int) -> str:
    """``s`` cut to at most ``limit`` UTF-8 bytes (at a character boundary)."""
    b = s.encode()
    return s if len(b) <= limit else b[:limit].decode(errors="ignore")


def _text(text: str, name: str, doc_id: str) -> str:
    if len(text.encode()) > TEXT_MAX:
        raise CollectionError(f"A chunk of {doc_id!r} is over Milvus's 64 KiB text limit, so collection {name!r} "
                              "cannot hold it: lower chunking.chunk_tokens for a new collection.")
    return text


__all__ = ["MilvusWriter", "PURGE_AFTER_S"]
