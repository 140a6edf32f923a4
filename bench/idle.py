"""An idle server's CPU use: ``hybrid-rag serve`` started as a user starts it, then left alone.

    python -m bench.idle [--seconds 20] [--windows 3] [--out bench/results/idle.json]
    python -m bench --sections idle                    # the same as a section of the whole benchmark

Each configuration runs the real command (``python -m rag.cli serve`` on a free loopback port, one data
directory shared by all, its starter collection built before the first timed run) and waits for ``/readyz``.
After a settling pause, the server's CPU time (user + system, every thread, from ``/proc/PID/stat``) is read
over ``--windows`` windows of ``--seconds`` each and reported as percent of one core. The app as configured
is beside the baseline, Gradio's own queue timing (an idle sleep of 1 ms, a progress look every 10 ms), in the
same run; with ``/usr/bin/chromium`` present, both again with the page open in a headless browser (Gradio's
page keeps a connection open).

Goal (issue 15): an idle server under 1 % of a core. Linux only (``/proc``). Not a test: prints a table and
writes JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import machine

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# Gradio's own queue timing (gradio.queueing.Queue): what ui.app.quiet_queue changes
BASELINE = {"QUEUE_POLL_S": 0.001, "PROGRESS_POLL_S": 0.01}
GOAL_PCT = 1.0
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _child_code(patch: dict) -> str:
    sets = "".join(f"a.{k} = {v!r}; " for k, v in patch.items())
    return ("import sys, ui.app as a; " + sets +
            "from rag.cli import main; sys.exit(main(sys.argv[1:]))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of proc(5))


@contextlib.contextmanager
def serve(data_dir: Path, patch: dict, ready_s: float = 300.0):
    import httpx

    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HYBRID_RAG_DATA": str(data_dir)}
    env.pop("HYBRID_RAG_ADMIN_PASSWORD", None)
    cmd = [sys.executable, "-c", _child_code(patch), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready within {ready_s:.0f} s")
            time.sleep(0.5)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def page_open(url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/", wait_until="networkidle", timeout=60_000)
            yield page
        finally:
            browser.close()


def measure(pid: int, seconds: float, windows: int) -> list[float]:
    """Percent of one core over each window."""
    out = []
    for _ in range(windows):
        c0, t0 = _cpu_s(pid), time.monotonic()
        time.sleep(seconds)
        out.append(100.0 * (_cpu_s(pid) - c0) / (time.monotonic() - t0))
    return [round(x, 2) for x in out]


def run(seconds: float = 20.0, windows: int = 3, settle_s: float = 5.0, data_dir: Path | None = None,
        browser: bool | None = None) -> dict:
    tmp = None
    if data_dir is None:
        tmp = tempfile.mkdtemp(prefix="hybrid-rag-idle-")
        data_dir = Path(tmp)
    browser = os.path.exists(CHROMIUM) if browser is None else browser
    configs = [("app (ui.app.quiet_queue: 50 ms idle sleep, 200 ms progress look)", {}, False),
               ("baseline (Gradio's queue timing: 1 ms idle sleep, 10 ms progress look)", BASELINE, False)]
    if browser:
        configs += [("app, page open in a browser", {}, True), ("baseline, page open in a browser", BASELINE, True)]
    rows = {}
    try:
        with serve(data_dir, {}):  # first start: builds the starter collection, untimed
            pass
        for name, patch, with_page in configs:
            with serve(data_dir, patch) as (proc, url):
                with page_open(url) if with_page else contextlib.nullcontext():
                    time.sleep(settle_s)
                    pcts = measure(proc.pid, seconds, windows)
            rows[name] = {"core_pct_median": round(statistics.median(pcts), 2), "core_pct_max": max(pcts),
                          "windows_pct": pcts}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    app, base = rows[configs[0][0]], rows[configs[1][0]]
    ratio = base["core_pct_median"] / app["core_pct_median"] if app["core_pct_median"] > 0 else None
    return {"rows": rows, "baseline_over_app": round(ratio, 1) if ratio else None, "goal_pct": GOAL_PCT,
            "seconds": seconds, "windows": windows, "settle_s": settle_s, "load_avg_after": list(os.getloadavg())}


def table(res: dict) -> str:
    lines = ["| server, idle | % of one core, median | max | windows |", "|---|---|---|---|"]
    for name, r in res["rows"].items():
        lines.append(f"| {name} | {r['core_pct_median']:.2f} | {r['core_pct_max']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['windows_pct'])} |")
    lines.append(f"\nBaseline / app: {res['baseline_over_app']}x. {res['windows']} windows of {res['seconds']:.0f} s "
                 f"after {res['settle_s']:.0f} s; goal < {res['goal_pct']} % of a core.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of one measuring window")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true", help="skip the rows with a page open")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "idle.json"))
    args = ap.parse_args(argv)
    res = run(args.seconds, args.windows, browser=False if args.no_browser else None)
    report = {"command": "python -m bench.idle " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(), "idle": res}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
