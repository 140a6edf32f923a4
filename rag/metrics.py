"""Prometheus metrics of the process, served by the HTTP API at ``GET /metrics``.

Every face records into the same process-wide registry: answers (Chat tab, Compare, API) through
:func:`record_answer`, retrieval through :func:`record_retrieval`, ingest jobs through
:func:`record_ingest`, HTTP requests through the API's middleware (:func:`record_request`). Job
counts by state are read from the job managers at scrape time (:func:`watch_jobs`).

Labels are bounded: HTTP paths are route templates (``/v1/collections/{name}``), fallback reasons are
classes (``key_missing``, ``down``, ...), model and endpoint names come from the catalog.
"""
from __future__ import annotations

import threading
import weakref

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

_MS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUESTS = Counter("hybrid_rag_http_requests", "HTTP requests by path template, method and status",
                        ["path", "method", "status"])
HTTP_SECONDS = Histogram("hybrid_rag_http_request_seconds", "HTTP request latency (streams: until the last byte)",
                         ["path", "method", "status"], buckets=_MS)
RETRIEVAL_SECONDS = Histogram("hybrid_rag_retrieval_seconds", "Retrieval time, query embedding included",
                              ["mode"], buckets=_MS)
TTFT_SECONDS = Histogram("hybrid_rag_ttft_seconds", "Time to the first answer token, routing and fallbacks included",
                         ["model", "endpoint"], buckets=_MS)
TOKENS_PER_S = Histogram("hybrid_rag_tokens_per_second", "Generation speed after the first token",
                         ["model", "endpoint"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
ANSWERS = Counter("hybrid_rag_answers", "Answers by model, endpoint and outcome (ok, partial)",
                  ["model", "endpoint", "outcome"])
FALLBACKS = Counter("hybrid_rag_fallbacks", "Endpoints skipped on the way to an answer, by reason",
                    ["endpoint", "reason"])
GENERATIONS = Gauge("hybrid_rag_generations_in_progress", "Answers being generated for API clients now")
INGEST_CHUNKS = Counter("hybrid_rag_ingest_chunks", "Chunks embedded and committed by ingest jobs")
INGEST_CHUNKS_PER_S = Histogram("hybrid_rag_ingest_chunks_per_second", "Ingest throughput per finished job",
                                buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


def fallback_reason(text: str) -> str:
    """The class of a fallback reason from :func:`rag.answer.answer` (bounded label values)."""
    t = (text or "").lower()
    if t.endswith("is not set"):
        return "key_missing"
    if t.startswith("down"):
        return "down"
    if t.startswith("failed recently"):
        return "failed_recently"
    if t.startswith("serves "):
        return "not_served"
    if t.startswith("retried"):
        return "retried"
    if "401" in t or "403" in t or "key" in t:
        return "auth"
    if "429" in t or "rate" in t:
        return "rate_limited"
    if "timed out" in t or "timeout" in t:
        return "timeout"
    return "error"


def record_retrieval(mode: str, ms: float | None) -> None:
    if ms is not None:
        RETRIEVAL_SECONDS.labels(mode or "?").observe(ms / 1000)


def record_answer(meta: dict) -> None:
    """Observe a finished answer's ``Done.meta``: TTFT, tokens/s, outcome and its fallbacks."""
    model = str(meta.get("model") or "?")
    endpoint = str((meta.get("endpoint") or {}).get("name") or "?")
    if meta.get("ttft_ms") is not None:
        TTFT_SECONDS.labels(model, endpoint).observe(meta["ttft_ms"] / 1000)
    if meta.get("tokens_per_s"):
        TOKENS_PER_S.labels(model, endpoint).observe(meta["tokens_per_s"])
    ANSWERS.labels(model, endpoint, "partial" if meta.get("partial") else "ok").inc()
    for f in meta.get("fallbacks") or []:
        FALLBACKS.labels(str(f.get("endpoint") or "?"), fallback_reason(str(f.get("reason") or ""))).inc()


def record_no_answer(fallbacks: list[dict]) -> None:
    """Every endpoint failed: count each reason."""
    for f in fallbacks or []:
        FALLBACKS.labels(str(f.get("endpoint") or "?"), fallback_reason(str(f.get("reason") or ""))).inc()


def record_ingest(chunks: int, seconds: float) -> None:
    INGEST_CHUNKS.inc(max(int(chunks), 0))
    if chunks > 0 and seconds > 0:
        INGEST_CHUNKS_PER_S.observe(chunks / seconds)


def record_request(path: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(path, method, str(status)).inc()
    HTTP_SECONDS.labels(path, method, str(status)).observe(seconds)


# --- jobs by state, read at scrape time -----------------------------------------------------------
_MANAGERS: "weakref.WeakSet" = weakref.WeakSet()
_LOCK = threading.Lock()


def watch_jobs(manager) -> None:
    """Report ``manager.counts()`` (jobs by state) as ``hybrid_rag_jobs{state}``."""
    with _LOCK:
        _MANAGERS.add(manager)


class _JobCollector:
    def collect(self):
        g = GaugeMetricFamily("hybrid_rag_jobs", "Ingest jobs by state", labels=["state"])
        totals = dict.fromkeys(JOB_STATES, 0)
        with _LOCK:
            managers = list(_MANAGERS)
        for m in managers:
            for state, n in m.counts().items():
                totals[state] = totals.get(state, 0) + n
        for state, n in totals.items():
            g.add_metric([state], n)
        yield g

    def describe(self):
        return []


REGISTRY.register(_JobCollector())

__all__ = ["record_answer", "record_no_answer", "record_retrieval", "record_ingest", "record_request",
           "watch_jobs", "fallback_reason", "GENERATIONS", "REGISTRY"]
