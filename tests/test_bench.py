"""`python -m bench --quick` runs end to end and writes valid JSON. No timing is asserted."""
import json
import os
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
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert "error" not in json.dumps({k: v for k, v in sections.items() if isinstance(v, dict) and "error" in v})
    r = sections["retrieval_2000"]
    for mode in ("sparse", "dense", "hybrid"):
        assert r["retriever"][mode]["p50_ms"] > 0
    assert r["dense"]["recall@10_vs_exact"] > 0.5
    assert r["memory"]["total_B_per_chunk"] > 0
    assert "plain_loop" in sections["ingest"]
    assert "reuse_token_ids" in sections["add_one"]
    assert "gpu" in sections
    assert "retrieval latency" in res.stdout
