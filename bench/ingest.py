"""Ingest: embedding throughput against a plain SentenceTransformer.encode loop, the nDCG cost of the
faster backends on SciFact, and adding one document to a large collection."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .common import ratio

log = logging.getLogger(__name__)


def real_chunks(docs: list[dict], n: int, tokenizer) -> list[str]:
    """The first n chunks of SciFact documents, cut by the app's own chunker (200 tokens, 40 overlap)."""
    from ingest.chunking import chunk_document
    from rag.types import Document

    out = []
    for d in docs:
        doc = Document(doc_id=d["_id"], source=f"{d['_id']}.txt", text=d["text"], title=d.get("title", ""))
        for c in chunk_document(doc, tokenizer, chunk_tokens=200, overlap_tokens=40):
            out.append(f"{c.title}\n{c.text}" if c.title else c.text)
            if len(out) >= n:
                return out
    return out


def throughput(docs: list[dict], n: int, cache_dir: Path, batch: int = 32) -> dict:
    """chunks/s of each embedding path on the same n chunks; the baseline runs first and last."""
    from sentence_transformers import SentenceTransformer

    from rag.embed import (
        LocalEmbedder,
        OnnxEmbedder,
        onnx_available,
        packaged_minilm_path,
    )

    st = SentenceTransformer(str(packaged_minilm_path()), device="cpu", local_files_only=True)
    st.max_seq_length = 256
    texts = real_chunks(docs, n, st.tokenizer)
    n = len(texts)

    def plain_loop(xs):
        return np.concatenate([st.encode(xs[i:i + batch], normalize_embeddings=True, show_progress_bar=False)
                               for i in range(0, len(xs), batch)])

    paths = {"plain_loop": plain_loop}
    local = LocalEmbedder(device="cpu")
    paths["app_torch"] = local.encode_documents
    if onnx_available():
        for name, q in (("app_onnx", False), ("app_onnx_int8", True)):
            paths[name] = OnnxEmbedder(cache_dir=cache_dir, quantize=q).encode_documents
    for f in paths.values():  # warm-up
        f(texts[:8])
    out, ref = {"chunks": n, "batch": batch}, None
    secs: dict[str, list[float]] = {}
    for name in list(paths) + ["plain_loop"]:  # the baseline runs first and last: drift shows
        t = time.perf_counter()
        vecs = paths[name](texts)
        secs.setdefault(name, []).append(time.perf_counter() - t)
        if ref is None:
            ref = vecs
        elif name != "plain_loop":
            out.setdefault("cosine_to_plain", {})[name] = round(float((vecs * ref).sum(1).mean()), 4)
    base = float(np.mean(secs["plain_loop"]))
    out["plain_loop_runs_s"] = [round(s, 2) for s in secs["plain_loop"]]
    for name, s in secs.items():
        cps = n / float(np.mean(s))
        out[name] = {"chunks_per_s": round(cps, 1), "x_plain_loop": ratio(base, float(np.mean(s)))}
    return out


def ndcg(scifact_dir: Path, docs: list[dict], torch_vecs: np.ndarray, data_dir: Path, cache_dir: Path,
         settings, backends=("onnx-int8",)) -> dict:
    """SciFact hybrid/dense nDCG@10 with the documents and queries embedded by torch vs each backend."""
    from rag.embed import get_embedder
    from rag.eval import evaluate, load_qrels, load_queries
    from rag.retrieve import Retriever
    from rag.store import CollectionWriter, DocRecord, open_collection
    from rag.types import Chunk

    from .data import embed_corpus

    queries = load_queries(scifact_dir / "queries.jsonl")
    qrels = load_qrels(scifact_dir / "qrels.tsv")

    def collection(name, vecs):
        with CollectionWriter(name, data_dir, embedder_id="sentence-transformers/all-MiniLM-L6-v2", dim=vecs.shape[1],
                              chunking=settings.chunking.model_dump(), sparse_settings=settings.sparse,
                              dense_settings=settings.dense, index_title=True) as w:
            for d, v in zip(docs, vecs):
                c = Chunk(id=f"{d['_id']}#0", doc_id=d["_id"], source=d["_id"], text=d["text"], start=0,
                          end=len(d["text"]), title=d.get("title", ""))
                w.add(DocRecord(d["_id"], d["_id"], d.get("title", ""), d["_id"]), [c], v[None])
            w.commit()
        return open_collection(name, data_dir)

    out = {}
    runs = [("torch", torch_vecs, get_embedder("local", backend="torch"))]
    for b in backends:
        emb = get_embedder("local", backend=b, cache_dir=cache_dir)
        t = time.perf_counter()
        vecs = embed_corpus(docs, emb, cache_dir)
        out[f"{b}_embed_corpus_s"] = round(time.perf_counter() - t, 1)
        runs.append((b, vecs, emb))
    for name, vecs, emb in runs:
        col = collection(f"scifact-{name}", vecs)
        r = Retriever(col, emb, settings.retrieval)
        res = evaluate(r, queries, qrels, modes=("dense", "hybrid"), depth_chunks=100)
        out[name] = {m: res[m]["ndcg@10"] for m in res}
    for b in backends:
        out[f"{b}_hybrid_delta"] = round(out[b]["hybrid"] - out["torch"]["hybrid"], 4)
    return out


def add_one_document(collection: str, data_dir: Path, settings, embedder, docs: list[dict]) -> dict:
    """Time ``ingest()`` of one new document into ``collection``: with the stored BM25 token ids
    (the app's strategy) and, on the next version, with them hidden (re-tokenise every row: the old way)."""
    from ingest.pipeline import ingest
    from rag.store import open_collection

    s = settings.model_copy(update={"data_dir": data_dir})
    out = {}
    for i, strategy in enumerate(("reuse_token_ids", "retokenise_all")):
        col = open_collection(collection, data_dir)
        hidden = []
        if strategy == "retokenise_all":
            for f in ("tokens.npy", "offsets.npy"):
                p = col.vdir / "sparse" / f
                if p.exists():
                    p.rename(p.with_suffix(".hidden"))
                    hidden.append(p)
        d = docs[-1 - i]
        body = f"{d.get('title', '')}\n\n{d['text']}\n\n" + "\n\n".join(x["text"] for x in docs[-10 - i:-2 - i])
        t = time.perf_counter()
        try:
            res = ingest(collection, [(f"new-{i}.txt", body.encode())], settings=s, embedder=embedder)
        finally:
            for p in hidden:
                p.with_suffix(".hidden").rename(p)
        dt = time.perf_counter() - t
        new = open_collection(collection, data_dir)
        out[strategy] = {"seconds": round(dt, 2), "chunks_added": res[0].chunks, "status": res[0].status,
                         "collection_chunks": new.size, "commit_phases_s": new.manifest["build"].get("seconds"),
                         "dense_grown_in_place": new.manifest["build"].get("dense_grown_in_place"),
                         "sparse_tokens_reused": new.manifest["build"].get("sparse_tokens_reused")}
    out["x_faster"] = ratio(out["retokenise_all"]["seconds"], out["reuse_token_ids"]["seconds"])
    return out


__all__ = ["throughput", "ndcg", "add_one_document", "real_chunks"]
