"""GPU paths against the CPU in the same run: FAISS search (exact and IVF-SQ8) and document embedding.

Standalone, so it runs on a GPU machine that has only faiss-gpu, numpy and (for embedding) torch with
sentence-transformers: no SciFact files, no store. Vectors are synthetic unit vectors drawn around
random cluster centres (so IVF has structure to use); queries are perturbed corpus vectors.

    python -m bench.gpu --n 1000000 --out gpu.json                 # FAISS
    python -m bench.gpu --embed-model DIR --texts 2048             # + embedding (a sentence-transformers dir)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .common import machine, recall_at, summary, timed


def _say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def clustered_unit_vectors(n: int, d: int = 384, clusters: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        x = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, d)).astype(np.float32)
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def faiss_section(n: int, n_queries: int, batch: int) -> dict:
    from rag.config import DenseSettings
    from rag.dense import DenseIndex, gpu_count

    from .dense import label

    out: dict = {"faiss_gpus": gpu_count(), "n": n}
    if not gpu_count():
        out["skipped"] = "faiss sees no GPU (install faiss-gpu on a CUDA machine)"
        return out
    x = clustered_unit_vectors(n)
    _say(f"faiss: {n} vectors made")
    rng = np.random.default_rng(1)
    q = x[rng.integers(0, n, n_queries)] + 0.3 * rng.standard_normal((n_queries, x.shape[1])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for kind, kw in (("exact", {"exact_max": 10**12}), ("ivf-sq8", {"exact_max": 0, "approx": "ivf",
                                                                     "storage": "sq8"})):
        t = time.perf_counter()
        cpu = DenseIndex(x.shape[1], DenseSettings(use_gpu="never", **kw)).build(x)
        build_cpu = time.perf_counter() - t
        t = time.perf_counter()
        gpu = DenseIndex(x.shape[1], DenseSettings(use_gpu="auto", **kw)).build(x)
        build_gpu = time.perf_counter() - t  # includes the copy to the GPU
        _say(f"faiss {kind}: built (cpu {build_cpu:.1f} s, gpu {build_gpu:.1f} s)")
        _, rc = cpu.search(q, 10)
        _, rg = gpu.search(q, 10)
        one = list(q[:200])
        row = {"device": gpu.device, "label": label(cpu), "build_s_cpu": round(build_cpu, 2),
               "build_and_copy_s_gpu": round(build_gpu, 2),
               "one_query_ms_cpu": summary(timed(lambda v: cpu.search(v, 100), one)),
               "one_query_ms_gpu": summary(timed(lambda v: gpu.search(v, 100), one)),
               "gpu_top10_vs_cpu_top10": recall_at(rg, rc)}
        _say(f"faiss {kind}: one-query timings done")
        for name, idx in (("cpu", cpu), ("gpu", gpu)):
            idx.search(q[:batch], 100)
            t = time.perf_counter()
            for i in range(0, len(q), batch):
                idx.search(q[i:i + batch], 100)
            row[f"batched_qps_{name}"] = round(len(q) / (time.perf_counter() - t), 1)
        row["batched_qps_x"] = round(row["batched_qps_gpu"] / row["batched_qps_cpu"], 1)
        row["one_query_p50_x"] = round(row["one_query_ms_cpu"]["p50_ms"] / row["one_query_ms_gpu"]["p50_ms"], 1)
        if kind == "exact":
            exact_rows = rc
        else:
            row["recall@10_vs_exact_cpu"] = recall_at(rc, exact_rows)
        out[kind] = row
        _say(f"faiss {kind}: {row}")
    return out


def embedding_section(model_dir: str, n_texts: int) -> dict:
    import torch

    from rag.embed import LocalEmbedder

    if not torch.cuda.is_available():
        return {"skipped": "torch sees no CUDA device"}
    rng = np.random.default_rng(2)
    words = "protein cell cancer gene expression vitamin deficiency immune response mouse model tumour " \
            "therapy risk patients clinical trial dose receptor pathway signalling inflammation".split()
    texts = [" ".join(rng.choice(words, int(rng.integers(60, 180)))) for _ in range(n_texts)]
    res, vecs = {"texts": n_texts, "gpu_name": torch.cuda.get_device_name(0)}, {}
    for dev in ("cpu", "cuda"):
        emb = LocalEmbedder(model_path=model_dir, device=dev)
        emb.model.float()
        emb.encode_documents(texts[:64])
        sub = texts if dev == "cuda" else texts[:512]  # the CPU is slow: a sample is enough for a rate
        t = time.perf_counter()
        vecs[dev] = emb.encode_documents(sub)
        res[f"chunks_per_s_{dev}"] = round(len(sub) / (time.perf_counter() - t), 1)
    res["x_cuda_vs_cpu"] = round(res["chunks_per_s_cuda"] / res["chunks_per_s_cpu"], 1)
    m = min(len(vecs["cpu"]), len(vecs["cuda"]))
    res["mean_cosine_cuda_vs_cpu"] = round(float((vecs["cpu"][:m] * vecs["cuda"][:m]).sum(1).mean()), 5)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the FAISS comparison")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256, help="queries per batched search")
    ap.add_argument("--embed-model", help="a sentence-transformers model folder (all-MiniLM-L6-v2)")
    ap.add_argument("--texts", type=int, default=2048)
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    report = {"command": "python -m bench.gpu " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine()}
    if not a.skip_faiss:
        report["faiss"] = faiss_section(a.n, a.queries, a.batch)
    if a.embed_model:
        report["embedding"] = embedding_section(a.embed_model, a.texts)
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
