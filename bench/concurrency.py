"""Concurrent chat users against the fake NIM (rag/testing/fake_nim.py): retrieval + ``rag.answer.answer()``
per turn, in threads (as the Gradio server runs handlers). Reports errors and the app's overhead on
time to first token: TTFT measured by the user (retrieval included) minus the fake server's fixed TTFT,
and the same from the start of ``answer()`` (retrieval excluded)."""
from __future__ import annotations

import threading
import time

from .common import pct


def run(retriever, queries: list[str], users=(10, 50), turns: int = 3, server_ttft_ms: float = 50.0) -> dict:
    from rag.answer import Done, Token, answer
    from rag.llm import HealthCache
    from rag.testing import fake_nim

    # a listen backlog of 5 (socketserver's default) makes a 50-user burst wait on SYN retries:
    # a fake-server artefact, not the app's; real NIMs (uvicorn) listen with a backlog of 2048
    fake_nim._Server.request_queue_size = 256
    out = {"server_ttft_ms": server_ttft_ms, "turns_per_user": turns}
    server = fake_nim.FakeNIM(default=fake_nim.Script(ttft_s=server_ttft_ms / 1000,
                                                      tokens=["The answer ", "is in ", "the sources ", "[1]."])).start()
    try:
        catalog = fake_nim.fake_catalog(server.base_url, read_s=60.0)
        health = HealthCache(ttl_s=60.0)
        # warm-up: first searches page the collection in and start ONNX Runtime's threads; the first
        # answer opens the HTTP pool and fills the health cache. None of that is per-request cost.
        for q in queries[:5]:
            res = retriever.search(q, mode="hybrid")
        for _ in answer(queries[0], res.hits, route="speed", catalog=catalog, health=health):
            pass
        for n in users:
            ttft, total, retr, errors, fallbacks, ans = [], [], [], [], [], []
            lock = threading.Lock()
            barrier = threading.Barrier(n)

            def user(u):
                barrier.wait()
                for t in range(turns):
                    q = queries[(u * turns + t) % len(queries)]
                    t0 = time.perf_counter()
                    try:
                        res = retriever.search(q, mode="hybrid")
                        t1 = time.perf_counter()
                        first = None
                        done = None
                        for ev in answer(q, res.hits, route="speed", catalog=catalog, health=health,
                                         query_vector=res.query_vector, retrieval_ms=res.retrieval_ms):
                            if isinstance(ev, Token) and first is None:
                                first = time.perf_counter()
                            elif isinstance(ev, Done):
                                done = ev
                        meta = getattr(done, "meta", {}) or {}
                        if first is None or meta.get("error") or meta.get("embedded"):
                            raise RuntimeError(f"no answer from the fake NIM: error={meta.get('error')} "
                                               f"fallbacks={meta.get('fallbacks')}")
                        if meta.get("fallbacks"):
                            with lock:
                                fallbacks.append(str(meta["fallbacks"])[:200])
                        with lock:
                            retr.append((t1 - t0) * 1000)
                            ttft.append((first - t0) * 1000)
                            ans.append((first - t1) * 1000)
                            total.append((time.perf_counter() - t0) * 1000)
                    except Exception as e:  # counted, not raised: the point is how many
                        with lock:
                            errors.append(f"{type(e).__name__}: {e}"[:200])

            threads = [threading.Thread(target=user, args=(u,)) for u in range(n)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
            over = [x - server_ttft_ms for x in ttft]
            out[f"{n}_users"] = {
                "requests": n * turns, "errors": len(errors), "error_samples": sorted(set(errors))[:3],
                "retries_or_fallbacks": len(fallbacks),
                "ttft_p50_ms": round(pct(ttft, 50), 1), "ttft_p95_ms": round(pct(ttft, 95), 1),
                "overhead_p50_ms": round(pct(over, 50), 1), "overhead_p95_ms": round(pct(over, 95), 1),
                "retrieval_p50_ms": round(pct(retr, 50), 1), "retrieval_p95_ms": round(pct(retr, 95), 1),
                "answer_overhead_p50_ms": round(pct([x - server_ttft_ms for x in ans], 50), 1),
                "answer_overhead_p95_ms": round(pct([x - server_ttft_ms for x in ans], 95), 1), "total_p95_ms": round(pct(total, 95), 1),
                "wall_s": round(wall, 2), "requests_per_s": round(n * turns / wall, 1)}
    finally:
        server.stop()
    return out


__all__ = ["run"]
