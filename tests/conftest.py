import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "scifact_sample"


def _has_gpu() -> bool:
    try:
        import faiss

        return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible to faiss (install faiss-gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    """All stored state goes to a fresh temporary data directory."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("HYBRID_RAG_DATA", str(d))
    for k in list(os.environ):
        if k.startswith("HYBRID_RAG__"):
            monkeypatch.delenv(k)
    from rag import config

    config.default_settings.cache_clear()
    yield d


@pytest.fixture
def data_dir(_isolated_data):
    return _isolated_data


@pytest.fixture
def settings(data_dir):
    from rag.config import load_settings

    return load_settings(data_dir=data_dir)


@pytest.fixture(scope="session")
def embedder():
    from rag.embed import get_embedder

    return get_embedder("local")


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    return SAMPLE / "corpus.jsonl"


@pytest.fixture(scope="session")
def hybrid_rag_bin() -> str:
    exe = shutil.which("hybrid-rag", path=str(Path(os.sys.executable).parent)) or shutil.which("hybrid-rag")
    assert exe, "the hybrid-rag console script is not installed: run `make setup`"
    return exe
