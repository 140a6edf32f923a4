"""Shared parts of the reliability, security and load tests (tests/test_reliability_*.py, test_security.py,
test_load.py): a tiny deterministic embedder, the served app as a user starts it (with a first admin account),
signing in (a browser page with :func:`sign_in`, plain HTTP with :class:`GradioHTTP`), and a small client for
Gradio's HTTP queue protocol (the one the browser speaks), so tests can call any event, "private" ones
included, exactly as a hand-written HTTP request could.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# --- a tiny embedder ----------------------------------------------------------------------------


class _Encoding:
    def __init__(self, encs, single: bool):
        self._encs = encs
        self.data = {"input_ids": [e.ids for e in encs], "offset_mapping": [e.offsets for e in encs]}
        if single:
            self.data = {k: v[0] for k, v in self.data.items()}

    def __getitem__(self, key):
        return self.data[key]

    def word_ids(self, j: int = 0):
        return self._encs[j].word_ids


class MiniLMTokenizer:
    """The real all-MiniLM-L6-v2 tokenizer (the same Rust ``tokenizers`` object Hugging Face wraps), with
    the slice of the ``PreTrainedTokenizerFast`` call API that ``ingest.chunking`` uses. Loads in 0.3 s
    instead of the 5 s that importing ``transformers`` costs, which matters in the SIGKILL loop."""

    is_fast = True

    def __init__(self):
        from tokenizers import Tokenizer

        from rag.embed import packaged_minilm_path

        self.backend_tokenizer = Tokenizer.from_file(str(packaged_minilm_path() / "tokenizer.json"))
        self.backend_tokenizer.no_padding()
        self.backend_tokenizer.no_truncation()

    def __call__(self, text, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 verbose: bool = True, **_):
        single = isinstance(text, str)
        encs = self.backend_tokenizer.encode_batch([text] if single else list(text),
                                                   add_special_tokens=add_special_tokens)
        return _Encoding(encs, single)


@lru_cache(maxsize=1)
def minilm_tokenizer() -> MiniLMTokenizer:
    return MiniLMTokenizer()


class FakeEmbedder:
    """Deterministic unit vectors from byte bigrams, with the real MiniLM tokenizer for chunking.

    Where the embedder is not what a test is about (crashes, hostile uploads, concurrency), it keeps the
    tests fast and their results exact."""

    model_id = "test/byte-bigrams-32"
    dim = 32

    def __init__(self):
        self.tokenizer = minilm_tokenizer()

    def _encode(self, texts) -> np.ndarray:
        """Byte-bigram histograms: vectorised (a 50 MB upload embeds in seconds) and deterministic."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            b = np.frombuffer(str(t).lower().encode("utf-8", "surrogatepass"), dtype=np.uint8).astype(np.int64)
            if len(b) > 1:
                out[i] = np.bincount((b[:-1] * 131 + b[1:] * 7) % self.dim, minlength=self.dim)
            out[i, 0] += 1e-3
            out[i] /= np.linalg.norm(out[i])
        return out

    def encode_documents(self, texts):
        return self._encode(list(texts))

    def encode_queries(self, texts):
        return self._encode(list(texts))


# --- collection checks ----------------------------------------------------------------------------

def collection_counts(data_dir, name: str) -> dict:
    """Every count a collection keeps, read independently; ``consistent`` is True when they all agree."""
    import sqlite3

    from rag.config import load_settings
    from rag.store import open_collection
    from rag.store.reader import _CACHE

    _CACHE.clear()  # read what is on disk now, not a cached object
    col = open_collection(name, load_settings(data_dir=data_dir))
    con = sqlite3.connect(f"file:{col.vdir / 'chunks.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT COUNT(*), COALESCE(MIN(row), 0), COALESCE(MAX(row), -1) FROM chunks").fetchone()
        docs, doc_chunks = con.execute("SELECT COUNT(*), COALESCE(SUM(n_chunks), 0) FROM docs").fetchone()
        per_doc = dict(con.execute("SELECT doc_id, COUNT(*) FROM chunks GROUP BY doc_id").fetchall())
        declared = dict(con.execute("SELECT doc_id, n_chunks FROM docs").fetchall())
    finally:
        con.close()
    vectors = np.load(col.vdir / "vectors.npy", mmap_mode="r", allow_pickle=False).shape[0]
    c = {"version": col.version, "manifest_chunks": col.manifest["counts"]["chunks"],
         "manifest_documents": col.manifest["counts"]["documents"], "dense": col.dense.size,
         "sparse": col.sparse.size, "rows": rows[0], "vectors": vectors, "documents": docs,
         "doc_chunk_sum": doc_chunks}
    c["consistent"] = (c["manifest_chunks"] == c["dense"] == c["sparse"] == c["rows"] == c["vectors"]
                       == c["doc_chunk_sum"] and c["manifest_documents"] == docs and per_doc == declared
                       and (rows[0] == 0 or (rows[1], rows[2]) == (0, rows[0] - 1)))
    return c


# --- the served app -------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads one
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def launch_chromium(playwright):
    """Headless Debian chromium through Playwright (``with sync_playwright() as p: launch_chromium(p)``)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def local_fake_nim(**script):
    """A started :class:`rag.testing.fake_nim.FakeNIM` serving every model the catalog maps to the ``local``
    endpoint, answering with ``Script(**script)``; ``.url_env`` names the variable that points the app at it."""
    from rag.catalog import Catalog
    from rag.testing.fake_nim import FakeNIM, Script

    catalog = Catalog.load()
    served = tuple(m.serves["local"] for m in catalog.models if "local" in m.serves)
    fake = FakeNIM(models=served, default=Script(**script)).start()
    fake.url_env = catalog.endpoint("local").base_url_env
    return fake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hybrid_rag_bin() -> str:
    import shutil
    import sys

    exe = shutil.which("hybrid-rag", path=str(Path(sys.executable).parent)) or shutil.which("hybrid-rag")
    assert exe, "the hybrid-rag console script is not installed: run `make setup`"
    return exe


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    root: Path
    data: Path
    log: Path
    tmp: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_bytes(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


ADMIN_USER = "admin"            # admin.username: the first admin ``serve`` creates from HYBRID_RAG_ADMIN_PASSWORD


def serve(root: Path, env_extra: dict | None = None, *, starter: bool = False, timeout: float = 300,
          admin_password: str | None = None) -> Served:
    """Start ``hybrid-rag serve --port P`` on 127.0.0.1 with its data and Gradio's temp dir under ``root``.

    ``admin_password`` (or ``HYBRID_RAG_ADMIN_PASSWORD`` in ``env_extra``) makes ``serve`` create the first admin
    account, :data:`ADMIN_USER`, with it; sign in with :func:`sign_in` (a page) or ``GradioHTTP(url, user=...,
    password=...)``. Other accounts: :func:`add_user`."""
    root = Path(root)
    data, tmp = root / "data", root / "gradio-tmp"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRID_RAG", "NVIDIA_API_KEY", "DEEPINFRA"))}
    env.update({"HYBRID_RAG_DATA": str(data), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp),
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
    env.update(env_extra or {})
    if admin_password:
        env["HYBRID_RAG_ADMIN_PASSWORD"] = admin_password
    log = root / "server.log"
    args = [hybrid_rag_bin(), "serve", "--port", str(port)] + ([] if starter else ["--no-starter"])
    with open(log, "wb") as f:
        proc = subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=str(root))
    url = f"http://127.0.0.1:{port}"
    s = Served(url, proc, root, data, log, tmp)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{s.log_text()}")
        try:  # the page redirects to the sign-in form, which answers 200
            with urllib.request.urlopen(url + "/login", timeout=2) as r:
                if r.status == 200:
                    return s
        except OSError:
            pass
        if time.monotonic() > deadline:
            s.stop()
            raise AssertionError(f"the server did not start in {timeout:.0f} s:\n{s.log_text()}")
        time.sleep(0.5)


def add_user(data_dir: Path, name: str, password: str, role: str = "reader") -> None:
    """An account in a served app's state database (the served process sees it on its next request)."""
    from rag.state import open_state_at

    open_state_at(data_dir).add_user(name, password, role)


def grant(data_dir: Path, collection: str, name: str, as_: str = "reader") -> None:
    from rag.state import open_state_at

    open_state_at(data_dir).grant(collection, name, as_)


def sign_in(page, base_url: str, user: str, password: str, *, expect_ok: bool = True) -> None:
    """Sign in through the app's sign-in form in a Playwright page; with ``expect_ok`` wait until the app shows."""
    page.goto(base_url.rstrip("/") + "/login")
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-submit")
    if expect_ok:
        page.wait_for_selector("#chat-input textarea", timeout=60_000)
        page.wait_for_function("() => (document.querySelector('#hr-user') || {}).innerText?.includes('Signed in')",
                               timeout=60_000)
        # the page's load event fills lists and captions per user: wait until no component shows progress
        page.wait_for_function("() => document.querySelectorAll('.progress-text').length === 0", timeout=60_000)


# --- Gradio's HTTP protocol -----------------------------------------------------------------------

class GradioHTTP:
    """The browser's side of Gradio's queue protocol, over plain HTTP (httpx), without gradio_client.

    ``call(trigger, data)`` joins the queue as a page would (``POST /gradio_api/queue/join``) and reads the
    event stream (``GET /gradio_api/queue/data``) until the event completes, applying streamed diffs.

    It signs in first (``POST /login``, as the form does; the session cookie stays in the client), as ``user``
    with ``password`` (by default the shared server's admin), then runs the page's load event, which fills the
    collection lists with what that user may read. ``user=None``: no sign-in (every Gradio route then answers
    401, and ``config`` is empty).
    """

    def __init__(self, url: str, timeout: float = 120.0, *, user: str | None = ADMIN_USER,
                 password: str | None = None):
        import httpx

        self.url = url.rstrip("/")
        self.api = self.url + "/gradio_api"
        self.http = httpx.Client(timeout=timeout, trust_env=False)
        self.session = uuid.uuid4().hex[:12]
        self.config, self.components = {"components": [], "dependencies": []}, {}
        if user is not None:
            self.sign_in(user, ADMIN_PASSWORD if password is None else password)

    def sign_in(self, user: str, password: str) -> None:
        """``POST /login``; raises AssertionError with the page's message when refused. Then loads the config and
        runs the page's load event for this session."""
        r = self.http.post(self.url + "/login", data={"username": user, "password": password, "next": "/"},
                           follow_redirects=False)
        if r.status_code != 303:
            import re

            m = re.search(r'id="login-error"[^>]*>([^<]*)<', r.text)
            raise AssertionError(f"sign-in as {user!r} refused ({r.status_code}): {m.group(1) if m else r.text[:300]}")
        self.config = self.http.get(self.url + "/config").json()
        self.components = {c["id"]: c for c in self.config["components"]}
        self.page_load()

    def close(self) -> None:
        self.http.close()

    @property
    def cookie_header(self) -> dict:
        """``{"Cookie": "hr_session=..."}`` of this client's sign-in, for raw requests made without httpx."""
        token = self.http.cookies.get("hr_session")
        return {"Cookie": f"hr_session={token}"} if token else {}

    def component_id(self, elem_id: str) -> int:
        for c in self.config["components"]:
            if c.get("props", {}).get("elem_id") == elem_id:
                return c["id"]
        raise KeyError(elem_id)

    def dependency(self, elem_id: str, trigger: str) -> dict:
        cid = self.component_id(elem_id)
        for i, d in enumerate(self.config["dependencies"]):
            if [cid, trigger] in [list(t) for t in d.get("targets", [])]:
                d = dict(d)
                d.setdefault("id", i)
                return d
        raise KeyError(f"no {trigger} event on #{elem_id}")

    def page_load(self) -> dict:
        """Run the page's load event, as a browser does on opening the page: it refreshes this session's
        dropdown choices (Gradio checks a dropdown's value against them), e.g. after a collection is created."""
        for i, d in enumerate(self.config["dependencies"]):
            if any(list(t)[1] == "load" for t in d.get("targets", [])):
                return self.call_fn(d.get("id", i), [None] * len(d.get("inputs", [])),
                                    trigger_id=d["targets"][0][0])
        raise KeyError("no load event")

    def upload(self, files: list[tuple[str, bytes]]) -> list[dict]:
        """``POST /gradio_api/upload``: the FileData dicts a page sends for a gr.File value."""
        r = self.http.post(self.api + "/upload", files=[("files", (n, d)) for n, d in files])
        r.raise_for_status()
        return [{"path": p, "orig_name": n, "size": len(d), "meta": {"_type": "gradio.FileData"}}
                for p, (n, d) in zip(r.json(), files)]

    def call(self, elem_id: str, trigger: str, data: list, *, timeout: float = 300.0) -> dict:
        """Run the event; returns {"success", "data" (final outputs), "messages", "error"}."""
        dep = self.dependency(elem_id, trigger)
        return self.call_fn(dep["id"], data, trigger_id=dep["targets"][0][0], timeout=timeout)

    def call_fn(self, fn_index: int, data: list, *, trigger_id=None, timeout: float = 300.0,
                session: str | None = None) -> dict:
        session = session or self.session
        body = {"data": data, "fn_index": fn_index, "session_hash": session, "trigger_id": trigger_id,
                "event_data": None}
        import httpx

        try:
            return self._call(body, timeout)
        except httpx.HTTPError as e:
            return {"success": False, "status": None, "error": f"{type(e).__name__}: {e}", "data": None,
                    "messages": []}

    def _call(self, body: dict, timeout: float) -> dict:
        session = body["session_hash"]
        r = self.http.post(self.api + "/queue/join", json=body)
        if r.status_code != 200:
            return {"success": False, "status": r.status_code, "error": r.text, "data": None, "messages": []}
        event_id = r.json()["event_id"]
        out = {"success": False, "status": 200, "data": None, "messages": [], "error": None, "event_id": event_id}
        current = None
        deadline = time.monotonic() + timeout
        with self.http.stream("GET", self.api + "/queue/data", params={"session_hash": session},
                              timeout=timeout) as resp:
            for line in resp.iter_lines():
                if time.monotonic() > deadline:
                    out["error"] = "timeout"
                    return out
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                kind = msg.get("msg")
                out["messages"].append(kind)
                if kind in ("process_generating", "process_completed"):
                    output = msg.get("output") or {}
                    if "data" in output:
                        current = _merge(current, output["data"], kind)
                if kind == "process_completed":
                    out["success"] = bool(msg.get("success"))
                    out["data"] = current
                    if not msg.get("success"):
                        out["error"] = msg.get("output")
                    return out
                if kind == "close_stream":
                    break
        out["error"] = out["error"] or "stream closed before the event completed"
        out["data"] = current
        return out


def _merge(current, data, kind: str):
    """The outputs after a message: the first generating message and the completed one carry full values;
    later generating messages carry one list of diff operations per output ([] = unchanged)."""
    from gradio_client.utils import apply_diff

    if current is None or kind == "process_completed":
        return list(data)
    return [apply_diff(old, ops) if ops else old for old, ops in zip(current, data)]


class ThreadErrors:
    """Collects exceptions from worker threads so the test thread can fail on them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.errors: list[str] = []

    def add(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


__all__ = ["FakeEmbedder", "MiniLMTokenizer", "minilm_tokenizer", "collection_counts", "serve", "Served",
           "GradioHTTP", "free_port", "ThreadErrors", "sign_in", "add_user", "grant", "ADMIN_USER"]


# --- one served app shared by the HTTP tests of several modules -----------------------------------

ADMIN_PASSWORD = "reliability-admin-pw"
PLANTED_KEYS = {"NVIDIA_API_KEY": "nvapi-PLANTEDkey0123456789abcdefSECRET",
                "DEEPINFRA_TOKEN": "di-PLANTED-token-9876543210-SECRET"}
ANSWER_TOKENS = ["The quokka ", "lives on ", "Rottnest Island ", "[1]", "."]
_SHARED: dict = {}
_SHARED_LOCK = threading.Lock()


def shared_server():
    """(Served, FakeNIM): ``hybrid-rag serve`` with an admin password, planted keys, and the fake NIM as the
    ``local`` endpoint serving every model the catalog maps to it. Started once per test process."""
    import atexit
    import tempfile

    with _SHARED_LOCK:
        if "served" in _SHARED:
            return _SHARED["served"], _SHARED["nim"]
        nim = local_fake_nim(tokens=ANSWER_TOKENS)
        root = Path(tempfile.mkdtemp(prefix="hybrid-rag-reliability-"))
        env = {"HYBRID_RAG_ADMIN_PASSWORD": ADMIN_PASSWORD, nim.url_env: nim.base_url,
               "HYBRID_RAG__MODELS__FALLBACK_ORDER": "local,embedded", **PLANTED_KEYS}
        try:
            s = serve(root, env)
        except BaseException:
            nim.stop()
            raise

        def _stop():
            s.stop()
            nim.stop()
            import shutil

            shutil.rmtree(root, ignore_errors=True)

        atexit.register(_stop)
        _SHARED.update(served=s, nim=nim)
        return s, nim


def admin_upload(client: GradioHTTP, collection: str, files: list[tuple[str, bytes]]) -> dict:
    """The Documents tab's "Ingest files" button, over HTTP, as the user ``client`` signed in as (the shared
    server's admin by default). ``data``: (message, results table, ...)."""
    uploaded = client.upload(files) if files else []
    return client.call("ingest", "click", [uploaded, collection])


def create_collection(client: GradioHTTP, name: str) -> dict:
    """The Documents tab's "Create" button, as the user ``client`` signed in as."""
    return client.call("create-collection", "click", [name])
