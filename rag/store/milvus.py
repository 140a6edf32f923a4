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
out). Those rows are deleted :data:`PURGE_AFTER_S` later, by a later commit or writer (then the state is
written again without them): a search that began on ``G`` still reads every row it found. A writer that dies
leaves the last state in force; the next writer deletes the rows above it and finishes the deletes that are due. The state record
lives in Milvus, so every app process that points at the same server sees the same collections.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from ..sparse import Tokenizer
from ..types import Chunk
from .base import Collection, DocRecord, SparseHits, StagingWriter
from .layout import CollectionError, CollectionNotFound, validate_name, writer_lock
from .writer import _package_version

log = logging.getLogger(__name__)
PURGE_AFTER_S = 30.0  # rows a commit replaced or removed stay, hidden, this long: searches begun before it finish
# Milvus Lite has no server timestamps: pymilvus asks for one at every query_iterator, Lite's in-process gRPC server
# logs the refusal, pymilvus the fallback to a client-side one (harmless there); neither is shown
logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(lambda r: "mvccTs" not in r.getMessage())
logging.getLogger("grpc._server").addFilter(lambda r: "Method not implemented" not in r.getMessage())

META = "hybrid_rag_collections"
FORMAT = 1
TEXT_MAX = 65535       # Milvus's VARCHAR limit (bytes)
PART = 60000           # state JSON is stored in parts of this many (ASCII) characters
INSERT_BATCH = 512
LITE_INDEXES = ("HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX")
CHUNK_FIELDS = ["pk", "chunk_id", "doc_id", "source", "title", "text", "start", "end", "page", "heading", "ordinal"]
DOC_FIELDS = ["doc_id", "source", "title", "sha256", "n_chunks", "bytes", "format", "added_at"]
_STR = {"chunk_id": 4096, "doc_id": 2048, "source": 2048, "title": 2048, "heading": 2048, "sha256": 128,
        "format": 64}


# --- connection -------------------------------------------------------------------------------------

def uri_of(settings) -> str:
    return settings.store.milvus.uri or str(Path(settings.data_dir) / "milvus.db")


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def in_use(settings) -> bool:
    """Whether Milvus can hold collections here: the backend is milvus, a server is configured, or the Milvus Lite
    file exists (so the files backend alone never starts Milvus)."""
    uri = uri_of(settings)
    return settings.store.backend == "milvus" or not is_lite(uri) or Path(uri).exists()


_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()
_LOADED: set[tuple[int, str]] = set()  # (id of the client, Milvus collection) loaded by this process


def client_args(settings) -> dict:
    return {"uri": uri_of(settings), "token": os.environ.get(settings.store.milvus.token_env, "")}


def client(settings):
    """The shared MilvusClient for ``store.milvus.uri`` (one per uri and token in this process)."""
    args = client_args(settings)
    key = f"{args['uri']}\0{args['token']}"
    with _CLIENTS_LOCK:
        c = _CLIENTS.get(key)
        if c is None:
            c = _CLIENTS[key] = _connect(**args)
        return c


def _connect(uri: str, token: str):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise CollectionError("The Milvus backend needs pymilvus and milvus-lite: "
                              "`pip install pymilvus milvus-lite` (both are dependencies of hybrid-rag).") from None
    how = ("set store.milvus.uri (HYBRID_RAG__STORE__MILVUS__URI) to a reachable server, e.g. http://host:19530, "
           "or back to null for Milvus Lite; docs/scale.md has a docker compose file for Milvus Standalone")
    if is_lite(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        if _locked_elsewhere(Path(uri)):
            raise CollectionError(
                f"The Milvus Lite file {uri} is open in another process, and Milvus Lite serves one process at a "
                "time: stop that process (a running `hybrid-rag serve`, say) and try again, or run Milvus "
                "Standalone for several processes (docs/scale.md).")
    try:
        c = MilvusClient(uri=uri, token=token, timeout=15)
        _ensure_meta(c)
        return c
    except CollectionError:
        raise
    except Exception as e:  # pymilvus raises MilvusException and ConnectionConfigException, grpc its own
        raise CollectionError(f"Milvus at {uri} cannot be used ({_reason(e)}): {how}.") from None


def _locked_elsewhere(path: Path) -> bool:
    """Whether another process holds the Milvus Lite data directory's LOCK (this process's own server is fine)."""
    if str(path.resolve()) in _lite_servers() or not (path / "LOCK").exists():
        return False
    fd = os.open(path / "LOCK", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _lite_servers() -> dict:
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return {}
    return server_manager_instance._servers


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


def _reason(e: Exception) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0][:300]


def milvus_name(name: str) -> str:
    return f"hr_{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _q(s: str) -> str:
    """A Milvus filter string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _strs(items) -> str:
    return "[" + ",".join(_q(s) for s in items) + "]"


def _ints(items) -> str:
    return "[" + ",".join(str(int(i)) for i in items) + "]"


# --- state records ------------------------------------------------------------------------------------

def _ensure_meta(c) -> None:
    if c.has_collection(META):
        _load(c, META)
        return
    from pymilvus import DataType

    s = c.create_schema(auto_id=False)
    s.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
    s.add_field("name", DataType.VARCHAR, max_length=256)
    s.add_field("gen", DataType.INT64)
    s.add_field("rev", DataType.INT64)
    s.add_field("part", DataType.INT64)
    s.add_field("parts", DataType.INT64)
    s.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
    s.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
    ip = c.prepare_index_params()
    ip.add_index("v", index_type="FLAT", metric_type="L2")
    c.create_collection(META, schema=s, index_params=ip, consistency_level="Strong")


def _load(c, mname: str) -> None:
    """Load a collection for search once per process (a server keeps it loaded; Milvus Lite after a restart
    does not)."""
    if (id(c), mname) not in _LOADED:
        c.load_collection(mname)
        _LOADED.add((id(c), mname))


def _states(c, name: str | None = None) -> dict[str, list[tuple[int, int, dict, list]]]:
    """Every complete state record, per collection name, newest first: (gen, rev, info, keys)."""
    rows = _query_all(c, META, f"name == {_q(name)}" if name else "gen >= 0",
                      ["key", "name", "gen", "rev", "part", "parts", "text"])
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["name"], r["gen"], r["rev"]), []).append(r)
    out: dict[str, list] = {}
    for (n, gen, rev), parts in groups.items():
        parts.sort(key=lambda r: r["part"])
        if len(parts) != parts[0]["parts"]:
            continue  # a state being written (or cut short by a crash)
        info = json.loads("".join(p["text"] for p in parts))
        out.setdefault(n, []).append((gen, rev, info, [p["key"] for p in parts]))
    for states in out.values():
        states.sort(key=lambda s: (s[0], s[1]), reverse=True)
    return out


def read_state(c, name: str):
    states = _states(c, name).get(name)
    return states[0][:3] if states else None


def _write_state(c, name: str, gen: int, rev: int, info: dict) -> None:
    text = json.dumps(info, separators=(",", ":"))
    parts = [text[i:i + PART] for i in range(0, len(text), PART)] or [""]
    c.insert(META, [{"key": f"{name}/{gen:012d}.{rev}/{i}", "name": name, "gen": gen, "rev": rev, "part": i,
                     "parts": len(parts), "text": p, "v": [0.0, 0.0]} for i, p in enumerate(parts)])
    older = [k for g, r, _, keys in _states(c, name).get(name, [])[2:] for k in keys]  # keep the one before
    if older:
        c.delete(META, ids=older)


def _query_all(c, mname: str, expr: str, fields: list[str], batch: int = 4096) -> list[dict]:
    it = c.query_iterator(mname, batch_size=batch, filter=expr, output_fields=fields)
    out = []
    try:
        while True:
            b = it.next()
            if not b:
                return out
            out.extend(b)
    finally:
        it.close()


# --- reading ------------------------------------------------------------------------------------------

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

    def sparse_search(self, query, k, extra_rows):
        terms = " ".join(self.tokenizer(query))
        top = self._bm25(terms, k, self._filter) if terms else {}
        missing = [r for r in extra_rows if r not in top]
        extra = dict(zip(missing, self._bm25_of(terms, missing).tolist()))
        extra.update(top)
        return SparseHits(list(top), np.array(list(top.values()), dtype=np.float32),
                          np.array([extra.get(r, 0.0) for r in extra_rows], dtype=np.float32), None)

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


# --- writing ------------------------------------------------------------------------------------------

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


__all__ = ["MilvusCollection", "MilvusWriter", "open_collection", "list_collections", "delete_collection",
           "has_collection", "in_use", "release", "uri_of"]
