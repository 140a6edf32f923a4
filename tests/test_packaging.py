"""A non-editable install carries its settings files and runs from any directory."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
    assert sorted(p.name for p in (target / "rag" / "configs").iterdir()) == [
        "default.yaml", "golden_docs.jsonl", "judge_prompt.md", "models.yaml", "router.yaml"]
    code = ("import rag.config as c; s = c.load_settings(); "
            "print(c.CONFIG_DIR, c.SOURCE_ROOT, len(s.models.models), s.router.default_route, s.data_dir); "
            "import rag.answereval as a, rag.judge as j; print(len(a.load_golden()), len(j.load_prompt()) > 100)")
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert out[0] == str(target / "rag" / "configs") and out[1] == "None"
    assert int(out[2]) >= 3 and out[3] == "speed" and out[4] == str(work / "data")
    assert int(out[5]) >= 20 and out[6] == "True"  # the example golden set and the judge's prompt ship too


def test_setup_builds_llama_cpp_with_the_pinned_version_and_our_build_options(tmp_path):
    """`make setup` builds llama-cpp-python at the version pyproject pins, with configs/llama-cpp-build.cmake
    (the first-install time in the README depends on it). `make -n` prints the recipe without running it."""
    repo = Path(__file__).resolve().parent.parent
    pin = re.search(r'"(llama-cpp-python==[0-9.]+)"', (repo / "pyproject.toml").read_text()).group(1)
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    assert f'pip install -q "{pin}"' in out
    include = re.search(r"-DCMAKE_PROJECT_llama_cpp_INCLUDE=(\S+)", out).group(1)
    assert Path(include).is_file() and "set(LLAMA_BUILD_COMMON OFF)" in Path(include).read_text()
    assert "-DLLAVA_BUILD=OFF" in out
