import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "scifact_sample"


def _gpu_probes() -> dict[str, bool]:
    """What can use a GPU here, probed separately: FAISS (faiss-gpu) and torch (a CUDA build)."""
    out = {}
    try:
        import faiss

        out["faiss"] = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    except Exception:
        out["faiss"] = False
    try:
        import torch

        out["torch"] = torch.cuda.is_available()
    except Exception:
        out["torch"] = False
    return out


_HOW = {"faiss": "faiss-gpu with a visible CUDA device (see README, GPU)",
        "torch": "a CUDA build of torch with a visible device (see README, GPU)"}


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu("faiss")`` / ``gpu("torch")`` tests run only where that library sees a GPU."""
    probes = None
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is None:
            continue
        probes = probes or _gpu_probes()
        needs = marker.args or ("faiss",)
        missing = [n for n in needs if not probes.get(n)]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs {' and '.join(_HOW[n] for n in missing)}"))


# In CI a skip is a failure unless the test is marked as allowed to skip (GPU tests, version-specific
# tests): a dependency that CI forgot to install must not turn into a silent skip.
_STRICT = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _may_skip(item) -> bool:
    return item.get_closest_marker("gpu") is not None or item.get_closest_marker("may_skip") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _STRICT and report.skipped and not _may_skip(item) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


_SKIPPED_MODULES: list[str] = []


def pytest_collectreport(report):
    if _STRICT and report.skipped:  # a whole module skipped (a missing browser, say): fail the session at the end
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED_MODULES.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_MODULES:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    for line in _SKIPPED_MODULES:
        terminalreporter.write_line(f"FAILED (skipped whole in CI, CI=true): {line}", red=True)


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    """All stored state goes to a fresh temporary data directory."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("HYBRID_RAG_DATA", str(d))
    for k in list(os.environ):
        if k.startswith("HYBRID_RAG__"):
            monkeypatch.delenv(k)
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


@pytest.fixture
def fake_nim():
    """A started :class:`rag.testing.fake_nim.FakeNIM` serving ``fake/model``; stopped after the test."""
    from rag.testing.fake_nim import FakeNIM

    server = FakeNIM().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_embedded(monkeypatch):
    """The embedded model without llama.cpp: a canned reply ("Offline answer [1]."), so fallback-chain tests
    stay fast; returns the list of prompts it was sent."""
    from rag.llm import EmbeddedClient, Stream

    calls = []

    def open_(self, messages, params):
        calls.append(messages)
        s = Stream(iter(["Offline ", "answer [1]."]), self.endpoint, self.model, self.api_model)
        s.finish_reason, s.completion_tokens, s.prompt_tokens = "stop", 2, 10
        return s

    monkeypatch.setattr(EmbeddedClient, "open", open_)
    monkeypatch.setattr(EmbeddedClient, "count_tokens", lambda self, text: len(text.encode()) // 3 + 1)
    return calls


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory) -> str:
    """One Milvus Lite file for the session: its embedded server starts once."""
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(params=["files", "milvus"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_settings(settings, backend, request):
    """``settings`` with ``store.backend`` set to the test's backend. Milvus collections live in the session's
    Milvus Lite (a real embedded Milvus), emptied after each test."""
    if backend == "files":
        yield settings
        return
    from rag.store import milvus

    settings.store.backend, settings.store.milvus.uri = "milvus", request.getfixturevalue("milvus_uri")
    yield settings
    c = milvus.client(settings)
    for name in c.list_collections():
        if name != milvus.META:
            c.drop_collection(name)
    c.delete(milvus.META, filter="gen >= 0")
    milvus._CACHE.clear()
    milvus._LOADED.clear()


# -- the state database (rag.state): SQLite in the test's data directory, or a real PostgreSQL ------------------

@pytest.fixture(autouse=True)
def _isolated_state(monkeypatch):
    """No test reaches a database named by the developer's environment; cached states are closed after each
    test (their SQLite files live in that test's data directory)."""
    import sys

    monkeypatch.delenv("HYBRID_RAG_DATABASE_URL", raising=False)
    yield
    if "rag.state" in sys.modules:
        sys.modules["rag.state"].close_all()


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the session (tests/pg.py: Debian's binaries, a temporary cluster on a free loopback
    port, run as the 'postgres' user when the tests run as root); skipped when the binaries are absent."""
    from pg import INSTALL_HINT, PgServer, find_bin_dir

    if find_bin_dir() is None:
        pytest.skip(f"PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    server = PgServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty PostgreSQL database for one test (dropped after it); its SQLAlchemy URL."""
    url = pg_server.new_database()
    yield url
    import sys

    if "rag.state" in sys.modules:
        sys.modules["rag.state"].close_all()
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, data_dir, monkeypatch):
    """Runs the test on both databases: the state URL, also set as HYBRID_RAG_DATABASE_URL so that
    ``open_state(settings)`` uses it (SQLite: ``<data_dir>/state.sqlite``; PostgreSQL: a fresh database)."""
    url = (f"sqlite:///{data_dir / 'state.sqlite'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    monkeypatch.setenv("HYBRID_RAG_DATABASE_URL", url)
    return url


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium through Playwright, one per test module (the browser tests skip their module
    first when /usr/bin/chromium or Playwright is missing)."""
    from playwright.sync_api import sync_playwright
    from reliability_kit import launch_chromium

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()
