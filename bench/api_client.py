"""A client of the HTTP API in its own process (as real clients are), for bench/ttft.py.

    python -m bench.api_client URL KEY COLLECTION QUESTION

Reads one line per request from stdin; for each, streams ``POST URL/v1/chat/completions`` over one keep-alive
connection and prints the milliseconds to the first SSE chunk with answer text (or ``error ...``).
"""
from __future__ import annotations

import json
import sys
import time

import httpx


def _has_text(payload: str) -> bool:
    choices = json.loads(payload).get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def main(argv=None) -> int:
    url, key, collection, question = (argv or sys.argv[1:])[:4]
    body = {"model": "speed", "collection": collection, "stream": True,
            "messages": [{"role": "user", "content": question}]}
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30, trust_env=False) as client:
        for _ in sys.stdin:
            t0 = time.perf_counter()
            t = None
            try:
                with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if t is None and line.startswith("data: {") and _has_text(line[6:]):
                            t = (time.perf_counter() - t0) * 1000
                print(f"{t:.4f}" if t is not None else "error no token", flush=True)
            except httpx.HTTPError as e:
                print(f"error {e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
