"""What accounts and rights cost per request: the state database's lookups beside their floors.

    python -m bench.state [--n 500] [--database-url URL] [--out bench/results/state.json]

Every API request looks up its key (``verify_key``) and checks a right (``require_read``); every web event
looks up its session (``session_user``) and the user's readable collections (``readable``); a sign-in verifies
an argon2 hash (``authenticate``). Each is timed in one process, one call at a time, beside its floor in the
same run: a bare ``SELECT 1`` on the same engine (the cost of any database round trip) for the lookups, and
argon2-cffi's own ``PasswordHasher.verify`` of the same hash for the sign-in. SQLite in a temporary data
directory by default; ``--database-url`` (e.g. ``postgresql+psycopg://...``) to measure a server. Prints a
Markdown table and writes JSON. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from .common import machine


def _timed(fn, n: int) -> dict:
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t0) * 1000)
    xs.sort()
    return {"n": n, "p50_ms": round(statistics.median(xs), 3), "p95_ms": round(xs[min(n - 1, int(0.95 * n))], 3)}


def run(n: int = 500, database_url: str | None = None) -> dict:
    from argon2 import PasswordHasher

    from rag.config import load_settings
    from rag.state import open_state

    data = Path(tempfile.mkdtemp(prefix="hr-bench-state-"))
    environ = dict(os.environ)
    environ.pop("HYBRID_RAG_DATABASE_URL", None)
    if database_url:
        environ["HYBRID_RAG_DATABASE_URL"] = database_url
    st = open_state(load_settings(data_dir=data), environ=environ)
    owner = st.add_user("bench-owner", "bench-password-1", "editor")
    st.add_user("bench-reader", "bench-password-2", "reader")
    st.set_owner("docs", owner)
    st.grant("docs", "bench-reader", as_="reader")
    key = st.create_key("bench-key", "read", "bench-reader")
    token = st.create_session("bench-reader")
    reader = st.get_user("bench-reader")
    names = [f"other-{i}" for i in range(49)] + ["docs"]

    def select_one():
        with st.engine.connect() as c:
            c.execute(text("SELECT 1")).scalar()

    with st.engine.connect() as c:
        stored = c.execute(text("SELECT password_hash FROM users WHERE name = 'bench-owner'")).scalar()
    ph = PasswordHasher()
    rows = {
        "floor: SELECT 1 on the same engine": _timed(select_one, n),
        "verify_key (API key -> user)": _timed(lambda: st.verify_key(key), n),
        "session_user (web cookie -> user)": _timed(lambda: st.session_user(token), n),
        "require_read (one collection)": _timed(lambda: st.require_read(reader, "docs"), n),
        "readable (50 collection names)": _timed(lambda: st.readable(reader, names), max(50, n // 2)),
        "floor: argon2-cffi verify of the same hash": _timed(lambda: ph.verify(stored, "bench-password-1"), 20),
        "authenticate (sign-in: throttle + argon2)": _timed(lambda: st.authenticate("bench-owner", "bench-password-1"),
                                                             20),
    }
    st.close()
    return {"database": st.dialect, "rows": rows, "machine": machine()}


def render(report: dict) -> str:
    lines = [f"State database per-request costs ({report['database']}; ms, one call at a time)", "",
             "| call | p50 | p95 | n |", "|---|---|---|---|"]
    for name, r in report["rows"].items():
        lines.append(f"| {name} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['n']} |")
    m = report["machine"]
    lines += ["", f"machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, load average {m.get('load_avg_at_start')}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.state", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="calls per lookup row (default 500)")
    ap.add_argument("--database-url", help="measure this database instead of SQLite in a temporary data directory")
    ap.add_argument("--out", default="bench/results/state.json")
    args = ap.parse_args(argv)
    if args.n < 20:
        ap.error("--n must be at least 20")
    report = run(args.n, args.database_url)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(render(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
