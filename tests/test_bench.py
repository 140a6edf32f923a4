"""`python -m bench --quick` runs every section end to end and writes valid JSON. No timing is asserted."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_bench_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out),
                          "--data-dir", str(tmp_path / "data")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    report = json.loads(text)
    sections = report["sections"]
    failed = {k: v["error"] for k, v in sections.items() if isinstance(v, dict) and "error" in v}
    assert not failed, failed

    # where the figures came from, and on what
    assert report["command"].startswith("python -m bench --quick")
    assert report["machine"]["versions"]["faiss"] and report["machine"]["versions"]["bm25s"]
    host = socket.gethostname()
    assert len(host) < 8 or host not in text
    assert str(Path.home()) == "/" or str(Path.home()) + "/" not in text
    assert report["scifact"]["reference_vectors"]["backend"] == "torch"
    assert "/tmp/exp" not in text and "doc_vectors" not in text

    r = sections["retrieval_2000"]
    for mode in ("sparse", "dense", "hybrid"):
        assert r["retriever"][mode]["p50_ms"] > 0
    for row in ("ours", "ours_touched_only", "bm25s_numba", "bm25s_numpy", "rank_bm25"):
        assert r["sparse"][row]["p50_ms"] > 0, row
    for row in ("hybrid+embed", "hybrid+embed_previous", "sparse+embed", "sparse+embed_previous"):
        assert r["retriever"][row]["p50_ms"] > 0, row
    assert r["retriever"]["hybrid+embed"]["x_vs_previous_p50"] > 0
    assert r["dense"]["recall@10_vs_exact"] > 0.5
    assert r["dense"]["index"]["label"] and r["dense"]["exact"]["label"] == "exact IndexFlatIP"
    assert r["memory"]["total_B_per_chunk"] > 0

    dv = sections["dense_variants"]
    for name in ("ivf-sq8", "hnsw-sq8"):
        assert dv[name]["curve"] and "at_target" in dv[name]

    sets = sections["ingest"]["sets"]
    for s in sets.values():
        if "skipped" not in s:
            assert len(s["baseline_runs_s"]) == 2 and s["tokens_p50"] > 0
            assert {"baseline", "app_torch"} <= set(s)
    assert "skipped" not in sets["scifact"]

    nd = sections["ndcg"]
    assert "skipped" in nd or {"torch", "onnx-int8"} <= set(nd)
    assert "reuse_token_ids" in sections["add_one"]
    assert "results" in sections["ttft"]
    assert "gpu" in sections
    off = sections["offline"]
    assert off["quiet"] and off["ingest"] and all(r["n"] == 2 for r in off["quiet"].values())
    assert "Embedded model (SmolLM2-135M) on the starter collection" in res.stdout
    assert "Retrieval latency" in res.stdout and "| sparse, bm25s numba backend" in res.stdout
    idle = sections["idle"]
    assert len(idle["rows"]) == 2 and all(r["core_pct_median"] >= 0 for r in idle["rows"].values())
    assert "An idle server" in res.stdout


def test_state_bench_runs_each_lookup_beside_its_floor(tmp_path):
    from bench import state

    out = tmp_path / "state.json"
    assert state.main(["--n", "20", "--out", str(out)]) == 0
    report = __import__("json").loads(out.read_text())
    rows = report["rows"]
    assert report["database"] == "sqlite" and len(rows) == 7
    assert all(r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] for r in rows.values())
    assert "floor: SELECT 1 on the same engine" in state.render(report)
