"""Reading a Milvus collection: one committed generation (:class:`MilvusCollection`), opened, listed, deleted,
and the process's clients released."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...sparse import Tokenizer
from ...types import Chunk
from ..base import Collection, DocRecord, SparseHits
from ..layout import CollectionNotFound, validate_name, writer_lock
from .connection import _CLIENTS, _CLIENTS_LOCK, client, is_lite, uri_of
from .records import (
    _LOADED,
    META,
    _ints,
    _load,
    _q,
    _query_all,
    _states,
    _strs,
    read_state,
)

CHUNK_FIELDS = ["pk", "chunk_id", "doc_id", "source", "title", "text", "start", "end", "page", "heading", "ordinal"]
DOC_FIELDS = ["doc_id", "source", "title", "sha256", "n_chunks", "bytes", "format", "added_at"]


def _visible(gen: int, pending: list[dict]) -> str:
    """Generation ``gen`` as a filter: rows written up to it, less the rows each commit replaced or removed."""
    expr = f"gen <= {gen}"
    for p in pending:
        expr += f" and not (doc_id in {_strs(p['docs'])} and gen < {p['gen']})"
    return expr


def _chunk(r: dict) -> Chunk:
    return Chunk(id=r["chunk_id"], doc_id=r["doc_id"], source=r["source"], text=r["text"], start=r["start"],
                 end=r["end"], page=None if r["page"] < 0 else r["page"], heading=r["heading"] or None,
                 title=r["title"])


class MilvusCollection(Collection):
    """One committed generation of a Milvus collection. Safe to share between threads."""

    backend = "milvus"

    def __init__(self, name: str, settings, c, gen: int, info: dict):
        self.name, self.version, self.manifest = name, f"g{gen:06d}", info
        self.gen, self._c, self._mname = gen, c, info["milvus_name"]
        self._filter = _visible(gen, info.get("pending", []))
        sp = info["build_settings"]["sparse"]
        self.tokenizer = Tokenizer(stopwords=sp["stopwords"], stemmer=sp["stemmer"])
        self._search_params = _search_params(info["build_settings"]["dense"]["index_type"], settings.dense)
        _load(c, self._mname)

    def dense_search(self, query_vector, k):
        res = self._c.search(self._mname, data=[np.asarray(query_vector, np.float32).tolist()], anns_field="vector",
                             limit=k, filter=self._filter, output_fields=["pk"],
                             search_params={"metric_type": "IP", "params": self._search_params(k)})[0]
        return [h["pk"] for h in res], np.array([h["distance"] for h in res], dtype=np.float32)

    def _bm25(self, terms: str, k: int, expr: str) -> dict[int, float]:
        res = self._c.search(self._mname, data=[terms], anns_field="sparse", limit=k, filter=expr,
                             output_fields=["pk"], search_params={"metric_type": "BM25"})[0]
        # BM25 scores are >= 0; Milvus Lite 3.2 reports them negated (as a distance), a server as they are
        return {h["pk"]: abs(float(h["distance"])) for h in res}

    def sparse_search(self, query, k):
        terms = " ".join(self.tokenizer(query))
        top = self._bm25(terms, k, self._filter) if terms else {}
        return SparseHits(list(top), np.array(list(top.values()), dtype=np.float32), None)

    def sparse_scores(self, query, rows):
        return self._bm25_of(" ".join(self.tokenizer(query)), list(rows))

    def _bm25_of(self, terms: str, rows: list[int]) -> np.ndarray:
        found = self._bm25(terms, len(rows), f"({self._filter}) and pk in {_ints(rows)}") if terms and rows else {}
        return np.array([found.get(r, 0.0) for r in rows], dtype=np.float32)

    def dense_scores(self, query_vector, rows):
        found = {}
        for i in range(0, len(rows), 1000):
            part = rows[i:i + 1000]
            for r in self._c.query(self._mname, filter=f"pk in {_ints(part)}", output_fields=["pk", "vector"]):
                found[r["pk"]] = r["vector"]
        vecs = np.array([found[r] for r in rows], dtype=np.float32).reshape(len(rows), -1)
        return vecs @ np.asarray(query_vector, np.float32)

    def chunks(self, rows):
        rows = [int(r) for r in rows]
        found = {}
        for i in range(0, len(rows), 1000):
            part = rows[i:i + 1000]
            for r in self._c.query(self._mname, filter=f"pk in {_ints(part)}", output_fields=CHUNK_FIELDS):
                found[r["pk"]] = _chunk(r)
        return [found[r] for r in rows]

    def documents(self):
        rows = _query_all(self._c, self._mname, f"ordinal == 0 and {self._filter}", DOC_FIELDS)
        docs = [{"doc_id": r["doc_id"], "source": r["source"], "title": r["title"], "sha256": r["sha256"],
                 "chunks": r["n_chunks"], "bytes": r["bytes"], "format": r["format"], "added_at": r["added_at"]}
                for r in rows]
        return sorted(docs, key=lambda d: (d["source"], d["doc_id"]))

    def document_chunks(self, doc_id, limit=1000):
        rows = _query_all(self._c, self._mname, f"doc_id == {_q(doc_id)} and ordinal < {int(limit)} and {self._filter}",
                          CHUNK_FIELDS)
        return [_chunk(r) for r in sorted(rows, key=lambda r: r["ordinal"])]

    def counts(self):
        rows = self._c.query(self._mname, filter=self._filter, output_fields=["count(*)"])
        docs = self._c.query(self._mname, filter=f"ordinal == 0 and {self._filter}", output_fields=["count(*)"])
        return {"chunks": rows[0]["count(*)"], "documents": docs[0]["count(*)"]}

    def export(self, batch=256):
        docs = self.documents()
        for i in range(0, len(docs), batch):
            part = docs[i:i + batch]
            rows = _query_all(self._c, self._mname, f"doc_id in {_strs(d['doc_id'] for d in part)} and {self._filter}",
                              CHUNK_FIELDS + ["vector"])
            by_doc: dict[str, list] = {}
            for r in rows:
                by_doc.setdefault(r["doc_id"], []).append(r)
            for d in part:
                rs = sorted(by_doc.get(d["doc_id"], []), key=lambda r: r["ordinal"])
                yield (DocRecord(d["doc_id"], d["source"], d["title"], d["sha256"], d["bytes"], d["format"]),
                       [_chunk(r) for r in rs], np.array([r["vector"] for r in rs], dtype=np.float32))


def _search_params(index_type: str, dense):
    """The dense search parameters for ``k`` results, from the query-time ``dense.*`` settings."""
    if index_type in ("HNSW", "HNSW_SQ"):
        return lambda k: {"ef": max(dense.hnsw_ef_search, k)}
    if index_type in ("IVF_FLAT", "IVF_SQ8", "GPU_IVF_FLAT", "GPU_IVF_PQ"):
        return lambda k: {"nprobe": dense.ivf_nprobe}
    if index_type == "GPU_CAGRA":
        return lambda k: {"itopk_size": max(128, k)}
    return lambda k: {}


_CACHE: dict[tuple, MilvusCollection] = {}
_CACHE_LOCK = threading.Lock()


def open_collection(name: str, settings) -> MilvusCollection:
    c = client(settings)
    state = read_state(c, validate_name(name))
    if state is None:
        raise CollectionNotFound(f"No collection named {name!r} in Milvus at {uri_of(settings)}: create it with "
                                 f"`hybrid-rag ingest --collection {name} FILES...`.", name=name)
    gen, rev, info = state
    d = settings.dense
    key = (uri_of(settings), name, gen, rev, d.hnsw_ef_search, d.ivf_nprobe)
    with _CACHE_LOCK:
        col = _CACHE.get(key)
    if col is None:
        col = MilvusCollection(name, settings, c, gen, info)
        with _CACHE_LOCK:
            for k in [k for k in _CACHE if k[:2] == key[:2]]:
                del _CACHE[k]
            _CACHE[key] = col
    return col


def has_collection(name: str, settings) -> bool:
    return read_state(client(settings), name) is not None


def list_collections(settings) -> list[dict]:
    out = []
    for name, states in _states(client(settings)).items():
        gen, _, info, _ = states[0]
        out.append({"name": name, "backend": "milvus", "version": f"g{gen:06d}",
                    "documents": info["counts"]["documents"], "chunks": info["counts"]["chunks"],
                    "embedder": info["embedder"]["id"], "updated": info["build"]["time"]})
    return out


def delete_collection(name: str, settings) -> None:
    c = client(settings)
    with writer_lock(_lock_path(name, settings)):
        states = _states(c, name).get(name)
        if not states:
            raise CollectionNotFound(f"No collection named {name!r}: `hybrid-rag collections` lists them.", name=name)
        c.delete(META, ids=[k for s in states for k in s[3]])  # gone for readers at once
        c.drop_collection(states[0][2]["milvus_name"])


def _lock_path(name: str, settings) -> Path:
    return Path(settings.data_dir) / "locks" / f"milvus-{validate_name(name)}"


def release(settings) -> None:
    """Close this process's client for ``store.milvus.uri`` and, for Milvus Lite, stop its embedded server so that
    another process can open the file."""
    uri = uri_of(settings)
    with _CLIENTS_LOCK:
        for key in [k for k in _CLIENTS if k.split("\0")[0] == uri]:
            c = _CLIENTS.pop(key)
            _LOADED.difference_update({k for k in _LOADED if k[0] == id(c)})
            c.close()
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if k[0] == uri]:
            del _CACHE[key]
    if is_lite(uri):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


__all__ = ["MilvusCollection", "open_collection", "has_collection", "list_collections", "delete_collection", "release"]
