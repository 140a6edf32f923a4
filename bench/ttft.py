"""TTFT overhead of the answer path over a fake NIM's fixed time to first token.

    python -m bench.ttft [--n 100] [--server-ttft-ms 50] [--out bench/results/ttft.json]

A fake OpenAI-compatible server on loopback (rag/testing/fake_nim.py) waits a fixed time before its first
token. For each request we measure

- raw: a bare ``requests`` streaming POST to the server, until the first content chunk (the floor:
  the fixed TTFT plus loopback HTTP);
- app: ``rag.answer.answer()`` with 8 hits and a manual route (prompt build, health cache, ChatNVIDIA
  construction, LangChain streaming, SSE parsing), until its first ``Token`` event;
- router: the same with ``route="auto"`` and a query vector (exemplars warmed first);
- engine_ask_collection: ``Engine.ask`` in-process on a small collection (8 documents, hybrid retrieval with
  the app's query embedder included), until its first ``Token``;
- api_stream: the HTTP API (``POST /v1/chat/completions``, ``stream: true``, served by uvicorn on loopback) on
  the same collection, until the first SSE chunk with answer text, timed by a client in its own process
  (``bench/api_client.py``: one keep-alive ``httpx`` connection), as real clients are.

``api_stream - answer_manual`` is what the API path adds over calling ``answer()`` in-process (retrieval
included, since the API retrieves); ``api_stream - engine_ask_collection`` is the HTTP layer alone.

Overhead = measured TTFT - the server's fixed TTFT. The goal is <= 30 ms at p50 for the app path.
Not a test: timings depend on the machine; it prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from rag.testing.fake_nim import FakeNIM, Script, fake_catalog

REPO = Path(__file__).resolve().parent.parent


def pct(xs, q):
    return float(np.percentile(np.asarray(xs), q))


def hits(n=8):
    from rag.types import Chunk, Hit

    return [Hit(Chunk(id=f"d{i}#0", doc_id=f"d{i}", source=f"d{i}.md", title=f"Doc {i}",
                      text=("Some retrieved passage text about topic %d. " % i) * 12, start=0, end=1), score=1.0)
            for i in range(n)]


def raw_ttft(base_url: str) -> float:
    import requests

    body = {"model": "fake/model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    t0 = time.perf_counter()
    with requests.Session() as s:
        s.trust_env = False
        with s.post(f"{base_url}/chat/completions", json=body, stream=True, timeout=(5, 30)) as r:
            for line in r.iter_lines():
                if line and b'"content": "' in line and b'"content": ""' not in line:
                    return (time.perf_counter() - t0) * 1000
    raise RuntimeError("no token")


def app_ttft(question, hs, catalog, health, **kw) -> float:
    from rag.answer import Token, answer

    t0 = time.perf_counter()
    it = answer(question, hs, catalog=catalog, health=health, **kw)
    for ev in it:
        if isinstance(ev, Token):
            t = (time.perf_counter() - t0) * 1000
            for _ in it:  # drain so the connection closes cleanly
                pass
            return t
    raise RuntimeError("no token")


def engine_ttft(engine, question, retrieval) -> float:
    """The same through ``Engine.ask`` (the one path every face uses), over a given retrieval."""
    from rag.engine import Token

    t0 = time.perf_counter()
    it = engine.ask(question, retrieval=retrieval, route="speed")
    for ev in it:
        if isinstance(ev, Token):
            t = (time.perf_counter() - t0) * 1000
            for _ in it:
                pass
            return t
    raise RuntimeError("no token")


def api_runs(n: int, warmup: int, question: str, catalog, health) -> dict[str, list[float]]:
    """TTFT through ``Engine.ask`` on a collection, and through the HTTP API on the same collection."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from api import create_app
    from rag.config import load_settings
    from rag.embed import get_embedder
    from rag.engine import Engine
    from rag.testing.server import ServerThread
    from ui.backend import Backend

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        settings = load_settings(data_dir=tmp)
        engine = Engine(settings, embedder=get_embedder("local"), catalog=catalog, health=health)
        backend = Backend(settings, engine=engine)
        backend.ingest("bench", [(f"d{i}.md", (f"# Topic {i}\n\n" + f"Some passage text about topic {i}. " * 40)
                                  .encode()) for i in range(8)])
        backend.state.add_user("bench", "bench-password", "admin")  # keys act as a user; an admin reads "bench"
        key = backend.state.create_key("bench", "read", "bench")

        def engine_once() -> float:
            from rag.engine import Token

            t0 = time.perf_counter()
            it = engine.ask(question, collection="bench", route="speed")
            t = None
            for ev in it:
                if t is None and isinstance(ev, Token):
                    t = (time.perf_counter() - t0) * 1000
            return t

        app = create_app(settings, backend=backend, ui=False)
        with ServerThread(app) as srv:
            client = subprocess.Popen([sys.executable, "-m", "bench.api_client", srv.url, key, "bench", question],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)

            def api_once() -> float:
                client.stdin.write("go\n")
                client.stdin.flush()
                line = client.stdout.readline().strip()
                if not line or line.startswith("error"):
                    raise RuntimeError(f"API client: {line or 'exited'}")
                return float(line)

            try:
                for _ in range(warmup):
                    engine_once()
                    api_once()
                runs = {"engine_ask_collection": [], "api_stream": []}
                for _ in range(n):  # interleaved, so drift on a shared machine hits both alike
                    runs["engine_ask_collection"].append(engine_once())
                    runs["api_stream"].append(api_once())
            finally:
                client.stdin.close()
                client.wait(10)
        backend.jobs.close(timeout=10)
        return runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--server-ttft-ms", type=float, default=50.0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ttft.json"))
    ap.add_argument("--no-router", action="store_true", help="skip the auto-route run (needs the embedder)")
    ap.add_argument("--no-api", action="store_true", help="skip the HTTP API runs")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rag.llm import HealthCache

    fixed = args.server_ttft_ms / 1000
    server = FakeNIM(default=Script(ttft_s=fixed, tokens=["Hello", " world", " [1]."])).start()
    catalog = fake_catalog(server.base_url, read_s=30.0)
    health = HealthCache(ttl_s=30.0)
    hs = hits()
    question = "What does the passage say about topic 3?"
    runs = {}
    try:
        for _ in range(args.warmup):
            raw_ttft(server.base_url)
            app_ttft(question, hs, catalog, health, route="speed")
        runs["raw_http"] = [raw_ttft(server.base_url) for _ in range(args.n)]
        runs["answer_manual"] = [app_ttft(question, hs, catalog, health, route="speed") for _ in range(args.n)]
        from rag.config import load_settings
        from rag.engine import Engine
        from rag.retrieve import RetrievalResult

        engine = Engine(load_settings(), embedder=object(), catalog=catalog, health=health)
        retrieval = RetrievalResult(hits=hs, query_vector=None, retrieval_ms=0.0, mode="hybrid")
        runs["engine_ask_manual"] = [engine_ttft(engine, question, retrieval) for _ in range(args.n)]
        if not args.no_api:
            runs.update(api_runs(args.n, args.warmup, question, catalog, health))
        if not args.no_router:
            from rag.embed import get_embedder
            from rag.router import Router

            emb = get_embedder("local")
            router = Router.load(embedder=emb)
            router.warm()
            qv = emb.encode_queries([question])[0]
            runs["answer_auto_route"] = [app_ttft(question, hs, catalog, health, route="auto", router=router,
                                                  query_vector=qv) for _ in range(args.n)]
    finally:
        server.stop()

    rows = {}
    for name, xs in runs.items():
        over = [x - args.server_ttft_ms for x in xs]
        rows[name] = {"n": len(xs), "ttft_p50_ms": round(pct(xs, 50), 2), "ttft_p95_ms": round(pct(xs, 95), 2),
                      "overhead_p50_ms": round(pct(over, 50), 2), "overhead_p95_ms": round(pct(over, 95), 2),
                      "overhead_mean_ms": round(statistics.mean(over), 2)}
    print(f"fake server TTFT {args.server_ttft_ms:g} ms, {args.n} requests each, 8 chunks in the prompt")
    print(f"{'path':<20} {'TTFT p50':>9} {'TTFT p95':>9} {'over p50':>9} {'over p95':>9}")
    for name, r in rows.items():
        print(f"{name:<20} {r['ttft_p50_ms']:>9.2f} {r['ttft_p95_ms']:>9.2f} {r['overhead_p50_ms']:>9.2f} "
              f"{r['overhead_p95_ms']:>9.2f}")
    goal = rows["answer_manual"]["overhead_p50_ms"] <= 30
    print(f"goal (answer overhead p50 <= 30 ms): {'met' if goal else 'NOT met'}")
    api_added = None
    if "api_stream" in runs:
        added = [a - b for a, b in zip(runs["api_stream"], runs["answer_manual"])]
        http_only = [a - b for a, b in zip(runs["api_stream"], runs["engine_ask_collection"])]
        api_added = {"over_answer_p50_ms": round(pct(added, 50), 2), "over_answer_p95_ms": round(pct(added, 95), 2),
                     "http_layer_p50_ms": round(pct(http_only, 50), 2),
                     "http_layer_p95_ms": round(pct(http_only, 95), 2)}
        print(f"API adds over answer(): p50 {api_added['over_answer_p50_ms']:.2f} ms, p95 "
              f"{api_added['over_answer_p95_ms']:.2f} ms (retrieval included); the HTTP layer alone (over "
              f"Engine.ask on the same collection): p50 {api_added['http_layer_p50_ms']:.2f} ms, p95 "
              f"{api_added['http_layer_p95_ms']:.2f} ms")
        api_added["goal_p50_ms"] = 5
        api_added["goal_met_http_layer"] = api_added["http_layer_p50_ms"] <= 5
        api_added["goal_met_over_answer"] = api_added["over_answer_p50_ms"] <= 5
        print(f"goal (API adds <= 5 ms p50): HTTP layer {'met' if api_added['goal_met_http_layer'] else 'NOT met'}, "
              f"over answer() with retrieval {'met' if api_added['goal_met_over_answer'] else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "server_ttft_ms": args.server_ttft_ms, "results": rows, "goal_p50_ms": 30, "goal_met": goal,
        "api_added": api_added,
        "build": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
