"""Benchmark data: SciFact, and chunks synthesised from it at any size.

How the synthetic chunks are made (``synth_chunks``), with a fixed seed:

- Passages: every SciFact abstract (title + text) is cut into non-overlapping windows of 60 words;
  windows under 20 words are merged into the previous one.
- Chunk i takes a primary passage P and a secondary passage S, both drawn uniformly at random. Its
  text is P's words plus every fourth word of S, shuffled (so BM25 sees real SciFact vocabulary and
  term statistics, but no chunk repeats another).
- Its vector is ``normalise(0.75 * v(P's document) + 0.25 * v(S's document) + 0.05 * g)`` where
  ``v`` are real all-MiniLM-L6-v2 embeddings of the SciFact documents and ``g`` is standard normal
  noise (per dimension; its norm is about 0.05 * sqrt(384) = 0.98 before the mix is normalised).
  The vectors therefore form the same clusters as real SciFact embeddings, with every chunk distinct.
- Every four chunks share a document id (``syn-<i // 4>``).

Queries are the real SciFact claims (text and embedding). Recall@10 of approximate search is
measured against exact search on these same vectors.
"""
from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import numpy as np

from rag.config import REPO_ROOT

log = logging.getLogger(__name__)

PASSAGE_WORDS, MIN_WORDS = 60, 20
PRIMARY_WEIGHT, NOISE = 0.75, 0.05
SAMPLE_DIR = REPO_ROOT / "tests" / "data" / "scifact_sample"


def find_scifact(explicit: str | Path | None = None) -> Path:
    """The full SciFact train split (shared/eval/scifact beside the repository), else the test sample."""
    candidates = [Path(explicit)] if explicit else []
    candidates += [REPO_ROOT.parent / "shared" / "eval" / "scifact", REPO_ROOT / "shared" / "eval" / "scifact",
                   Path("/work/shared/eval/scifact")]
    for c in candidates:
        if (c / "corpus.jsonl.gz").exists() or (c / "corpus.jsonl").exists():
            return c
    return SAMPLE_DIR


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


def doc_text(d: dict) -> str:
    return f"{d['title']}\n{d['text']}" if d.get("title") else d["text"]


def embed_corpus(docs: list[dict], embedder, cache: Path | None = None) -> np.ndarray:
    """Embeddings of the documents (title + text), cached as .npy keyed by ids and embedder backend."""
    key = f"{len(docs)}-{docs[0]['_id']}-{docs[-1]['_id']}-{getattr(embedder, 'backend', 'torch')}"
    if cache is not None:
        f = cache / f"scifact-vecs-{key}.npy"
        if f.exists():
            return np.load(f, allow_pickle=False)
    t = time.perf_counter()
    vecs = embedder.encode_documents([doc_text(d) for d in docs])
    log.info("embedded %d documents in %.1fs", len(docs), time.perf_counter() - t)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(f, vecs, allow_pickle=False)
    return vecs


def lead_vectors(docs: list[dict], directory: Path = Path("/tmp/exp")) -> np.ndarray | None:
    """Precomputed torch embeddings of the full corpus, if a colleague left them (rows aligned by id)."""
    try:
        ids = json.loads((directory / "doc_ids.json").read_text())
        vecs = np.load(directory / "doc_vecs.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    pos = {d: i for i, d in enumerate(ids)}
    if len(vecs) != len(ids) or any(d["_id"] not in pos for d in docs):
        return None
    return np.ascontiguousarray(vecs[[pos[d["_id"]] for d in docs]], dtype=np.float32)


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


def load_queries(d: Path) -> list[dict]:
    f = d / "queries.jsonl"
    return [json.loads(l) for l in f.read_text(encoding="utf-8").splitlines() if l.strip()]


__all__ = ["Synth", "find_scifact", "load_corpus", "load_queries", "embed_corpus", "lead_vectors", "doc_text"]
