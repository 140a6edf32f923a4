"""Small helpers shared by the benchmark sections: timing, percentiles, ratios, machine description."""
from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager
from importlib import metadata

import numpy as np

# the libraries whose versions move the figures: name in the report -> distributions that provide it
LIBRARIES = {
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
    "bm25s": ("bm25s",), "numba": ("numba",), "rank-bm25": ("rank-bm25",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "torch": ("torch",),
    "sentence-transformers": ("sentence-transformers",), "transformers": ("transformers",),
    "numpy": ("numpy",), "hybrid-rag": ("hybrid-rag",),
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx_tile")


def pct(ms: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(ms, dtype=np.float64), q)), 3) if len(ms) else float("nan")


def summary(ms: list[float]) -> dict:
    return {"p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "n": len(ms)}


def timed(fn, items, warmup: int = 3) -> list[float]:
    """Milliseconds of ``fn(item)`` for every item, after ``warmup`` untimed calls (JIT compiles, caches)."""
    for it in items[:warmup]:
        fn(it)
    out = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        out.append((time.perf_counter() - t) * 1000)
    return out


def timed_interleaved(fns: dict, items, warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds of each ``fns[name](item)``, the functions taking turns on every item (the first one
    rotates), so that a load that comes and goes during the run falls on all of them alike."""
    names = list(fns)
    for it in items[:warmup]:
        for n in names:
            fns[n](it)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i, it in enumerate(items):
        for n in names[i % len(names):] + names[:i % len(names)]:
            t = time.perf_counter()
            fns[n](it)
            out[n].append((time.perf_counter() - t) * 1000)
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
    """a / b rounded, or None when b is 0 or missing (a speed-up is ``ratio(baseline_ms, ours_ms)``)."""
    return round(a / b, 2) if a is not None and b else None


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return round(float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)])), 4)


def _version(dists) -> str | None:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine() -> dict:
    """CPU model, cores, RAM, OS, Python and library versions. No host name, user or path."""
    info: dict = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        pass
    try:
        with open("/proc/cpuinfo") as f:
            flags: set[str] = set()
            for line in f:
                if line.startswith("model name") and "cpu" not in info:
                    info["cpu"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
        info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    info["threads_env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
                           if k in os.environ}
    info["versions"] = {name: _version(dists) for name, dists in LIBRARIES.items()}
    return info
