"""Small helpers shared by the benchmark sections: timing, percentiles, memory, machine description."""
from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager

import numpy as np


def pct(ms: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(ms, dtype=np.float64), q)), 3) if len(ms) else float("nan")


def summary(ms: list[float]) -> dict:
    return {"p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "n": len(ms)}


def timed(fn, items, warmup: int = 3) -> list[float]:
    """Milliseconds of ``fn(item)`` for every item, after ``warmup`` untimed calls."""
    for it in items[:warmup]:
        fn(it)
    out = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        out.append((time.perf_counter() - t) * 1000)
    return out


@contextmanager
def stopwatch(into: dict, key: str):
    t = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - t, 3)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return round(float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)])), 4)


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    versions = {}
    for mod in ("faiss", "bm25s", "numba", "onnxruntime", "torch", "sentence_transformers", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    info["versions"] = versions
    return info
