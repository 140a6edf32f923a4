"""Embedding on the CPU: one-query latency per backend, and ingest throughput against one plain
``SentenceTransformer.encode`` call on the same chunks.

Throughput baseline: ``SentenceTransformer(model).encode(all_chunks, batch_size=32,
normalize_embeddings=True)``, one call (sentence-transformers sorts the texts by length itself). It runs
first and last, so drift over the run shows. Beside it, on the same chunks: the app's torch embedder, ONNX
fp32 and ONNX int8 (the default), each as chunks/s, a ratio to the baseline and the mean cosine to the
baseline's vectors. Two chunk sets:

- ``scifact``: SciFact abstracts cut by the app's chunker (200 tokens, 40 overlap), the first n chunks;
- ``repo_docs``: this repository's README.md and docs/*.md, loaded and chunked by the app (200/40): the
  length mix of a real collection of markdown documents (skipped where the files are absent).

Each set's token lengths (p50/p95/max, the model's tokenizer, no special tokens) are reported.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .common import pct, ratio, summary, timed
from .data import REPO

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
BASELINE_BATCH = 32


def local_embedder(backend: str, settings, device: str | None = None):
    """The app's all-MiniLM-L6-v2 embedder on ``backend`` ("auto": the configured one), with the embedder
    settings; refuses the silent fallback to torch that ``get_embedder`` makes when ONNX fails."""
    from rag.embed import get_embedder, resolve_backend

    e = settings.embedder
    backend = resolve_backend(e.backend if backend == "auto" else backend)
    emb = get_embedder("local", backend=backend, device=device or e.device, cache_dir=e.cache_dir,
                       batch_size=e.batch_size)
    got = getattr(emb, "backend", "torch")
    if got != backend:
        raise RuntimeError(f"asked for the {backend} embedder, got {got} (see the warning above)")
    return emb


def query_latency(qtexts: list[str], settings) -> dict:
    """One query embedded at a time, as the app does; every backend beside torch (sentence-transformers)."""
    out: dict = {}
    for b in BACKENDS:
        e = local_embedder(b, settings)
        out[b] = summary(timed(lambda q, e=e: e.encode_queries([q]), qtexts))
    for b in BACKENDS[1:]:
        out[b]["x_vs_torch_p50"] = ratio(out["torch"]["p50_ms"], out[b]["p50_ms"])
    return out


# -- chunk sets --------------------------------------------------------------------------------

def _index_text(c) -> str:
    """What the app embeds for a chunk (``CollectionWriter.index_text`` with ``index_title: true``)."""
    return f"{c.title}\n{c.text}" if c.title and not c.text.startswith(c.title) else c.text


def scifact_chunks(docs: list[dict], n: int, tokenizer, chunk_tokens=200, overlap_tokens=40) -> list[str]:
    """The first n chunks of SciFact documents, cut by the app's chunker, as the embedder sees them."""
    from ingest.chunking import chunk_document
    from rag.types import Document

    out = []
    for d in docs:
        doc = Document(doc_id=d["_id"], source=f"{d['_id']}.txt", text=d["text"], title=d.get("title", ""))
        for c in chunk_document(doc, tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens):
            out.append(_index_text(c))
            if len(out) >= n:
                return out
    return out


def repo_doc_chunks(n: int, tokenizer, chunk_tokens=200, overlap_tokens=40) -> list[str]:
    """README.md and docs/*.md of this repository through the app's loader and chunker (at most n)."""
    from ingest.chunking import chunk_document
    from ingest.formats import load

    files = [p for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))] if p.is_file()]
    out = []
    for f in files:
        for doc in load(f.read_bytes(), f.name):
            for c in chunk_document(doc, tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens):
                out.append(_index_text(c))
    return out[:n]


def lengths(texts: list[str], tokenizer) -> dict:
    n = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return {"chunks": len(texts), "tokens_p50": pct(n, 50), "tokens_p95": pct(n, 95), "tokens_max": max(n)}


# -- throughput --------------------------------------------------------------------------------

def _paths(settings) -> tuple[dict, object]:
    """(name -> encode(texts) for the baseline and every app backend, all on the CPU; the baseline model)."""
    from sentence_transformers import SentenceTransformer

    from rag.embed import packaged_minilm_path

    st = SentenceTransformer(str(packaged_minilm_path()), device="cpu", local_files_only=True)
    paths = {"baseline": lambda xs: st.encode(xs, batch_size=BASELINE_BATCH, normalize_embeddings=True,
                                              convert_to_numpy=True, show_progress_bar=False)}
    for b in BACKENDS:
        paths[f"app_{b}"] = local_embedder(b, settings, device="cpu").encode_documents
    return paths, st


def _throughput(texts: list[str], paths: dict, rounds: int = 1) -> dict:
    for f in paths.values():  # warm-up: first-call allocations, thread pools
        f(texts[:8])
    secs: dict[str, list[float]] = {}
    vecs: dict[str, np.ndarray] = {}
    names = [*paths]
    order: list[str] = []
    for r in range(max(1, rounds)):  # rounds alternate the order; the baseline runs first and last: drift shows
        order += names if r % 2 == 0 else names[::-1]
    if order[-1] != "baseline":
        order.append("baseline")
    for name in order:
        t = time.perf_counter()
        v = paths[name](texts)
        secs.setdefault(name, []).append(time.perf_counter() - t)
        vecs.setdefault(name, np.asarray(v, dtype=np.float32))
        if name == "baseline" and len(secs["baseline"]) >= 2:
            vecs["baseline_last"] = np.asarray(v, dtype=np.float32)
    n, ref = len(texts), vecs["baseline"]
    base_s = float(np.mean(secs["baseline"]))
    out = {"baseline_runs_s": [round(s, 2) for s in secs["baseline"]],
           "baseline_drift": ratio(secs["baseline"][-1], secs["baseline"][0]),
           "runs_s": {k: [round(s, 2) for s in v] for k, v in secs.items()}}
    for name, s in secs.items():
        mean_s = float(np.mean(s))
        out[name] = {"chunks_per_s": round(n / mean_s, 1), "seconds": round(mean_s, 2),
                     "x_baseline": ratio(base_s, mean_s),
                     "mean_cosine_to_baseline": round(float((vecs[name] * ref).sum(1).mean()), 5)}
    out["baseline"]["mean_cosine_first_vs_last"] = round(float((vecs["baseline_last"] * ref).sum(1).mean()), 5)
    return out


def throughput(docs: list[dict], n: int, settings, rounds: int = 1) -> dict:
    """chunks/s of each embedding path on the same chunks, for each chunk set; the baseline first and last,
    ``rounds`` times over in alternating order (the mean of each path's runs is reported).

    The app's embedder runs document batches on threads of lowered OS priority (``rag.interactive``: an
    upload yields to chat). Here they run at normal priority, like the baseline, so that other work on the
    machine slows both alike; on a quiet machine it makes no difference."""
    from rag import interactive

    was = interactive.ENABLED
    interactive.ENABLED = False  # before the embedders' thread pools start (their initializer lowers priority)
    try:
        return _throughput_sets(docs, n, settings, rounds)
    finally:
        interactive.ENABLED = was
        for b in BACKENDS:  # later sections get pools of lowered priority again, as in the app
            emb = local_embedder(b, settings, device="cpu")
            pool = getattr(emb, "_pool", None)
            if pool is not None:
                pool.shutdown(wait=True)
                emb._pool = None


def _throughput_sets(docs: list[dict], n: int, settings, rounds: int) -> dict:
    paths, st = _paths(settings)
    tok = st.tokenizer
    c = settings.chunking
    sets = {"scifact": scifact_chunks(docs, n, tok, c.chunk_tokens, c.overlap_tokens)}
    if (REPO / "README.md").is_file():
        sets["repo_docs"] = repo_doc_chunks(n, tok, c.chunk_tokens, c.overlap_tokens)
    out: dict = {"baseline": f"SentenceTransformer.encode(all chunks, batch_size={BASELINE_BATCH}, "
                             "normalize_embeddings=True), one call, CPU",
                 "app_batch_size": settings.embedder.batch_size, "max_seq_length": st.max_seq_length,
                 "rounds": rounds, "app_threads": "normal OS priority (rag.interactive off), like the baseline",
                 "chunking": c.model_dump(), "tokens": "of the text embedded: the chunk, its title prepended "
                                                       "(as the app indexes it); no special tokens",
                 "sets": {}}
    if "repo_docs" not in sets:
        out["sets"]["repo_docs"] = {"skipped": "README.md and docs/ are not beside bench/ (not a source checkout)"}
    for name, texts in sets.items():
        log.info("ingest throughput: %s, %d chunks", name, len(texts))
        out["sets"][name] = {**lengths(texts, tok), **_throughput(texts, paths, rounds)}
    return out


__all__ = ["lengths", "local_embedder", "query_latency", "repo_doc_chunks", "scifact_chunks", "throughput"]
