"""Benchmark data: SciFact, and chunks synthesised from it at any size.

SciFact is read from ``--scifact DIR``, else ``shared/eval/scifact`` beside the repository, else the
300-document sample in tests/data/scifact_sample.

How the synthetic chunks are made (``Synth``), with a fixed seed:

- Passages: every SciFact abstract (title + text) is cut into non-overlapping windows of 60 words;
  windows under 20 words are merged into the previous one.
- Chunk i takes a primary passage P and a secondary passage S, both drawn uniformly at random. Its
  text is P's words plus every fourth word of S, shuffled (so BM25 sees real SciFact vocabulary and
  term statistics, but no chunk repeats another).
- Its vector is ``normalise(0.75 * v(P's document) + 0.25 * v(S's document) + 0.05 * g)`` where
  ``v`` are all-MiniLM-L6-v2 embeddings of the SciFact documents by the reference backend (torch fp32,
  sentence-transformers), computed by the benchmark run itself, and ``g`` is standard normal
  noise (per dimension; its norm is about 0.05 * sqrt(384) = 0.98 before the mix is normalised).
  The vectors therefore form the same clusters as real SciFact embeddings, with every chunk distinct.
- Every four chunks share a document id (``syn-<i // 4>``).

Queries are the real SciFact claims, embedded by the configured backend. Recall@10 of approximate search is
measured against exact search on these same vectors.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
PASSAGE_WORDS, MIN_WORDS = 60, 20
PRIMARY_WEIGHT, NOISE = 0.75, 0.05
SAMPLE_DIR = REPO / "tests" / "data" / "scifact_sample"
SHARED_DIR = REPO.parent / "shared" / "eval" / "scifact"
REFERENCE_BACKEND = "torch"  # sentence-transformers, fp32: the vectors every other backend is compared with


def _has_corpus(d: Path) -> bool:
    return (d / "corpus.jsonl.gz").exists() or (d / "corpus.jsonl").exists()


def find_scifact(explicit: str | Path | None = None) -> tuple[Path, str]:
    """(folder, how it was found): ``--scifact DIR``, else ``shared/eval/scifact`` beside the repository,
    else the 300-document sample in tests/data/scifact_sample."""
    if explicit:
        d = Path(explicit)
        if not _has_corpus(d):
            raise FileNotFoundError(f"--scifact {explicit}: no corpus.jsonl(.gz) there (a BEIR SciFact folder)")
        return d, "--scifact"
    if _has_corpus(SHARED_DIR):
        return SHARED_DIR, "shared/eval/scifact beside the repository"
    return SAMPLE_DIR, "tests/data/scifact_sample (300 documents; pass --scifact for the full corpus)"


def load_corpus(d: Path, limit: int | None = None) -> list[dict]:
    f = d / "corpus.jsonl.gz"
    opener = gzip.open if f.exists() else open
    f = f if f.exists() else d / "corpus.jsonl"
    out = []
    with opener(f, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
                if limit and len(out) >= limit:
                    break
    return out


def load_queries(d: Path) -> list[dict]:
    f = d / "queries.jsonl"
    if not f.exists():
        return []
    return [json.loads(l) for l in f.read_text(encoding="utf-8").splitlines() if l.strip()]


def doc_text(d: dict) -> str:
    return f"{d['title']}\n{d['text']}" if d.get("title") else d["text"]


def embed_corpus(docs: list[dict], embedder, cache: Path | None = None) -> tuple[np.ndarray, dict]:
    """Embeddings of the documents (title + text) and how they were obtained. Cached as .npy in ``cache``
    (the run's data dir), keyed by a hash of the document ids, the embedder backend and, for the ONNX backends,
    the document batch size in tokens (the int8 graph quantises activations per batch)."""
    from rag.embed import DOC_BATCH_TOKENS

    backend = getattr(embedder, "backend", "torch")
    ids = hashlib.sha256("\n".join(d["_id"] for d in docs).encode()).hexdigest()[:16]
    variant = f"{backend}-batch{DOC_BATCH_TOKENS}" if backend.startswith("onnx") else backend
    f = cache / f"scifact-{len(docs)}-{ids}-{variant}.npy" if cache is not None else None
    if f is not None and f.exists():
        return np.load(f, allow_pickle=False), {"backend": backend, "documents": len(docs),
                                                "source": "cached in the data dir by an earlier run"}
    t = time.perf_counter()
    vecs = embedder.encode_documents([doc_text(d) for d in docs])
    secs = round(time.perf_counter() - t, 1)
    log.info("embedded %d documents with %s in %.1fs", len(docs), backend, secs)
    if f is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(f, vecs, allow_pickle=False)
    return vecs, {"backend": backend, "documents": len(docs), "source": "embedded in this run", "seconds": secs}


def reference_vectors(docs: list[dict], cache: Path | None = None) -> tuple[np.ndarray, dict]:
    """The documents embedded by the reference backend (torch fp32 all-MiniLM-L6-v2), in this run
    (or from this data dir's cache)."""
    from rag.embed import get_embedder

    return embed_corpus(docs, get_embedder("local", backend=REFERENCE_BACKEND), cache)  # torch: no fallback


def passages(docs: list[dict]) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(word-id arrays per passage, source document index per passage, vocabulary)."""
    vocab: dict[str, int] = {}
    out, src = [], []
    for di, d in enumerate(docs):
        words = doc_text(d).split()
        ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.int32)
        cuts = list(range(0, len(ids), PASSAGE_WORDS))
        pieces = [ids[c:c + PASSAGE_WORDS] for c in cuts]
        if len(pieces) > 1 and len(pieces[-1]) < MIN_WORDS:
            last = pieces.pop()
            pieces[-1] = np.concatenate([pieces[-1], last])
        for p in pieces:
            if len(p):
                out.append(p)
                src.append(di)
    words = [None] * len(vocab)
    for w, i in vocab.items():
        words[i] = w
    return out, np.array(src, dtype=np.int64), words


class Synth:
    """Synthetic chunks (texts, vectors, doc ids) built from SciFact passages and document vectors."""

    def __init__(self, docs: list[dict], doc_vecs: np.ndarray, seed: int = 0):
        self.docs, self.doc_vecs = docs, np.ascontiguousarray(doc_vecs, dtype=np.float32)
        self.passages, self.src, self.words = passages(docs)
        self.words_arr = np.array(self.words, dtype=object)
        self.seed = seed

    def plan(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return rng.integers(0, len(self.passages), n), rng.integers(0, len(self.passages), n)

    def vectors(self, n: int, block: int = 100_000) -> np.ndarray:
        prim, sec = self.plan(n)
        out = np.empty((n, self.doc_vecs.shape[1]), dtype=np.float32)
        rng = np.random.default_rng(self.seed + 1)
        for s in range(0, n, block):
            e = min(n, s + block)
            v = (PRIMARY_WEIGHT * self.doc_vecs[self.src[prim[s:e]]]
                 + (1 - PRIMARY_WEIGHT) * self.doc_vecs[self.src[sec[s:e]]]
                 + NOISE * rng.standard_normal((e - s, out.shape[1]), dtype=np.float32))
            out[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    def texts(self, n: int) -> list[str]:
        prim, sec = self.plan(n)
        rng = np.random.default_rng(self.seed + 2)
        out = []
        for p, q in zip(prim, sec):
            ids = np.concatenate([self.passages[p], self.passages[q][::4]])
            out.append(" ".join(self.words_arr[rng.permutation(ids)]))
        return out

    @staticmethod
    def doc_ids(n: int) -> list[str]:
        return [f"syn-{i // 4}" for i in range(n)]


__all__ = ["Synth", "find_scifact", "load_corpus", "load_queries", "embed_corpus", "reference_vectors", "doc_text"]
