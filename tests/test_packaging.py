"""A non-editable install carries its settings files and runs from any directory."""
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_non_editable_install_finds_its_configs(tmp_path):
    from rag.config import SOURCE_ROOT

    src = tmp_path / "src"  # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    shutil.copytree(SOURCE_ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache", "bench-data", "results"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, timeout=300)
    assert sorted(p.name for p in (target / "rag" / "configs").iterdir()) == ["default.yaml", "models.yaml",
                                                                             "router.yaml"]
    code = ("import rag.config as c; s = c.load_settings(); "
            "print(c.CONFIG_DIR, c.SOURCE_ROOT, len(s.models.models), s.router.default_route, s.data_dir)")
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert out[0] == str(target / "rag" / "configs") and out[1] == "None"
    assert int(out[2]) >= 3 and out[3] == "speed" and out[4] == str(work / "data")
