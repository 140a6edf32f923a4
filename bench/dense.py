"""Dense search: exact against approximate at equal recall.

Every approximate index is built once, saved, and reopened with ``DenseIndex.load`` at each query-time
setting (IVF ``nprobe``, HNSW ``efSearch``), as the app applies them. For each, on the same vectors and
queries: recall@10 against exact search, latency (one query at a time, top ``depth``, one thread),
bytes per vector and build time. ``at_target`` is the smallest setting whose recall@10 reaches the target
(``--recall-target``, 0.95), with its speed-up over exact: a speed-up is only claimed at that recall.
"""
from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path

import numpy as np

from rag.config import DenseSettings
from rag.dense import DenseIndex

from .common import ratio, recall_at, summary, timed

CODEC = {"flat": "Flat", "fp16": "SQfp16", "sq8": "SQ8", "pq": "PQ4fs"}
NPROBES = (8, 16, 32, 64, 128, 256)
EF_SEARCHES = (16, 32, 64, 128, 256)
_KNOB = {"ivf_nprobe": "nprobe", "hnsw_ef_search": "efSearch"}


def label(idx: DenseIndex, recall: float | None = None) -> str:
    """What a row measures, e.g. ``IVF-SQ8 nlist=632 nprobe=64 (approximate, recall@10 0.953)``."""
    if idx.kind == "flat":
        return "exact IndexFlatIP"
    if idx.kind == "ivf":
        name = f"IVF-{CODEC[idx.storage]} nlist={idx.index.nlist} nprobe={idx.ivf_nprobe}"
    else:
        name = f"HNSW-{CODEC[idx.storage]} M={idx.hnsw_m} efSearch={idx.ef_search}"
    return name + (f" (approximate, recall@10 {recall:.3f})" if recall is not None else " (approximate)")


def short(idx: DenseIndex) -> str:
    return "exact" if idx.kind == "flat" else f"{idx.kind}-{idx.storage}"


def exact_index(vecs: np.ndarray) -> DenseIndex:
    return DenseIndex(vecs.shape[1], DenseSettings(exact_max=10**12, use_gpu="never")).build(vecs)


def measure(idx: DenseIndex, q_vecs: np.ndarray, truth: np.ndarray | None, depth: int) -> dict:
    row = summary(timed(lambda v: idx.search(v, depth), list(q_vecs)))
    if truth is not None:
        row["recall@10"] = recall_at(idx.search(q_vecs, 10)[1], truth)
    return row


def _sweep(built: DenseIndex, path: Path, knob: str, values, q_vecs, truth, depth, target, exact_p50) -> dict:
    built.save(path)
    out = {"bytes_per_vector": round(built.memory_bytes() / built.size, 1), "curve": []}
    for v in values:
        idx = DenseIndex.load(path, DenseSettings(use_gpu="never", **{knob: v}))
        row = measure(idx, q_vecs, truth, depth)
        out["curve"].append({"setting": f"{_KNOB[knob]}={v}", "label": label(idx, row["recall@10"]), **row,
                             "x_vs_exact_p50": ratio(exact_p50, row["p50_ms"])})
    hit = next((r for r in out["curve"] if r["recall@10"] >= target), None)
    out["at_target"] = hit or {"not_reached": f"best recall@10 {max(r['recall@10'] for r in out['curve']):.3f}"}
    shutil.rmtree(path, ignore_errors=True)
    return out


def variants(vecs: np.ndarray, q_vecs: np.ndarray, settings, work: Path, depth: int, target: float = 0.95,
             storages=("flat", "fp16", "sq8"), hnsw: bool = True) -> dict:
    """Exact beside IVF (each storage, nprobe swept) and HNSW-SQ8 (efSearch swept) on the same vectors."""
    s = settings.dense
    t = time.perf_counter()
    exact = exact_index(vecs)
    build_s = round(time.perf_counter() - t, 2)
    _, truth = exact.search(q_vecs, 10)
    ex = measure(exact, q_vecs, None, depth)
    out = {"size": len(vecs), "queries": len(q_vecs), "depth": depth, "recall_target": target,
           "exact": {"label": label(exact), **ex, "recall@10": 1.0, "build_s": build_s,
                     "bytes_per_vector": round(exact.memory_bytes() / len(vecs), 1)}}
    del exact
    plans = [(f"ivf-{st}", DenseSettings(exact_max=0, approx="ivf", storage=st, ivf_nlist=s.ivf_nlist,
                                         use_gpu="never"), "ivf_nprobe", sorted({*NPROBES, s.ivf_nprobe}))
             for st in storages]
    if hnsw:
        plans.append(("hnsw-sq8", DenseSettings(exact_max=0, approx="hnsw", storage="sq8", hnsw_m=s.hnsw_m,
                                                hnsw_ef_construction=s.hnsw_ef_construction, use_gpu="never"),
                      "hnsw_ef_search", sorted({*EF_SEARCHES, s.hnsw_ef_search})))
    for name, build_settings, knob, values in plans:
        t = time.perf_counter()
        idx = DenseIndex(vecs.shape[1], build_settings).build(vecs)
        build_s = round(time.perf_counter() - t, 2)
        if knob == "ivf_nprobe":
            values = [v for v in values if v <= idx.index.nlist]
        out[name] = {"build_s": build_s,
                     **_sweep(idx, work / name, knob, values, q_vecs, truth, depth, target, ex["p50_ms"])}
        del idx
        gc.collect()
    return out


__all__ = ["variants", "label", "short", "exact_index", "measure"]
