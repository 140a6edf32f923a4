"""Every user-facing setting takes effect: each is flipped through a settings file and through its
environment variable, and the change is observed in the component that uses it (not in the settings
object). A completeness check fails when a setting is added without a case here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from reliability_kit import FakeEmbedder

from rag.config import CONFIG_DIR, ConfigError, Settings, load_settings
from rag.testing.fake_nim import closed_port_url, fake_catalog

FAKE = FakeEmbedder()
DOCS = {
    "cats.md": "# Cats\n\nCats are sleeping sixteen hours a day. The cat purrs when it is content.",
    "dogs.md": "# Dogs\n\nDogs like long walks in the park and they sleep less than cats do.",
    "herons.md": "# Herons\n\nHerons hunt fish in shallow water at dawn. The heron stands still.",
    "owls.md": "# Owls\n\nOwls hunt at night; their hearing finds mice under the snow.",
    "bees.md": "# Bees\n\nBees dance to tell the hive where the flowers are.",
    "ants.md": "# Ants\n\nAnts farm fungus and herd aphids for their honeydew.",
}


# --- building what the settings drive ------------------------------------------------------------

def _ingest(s, files=None, name="c"):
    from ingest.pipeline import ingest

    return ingest(name, [(n, t.encode() if isinstance(t, str) else t) for n, t in (files or DOCS).items()],
                  settings=s, embedder=FAKE)


def _collection(s, files=None):
    from rag.store import open_collection

    _ingest(s, files)
    return open_collection("c", s)


def _vectors_collection(s, n=400, dim=8):
    """A collection of ``n`` one-chunk documents with random vectors (for the dense index settings)."""
    from rag.store import CollectionWriter, DocRecord, open_collection
    from rag.types import Chunk

    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with CollectionWriter("v", s, embedder_id="e", dim=dim) as w:
        for i in range(n):
            w.add(DocRecord(f"d{i}", f"d{i}", "", f"h{i}"),
                  [Chunk(id=f"d{i}#0", doc_id=f"d{i}", source=f"d{i}", text=f"word{i} text", start=0, end=1)],
                  x[i:i + 1])
        w.commit()
    return open_collection("v", s)


def _search(s, query="cats sleep", **kw):
    from rag.engine import Engine

    _ingest(s)
    return Engine(s, embedder=FAKE).search("c", query, **kw)


def _is_rrf(s) -> bool:
    """Whether the top hybrid hit's score is the RRF formula of its ranks."""
    r = _search(s, k=1).hits[0]
    k, w = s.retrieval.rrf_k, s.retrieval
    return abs(r.score - (w.dense_weight / (k + r.dense_rank) + w.sparse_weight / (k + r.sparse_rank))) < 1e-9


def _rrf_scores(s):
    s.retrieval.fusion = "rrf"
    return [round(h.score, 6) for h in _search(s, k=3).hits]


def _chunks_of_long_doc(s):
    text = "# Long\n\n" + " ".join(f"Sentence number {i} is about topic {i % 7}." for i in range(300))
    _ingest(s, {"long.md": text})
    from rag.store import open_collection

    return open_collection("c", s).documents()[0]["chunks"]


def _overlap(s):
    from rag.store import open_collection

    s.chunking.chunk_tokens = 64
    _chunks_of_long_doc(s)
    a, b = open_collection("c", s).document_chunks("long.md", limit=2)
    return a.end > b.start  # consecutive chunks share text


def _upload(s, name, data):
    res = _ingest(s, {name: data})
    return res[0].status if len(res) == 1 else [r.status for r in res]


def _zip(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def _letters(n: int) -> bytes:
    """Random lower-case words: compresses about 1.6x (over ``max_archive_ratio`` 1.2, far under 100)."""
    rng = np.random.default_rng(0)
    letters = rng.integers(97, 123, n).astype(np.uint8)
    letters[rng.integers(0, n, n // 6)] = 32
    return letters.tobytes()


def _admin(s, user="admin", password="pw-1-long"):
    """Whether ``user``/``password`` signs in after serve's first-admin step (admin.* name the first admin)."""
    from rag.state import AuthError, open_state

    state = open_state(s)
    state.reset_throttle()
    state.ensure_first_admin()
    try:
        return "allowed" if state.authenticate(user, password).is_admin else "refused"
    except AuthError:
        return "refused"


def _session_after(s, *steps):
    """Whether a session is still live after the clock moves by ``steps`` seconds (a request after each)."""
    from rag.state import open_state

    state = open_state(s)
    if state.get_user("sess") is None:
        state.add_user("sess", "pw-sess-1", "reader")
    t = [1_000_000.0]
    state.clock = lambda: t[0]
    try:
        token = state.create_session("sess")
        alive = True
        for dt in steps:
            t[0] += dt
            alive = state.session_user(token) is not None
        return alive
    finally:
        import time

        state.clock = time.time


def _forwarded_client(s):
    from types import SimpleNamespace

    from rag.state import client_address

    req = SimpleNamespace(client=SimpleNamespace(host="10.0.0.1"), headers={"x-forwarded-for": "203.0.113.9"})
    return client_address(req, s)


def _sso_name(s):
    from types import SimpleNamespace

    from rag.state import sso_user_name

    auth = s.auth.model_copy(update={"trusted_proxies": ["10.0.0.1"]})
    req = SimpleNamespace(client=SimpleNamespace(host="10.0.0.1"), headers={"X-Remote-User": "carol"})
    return sso_user_name(req, SimpleNamespace(auth=auth))


def _sso_role(s):
    from rag.state import open_state

    return open_state(s).sso_user("dave").role


def _database_path(s, monkeypatch, tmp_path):
    from rag.state import open_state

    monkeypatch.setenv("MY_STATE_DB", f"sqlite:///{tmp_path / 'elsewhere.sqlite'}")
    return open_state(s).url.endswith("elsewhere.sqlite")


def _embedded_load_args(s, monkeypatch):
    """The threads/repack the embedded model is loaded with when the engine answers offline."""
    import rag.llm.embedded as emb
    from rag.engine import Engine
    from rag.testing.fake_nim import closed_port_url, fake_catalog

    seen = {}

    class Stop(Exception):
        pass

    def load(n_ctx=2048, threads=0, repack=False, flash_attn=True):
        seen.update(threads=threads, repack=repack, flash_attn=flash_attn)
        raise Stop

    monkeypatch.setattr(emb, "load_embedded", load)
    _ingest(s)
    engine = Engine(s, embedder=FAKE, catalog=fake_catalog(closed_port_url(), fallback_order=("local",)))
    with pytest.raises(Stop):
        list(engine.ask("cats?", collection="c", route="speed"))
    return seen["threads"], seen["repack"], seen["flash_attn"]


def _embedded_request(s, monkeypatch) -> dict:
    """What the embedded model is sent (messages, llama.cpp arguments) when the engine answers offline, and the
    answer's metadata; the model (a stand-in for llama.cpp) repeats one line until max tokens."""
    import rag.llm.embedded as emb
    from rag.engine import Done, Engine, Sources
    from rag.testing.fake_nim import closed_port_url, fake_catalog

    sent = {}

    class Llama:
        def tokenize(self, data, add_bos=False, special=False):
            return list(data)   # a token per byte: every passage is longer than 16

        def create_chat_completion(self, messages, stream=True, **kwargs):
            sent.update(messages=messages, kwargs=kwargs)
            for _ in range(20):
                for w in "The file tests/test.py is uploaded and the upload fails [1].\n".split(" "):
                    yield {"choices": [{"delta": {"content": w + " "}, "finish_reason": None}]}

    monkeypatch.setattr(emb, "load_embedded", lambda *a, **k: Llama())
    monkeypatch.setattr(emb, "_set_threads", lambda llm, n: None)   # no llama.cpp context here
    _ingest(s)
    engine = Engine(s, embedder=FAKE, catalog=fake_catalog(closed_port_url(), fallback_order=("local",)))
    for ev in engine.ask("Where do cats sleep?", collection="c", route="speed"):
        if isinstance(ev, Sources):
            sent["sources"] = len(ev.hits)
        elif isinstance(ev, Done):
            sent["meta"] = ev.meta
    return sent


def _title_only_word_found(s) -> bool:
    """An HTML page whose <title> word appears nowhere in its body: BM25 finds it only with index_title."""
    page = "<html><head><title>Zebrafish</title></head><body><p>Fins regrow in weeks.</p></body></html>"
    return len(_search_files(s, {"z.html": page}, "zebrafish")) > 0


def _search_files(s, files, query):
    from rag.engine import Engine

    _ingest(s, files)
    return Engine(s, embedder=FAKE).search("c", query, mode="sparse").hits


def _speed_score_of_a_speed_vector(s) -> float:
    """The speed score of a query equal to one of two speed exemplars (the other is orthogonal to it)."""
    from rag.router import Router

    eye = np.eye(4, 384, dtype=np.float32)
    router = Router.from_settings(s, exemplar_vectors={"speed": eye[:2], "quality": eye[2:3], "openusd": eye[3:]})
    return router.route("zzz " * 12, eye[0])[2]["speed"]


def _route_scores(s, words: int) -> dict:
    return _router(s).route(" ".join(["zzz"] * words))[2]


def _engine(s):
    from rag.engine import Engine

    return Engine(s, embedder=FAKE)


def _local_client(s, base_url=None):
    """The client the catalog builds for the speed model on the ``local`` endpoint."""
    from rag.llm import make_client

    if base_url:
        s.models.endpoints["local"].base_url = base_url
    cat = _catalog(s)
    model = next(m for m in cat.models if "local" in m.serves)
    return make_client(cat, "local", model)


def _timeouts_sent(s) -> tuple:
    """The (connect, read) timeouts the NIM client puts on its HTTP requests."""
    import requests

    seen = []

    class Capture(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            seen.append(kwargs.get("timeout"))
            raise requests.exceptions.ConnectionError("captured")

    session = _local_client(s, "http://127.0.0.1:9/v1")._chat(None)._client.get_session_fn()
    session.mount("http://", Capture())
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get("http://127.0.0.1:9/v1/models")
    return seen[0]


def _requests_before_giving_up(s) -> int:
    """How many requests the client sends to a server that keeps answering HTTP 500."""
    from rag.llm import LLMError
    from rag.testing.fake_nim import FakeNIM, Script

    s.models.retries.backoff_s = s.models.retries.backoff_max_s = 0.0
    with FakeNIM(default=Script(status=500)) as nim:
        client = _local_client(s, nim.base_url)
        with pytest.raises(LLMError):
            client.open([{"role": "user", "content": "hi"}], client.model.params)
        return len(nim.chat_requests)


def _probe_of_a_slow_server(s) -> bool:
    """Whether the local endpoint counts as up when its /models answers after 0.5 s."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rag.llm import HealthCache, probe

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(0.5)
            body = b'{"data": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s.models.endpoints["local"].base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        cat = _catalog(s)
        return probe(cat.endpoint("local"), cat, HealthCache())[0]
    finally:
        server.shutdown()
        server.server_close()


def _catalog(s):
    from rag.catalog import Catalog

    return Catalog.from_settings(s)


def _router(s):
    from rag.router import Router

    return Router.from_settings(s, exemplar_vectors={})


def _embedder(s):
    from rag.embed import make_embedder

    return make_embedder(s.embedder)


def _nvidia_key_asked_for(s):
    """The variable the NVIDIA embedder asks for when no key is set (hosted endpoint)."""
    from rag.embed import EmbedderError

    s.embedder.kind = "nvidia"
    with pytest.raises(EmbedderError) as e:
        _embedder(s)
    return next(w for w in str(e.value).split() if w.isupper() and "_" in w)


def _nvidia(s, attr):
    s.embedder.kind = "nvidia"
    return getattr(_embedder(s).client, attr)


def _ivf(s):
    import faiss

    s.dense.exact_max = 100
    col = _vectors_collection(s)
    return col.dense.kind, faiss.extract_index_ivf(col.dense.index), col.dense.index


def _hnsw(s):
    s.dense.exact_max, s.dense.approx = 100, "hnsw"
    return _vectors_collection(s).dense.index.hnsw


def _in_milvus(s, observe):
    """``observe(settings)`` after an ingest into a Milvus collection; this process's Milvus Lite is let go after."""
    from rag.store import milvus

    s.store.backend = "milvus"
    try:
        _ingest(s)
        return observe(s)
    finally:
        milvus.release(s)


def _backend_of_c(s):
    from rag.store import backend_of, milvus

    _ingest(s)
    try:
        return backend_of("c", s)
    finally:
        milvus.release(s)


def _milvus_index_type(s):
    from rag.store import milvus

    return _in_milvus(s, lambda s: milvus.client(s).describe_index(milvus.milvus_name("c"), "vector")["index_type"])


def _side_file(tmp_path, name, change):
    raw = yaml.safe_load((CONFIG_DIR / name).read_text())
    change(raw)
    p = tmp_path / f"other-{name}"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def _chat_collection(s):
    """The collection an API chat request without one is answered from."""
    from types import SimpleNamespace

    from api.chat import ask_arguments
    from api.schemas import ChatRequest

    req = ChatRequest(model="speed", messages=[{"role": "user", "content": "cats?"}])
    try:
        return ask_arguments(req, SimpleNamespace(settings=s))["collection"]
    except Exception as e:  # noqa: BLE001 - the refusal is what the default gives
        return type(e).__name__


def _api_slots(s):
    """(answers one key may run at once, the Retry-After beyond them), from the app the settings build."""
    from api import create_app
    from api.errors import APIError

    slots = create_app(s, ui=False).state.service.slots
    n = 0
    try:
        while n < 100:
            slots.acquire("k")
            n += 1
    except APIError as e:
        return n, e.headers["Retry-After"]
    return n, None


def _jobs_remembered(s):
    from rag.engine import Engine
    from ui.backend import Backend

    b = Backend(s, engine=Engine(s, embedder=FAKE))
    try:
        for i in range(3):
            f = s.data_dir / f"doc{i}.md"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"# Doc {i}\n\nsome text {i}")
            b.jobs.wait(b.jobs.submit("c", [(f.name, f)]).id, timeout=60)
        return len(b.jobs.list())
    finally:
        b.jobs.close(timeout=10)


def _citation_check(s) -> str:
    """The status the citation check gives a paraphrase citing its passage, or "off" when no check came."""
    from rag.engine import Engine, Verified
    from rag.testing.fake_nim import FakeNIM, Script

    _ingest(s)
    with FakeNIM(default=Script(tokens=["Cats sleep sixteen hours a day [1]."])) as nim:
        events = list(Engine(s, embedder=FAKE, catalog=fake_catalog(nim.base_url)).ask(
            "How many hours a day do cats sleep?", collection="c", route="speed", k=1, mode="sparse"))
    checks = [e.report for e in events if isinstance(e, Verified)]
    return checks[0]["sentences"][0]["status"] if checks else "off"


def _rerank(s, what: str, delay_s: float = 0.0, enable: bool = True):
    """One search with the rerank stage against a fake rerank NIM (``rerank.base_url`` points at it unless the
    case sets it): ``what`` = requests | model | passages | failure."""
    from rag.engine import Engine
    from rag.testing.fake_nim import FakeNIM, RankScript

    _ingest(s)
    with FakeNIM() as nim:
        nim.ranking = RankScript(delay_s=delay_s)
        if enable:
            s.rerank.enabled = True
        s.rerank.base_url = s.rerank.base_url or nim.base_url
        engine = Engine(s, embedder=FAKE)
        _, info = engine._retrieve(engine.retriever("c"), "cats sleep", None, None)
        reqs = nim.rank_requests
    return {"requests": len(reqs), "model": reqs[0]["json"]["model"] if reqs else None,
            "passages": len(reqs[0]["json"]["passages"]) if reqs else None,
            "failure": (info or {}).get("failure")}[what]


def _rerank_key_asked_for(s, monkeypatch) -> str:
    """The variable a hosted rerank asks for when no key is set (no request is made)."""
    from rag.rerank import Reranker

    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("MY_RERANK_KEY", raising=False)
    s.rerank.enabled = True
    hits = _search(s).hits
    return Reranker.from_settings(s).rerank("cats", hits)[1]["reason"].split(": ")[1].split()[0]


def _answer_eval(s, what: str):
    """One answer-evaluation run's ``what``: judge (the judge model it opens) or max_tokens (what it asks for)."""
    from rag import answereval as ae
    from rag.engine import Engine
    from rag.testing.fake_nim import FakeNIM

    if what == "judge":
        return ae.open_run_judge(Engine(s, embedder=FAKE)).model
    _ingest(s)
    with FakeNIM() as nim:
        engine = Engine(s, embedder=FAKE, catalog=fake_catalog(nim.base_url))
        ae.run(engine, "c", ae.parse_golden('{"question": "How long do cats sleep?"}'), ["fake/model"])
        return nim.chat_requests[0]["json"]["max_tokens"]


# --- the cases: (setting, value, observe(settings, ctx) -> what the component did, expected) ----------------

def _cases(tmp_path, monkeypatch):
    other_models = _side_file(tmp_path, "models.yaml", lambda r: r.update(fallback_order=["hosted", "embedded"]))
    other_router = _side_file(tmp_path, "router.yaml", lambda r: r.update(default_route="quality"))
    cache = tmp_path / "onnx-cache"
    return [
        ("data_dir", str(tmp_path / "elsewhere"), lambda s: (_ingest(s), (tmp_path / "elsewhere" / "collections" / "c").is_dir())[1], True),
        ("models_file", other_models, lambda s: _catalog(s).fallback_order, ["hosted", "embedded"]),
        ("router_file", other_router, lambda s: _router(s).route("zzz " * 12)[0], "quality"),
        ("embedder.kind", "nvidia", lambda s: type(_embedder(s)).__name__, "NvidiaEmbedder"),
        ("embedder.model", "nvidia/nv-embed-v1", lambda s: _nvidia(s, "model"), "nvidia/nv-embed-v1"),
        ("embedder.base_url", "http://127.0.0.1:9/v1", lambda s: _nvidia(s, "base_url"), "http://127.0.0.1:9/v1"),
        ("embedder.api_key_env", "MY_EMBED_KEY", _nvidia_key_asked_for, "MY_EMBED_KEY"),
        ("embedder.batch_size", 7, lambda s: _embedder(s).batch_size, 7),
        ("embedder.backend", "torch", lambda s: type(_embedder(s)).__name__, "LocalEmbedder"),
        ("embedder.device", "cuda", lambda s: __import__("rag.embed", fromlist=["x"]).pick_device(s.embedder.device), "cuda"),
        ("embedder.cache_dir", str(cache), lambda s: Path(_embedder(s).onnx_path).parent.parent == cache, True),
        ("chunking.chunk_tokens", 64, lambda s: _chunks_of_long_doc(s) > 30, True),
        ("chunking.overlap_tokens", 0, _overlap, False),
        ("retrieval.mode", "sparse", lambda s: _search(s).mode, "sparse"),
        ("retrieval.k", 2, lambda s: len(_search(s).hits), 2),
        ("retrieval.depth", 3, lambda s: _search(s, k=1).candidates["dense"], 3),
        ("retrieval.fusion", "rrf", _is_rrf, True),
        ("retrieval.rrf_k", 5, _rrf_scores, "changed"),
        ("retrieval.dense_weight", 0.2, _rrf_scores, "changed"),
        ("retrieval.sparse_weight", 0.9, _rrf_scores, "changed"),
        ("retrieval.index_title", False, _title_only_word_found, False),
        ("dense.exact_max", 100, lambda s: _vectors_collection(s).dense.kind, "ivf"),
        ("dense.approx", "hnsw", lambda s: (setattr(s.dense, "exact_max", 100), _vectors_collection(s).dense.kind)[1], "hnsw"),
        ("dense.storage", "flat", lambda s: type(_ivf(s)[2]).__name__, "IndexIVFFlat"),
        ("dense.ivf_nlist", 3, lambda s: _ivf(s)[1].nlist, 3),
        ("dense.ivf_nprobe", 5, lambda s: _ivf(s)[1].nprobe, 5),
        ("dense.hnsw_m", 8, lambda s: int(_hnsw(s).nb_neighbors(1)), 8),  # neighbours per node above layer 0
        ("dense.hnsw_ef_construction", 40, lambda s: _hnsw(s).efConstruction, 40),
        ("dense.hnsw_ef_search", 20, lambda s: _hnsw(s).efSearch, 20),
        ("dense.use_gpu", "never", lambda s: _collection(s).dense.use_gpu, "never"),
        ("sparse.method", "robertson", lambda s: _collection(s).sparse.params["method"] == "robertson" and
         round(float(_search(s, mode="sparse").hits[0].score), 4), "changed"),
        ("sparse.k1", 2.0, lambda s: round(float(_search(s, mode="sparse").hits[0].score), 4), "changed"),
        ("sparse.b", 1.0, lambda s: round(float(_search(s, mode="sparse").hits[0].score), 4), "changed"),
        ("sparse.stopwords", None, lambda s: len(_search(s, query="the", mode="sparse").hits) > 0, True),
        ("sparse.stemmer", None, lambda s: len(_search(s, query="sleep", mode="sparse").hits), 1),
        ("sparse.backend", "numpy", lambda s: _collection(s).sparse.backend, "numpy"),
        ("store.backend", "milvus", _backend_of_c, "milvus"),
        ("store.milvus.uri", str(tmp_path / "elsewhere.db"),
         lambda s: _in_milvus(s, lambda s: (tmp_path / "elsewhere.db" / "collections").is_dir()), True),
        ("store.milvus.token_env", "MY_MILVUS_TOKEN", lambda s: (monkeypatch.setenv("MY_MILVUS_TOKEN", "root:Milvus"),
         __import__("rag.store.milvus", fromlist=["x"]).client_args(s)["token"])[1], "root:Milvus"),
        ("store.milvus.index_type", "IVF_FLAT", _milvus_index_type, "IVF_FLAT"),
        ("limits.max_file_bytes", 10, lambda s: _upload(s, "a.md", b"# A\n\nlonger than ten bytes"), "failed"),
        ("limits.max_files_per_upload", 1, lambda s: _upload(s, "p.zip", _zip({"a.md": b"alpha", "b.md": b"beta"})),
         ["added", "failed"]),  # the archive's second member is over the limit
        ("limits.max_archive_bytes", 100, lambda s: _upload(s, "p.zip", _zip({"a.md": b"alpha " * 50})), "failed"),
        ("limits.max_archive_ratio", 1.2, lambda s: _upload(s, "p.zip", _zip({"a.md": _letters(70000)})), "failed"),
        ("limits.allowed_types", ["md"], lambda s: _upload(s, "a.txt", b"plain text"), "failed"),
        ("admin.username", "boss", lambda s: (monkeypatch.setenv("HYBRID_RAG_ADMIN_PASSWORD", "pw-1-long"),
                                               _admin(s, user="boss"))[1], "allowed"),
        ("admin.password_env", "MY_ADMIN_PW", lambda s: (monkeypatch.setenv("MY_ADMIN_PW", "pw-1-long"), _admin(s))[1],
         "allowed"),
        ("admin.password", "pw-1-long", lambda s: _admin(s), "allowed"),
        ("auth.session_ttl_s", 60, lambda s: _session_after(s, 120), False),
        ("auth.session_max_s", 150, lambda s: _session_after(s, 100, 100), False),
        ("auth.trusted_proxies", ["10.0.0.0/8"], _forwarded_client, "203.0.113.9"),
        ("auth.sso_header", "X-Remote-User", _sso_name, "carol"),
        ("auth.sso_role", "editor", _sso_role, "editor"),
        ("auth.database_url_env", "MY_STATE_DB", lambda s: _database_path(s, monkeypatch, tmp_path), True),
        ("api.default_collection", "team-docs", _chat_collection, "team-docs"),
        ("api.max_generations_per_key", 3, lambda s: _api_slots(s)[0], 3),
        ("api.retry_after_s", 9, lambda s: _api_slots(s)[1], "9"),
        ("jobs.keep", 1, _jobs_remembered, 1),
        ("verify.enabled", False, _citation_check, "off"),
        ("verify.threshold", 0.95, _citation_check, "unsupported"),
        ("rerank.enabled", True, lambda s: _rerank(s, "requests", enable=False), 1),
        ("rerank.model", "other/reranker", lambda s: _rerank(s, "model"), "other/reranker"),
        ("rerank.base_url", closed_port_url(), lambda s: _rerank(s, "failure"), "down"),
        ("rerank.api_key_env", "MY_RERANK_KEY", lambda s: _rerank_key_asked_for(s, monkeypatch), "MY_RERANK_KEY"),
        ("rerank.top_n", 2, lambda s: _rerank(s, "passages"), 2),
        ("rerank.timeout_s", 0.2, lambda s: _rerank(s, "failure", delay_s=0.6), "timeout"),
        ("evaluation.judge_model", "meta/llama-3.2-3b-instruct", lambda s: _answer_eval(s, "judge"),
         "meta/llama-3.2-3b-instruct"),
        ("evaluation.max_tokens", 32, lambda s: _answer_eval(s, "max_tokens"), 32),
        ("offline_llm.threads", 3, lambda s: _embedded_load_args(s, monkeypatch)[0], 3),
        ("offline_llm.repack", True, lambda s: _embedded_load_args(s, monkeypatch)[1], True),
        ("offline_llm.flash_attn", False, lambda s: _embedded_load_args(s, monkeypatch)[2], False),
        ("offline_llm.repeat_penalty", 1.3, lambda s: _embedded_request(s, monkeypatch)["kwargs"].get("repeat_penalty"),
         1.3),
        ("offline_llm.prompt", "full", lambda s: _embedded_request(s, monkeypatch)["messages"][0]["content"].startswith(
            "You are a careful assistant"), True),
        ("offline_llm.passages", 1, lambda s: _embedded_request(s, monkeypatch)["sources"], 1),
        ("offline_llm.passage_tokens", 16, lambda s: max(len(ln) for ln in _embedded_request(s, monkeypatch)[
            "messages"][-1]["content"].splitlines() if ln.startswith("[")) <= 24, True),  # "[n] " + 16 + " …"
        ("offline_llm.loop_stop", False, lambda s: _embedded_request(s, monkeypatch)["meta"]["loop_stop"] is None, True),
        ("models.fallback_order", ["hosted", "embedded"], lambda s: _catalog(s).endpoints_for(
            _catalog(s).model_for_route("quality")), ["hosted"]),
        ("models.routes.speed", "meta/llama-3.2-3b-instruct", lambda s: _catalog(s).model_for_route("speed").id,
         "meta/llama-3.2-3b-instruct"),
        ("models.routes.quality", "meta/llama-3.2-3b-instruct", lambda s: _catalog(s).model_for_route("quality").id,
         "meta/llama-3.2-3b-instruct"),
        ("models.routes.openusd", "meta/llama-3.2-3b-instruct", lambda s: _catalog(s).model_for_route("openusd").id,
         "meta/llama-3.2-3b-instruct"),
        ("models.health.ttl_s", 1.5, lambda s: _engine(s).health.ttl_s, 1.5),
        ("models.health.probe_timeout_s", 0.2, _probe_of_a_slow_server, False),
        ("models.timeouts.connect_s", 0.7, lambda s: _timeouts_sent(s)[0], 0.7),
        ("models.timeouts.read_s", 9.0, lambda s: _timeouts_sent(s)[1], 9.0),
        ("models.retries.attempts", 1, _requests_before_giving_up, 1),
        ("models.retries.backoff_s", 0.0, lambda s: _local_client(s)._backoff(0, None), 0.0),
        ("models.retries.backoff_max_s", 0.0, lambda s: _local_client(s)._backoff(2, None), 0.0),
        ("models.telemetry", True, lambda s: _local_client(s)._chat(None).usage_telemetry_enabled, True),
        ("models.endpoints.local.base_url", "http://127.0.0.1:9/v1", lambda s: _local_client(s).base_url,
         "http://127.0.0.1:9/v1"),
        ("router.default_route", "quality", lambda s: _router(s).route("zzz " * 12)[0], "quality"),
        ("router.embedding_weight", 0.0, _speed_score_of_a_speed_vector, 0.0),
        ("router.top_k", 1, _speed_score_of_a_speed_vector, 1.0),
        ("router.length.long_words", 10, lambda s: _route_scores(s, 12)["quality"], 0.35),
        ("router.length.long_weight", 0.9, lambda s: _route_scores(s, 25)["quality"], 0.9),
        ("router.length.short_words", 1, lambda s: _route_scores(s, 2)["speed"], 0.0),
        ("router.length.short_weight", 0.5, lambda s: _route_scores(s, 2)["speed"], 0.5),
        ("router.passages.weight", 0.0,
         lambda s: _router(s).route("zzz " * 12, passages=["from pxr import Usd"])[2]["openusd"], 0.0),
        ("router.passages.top_n", 1,
         lambda s: _router(s).route("zzz " * 12, passages=["from pxr import Usd", "zzz"])[2]["openusd"], 0.5),
        ("router.passages.min_score", 9.0,
         lambda s: _router(s).route("zzz " * 12, passages=["from pxr import Usd"])[2]["openusd"], -0.5),
    ]


def _env_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(v)
    return str(v)


def _settings_via(channel, path, value, tmp_path, monkeypatch) -> Settings:
    if path == "data_dir":
        monkeypatch.delenv("HYBRID_RAG_DATA")
    if channel == "env":
        monkeypatch.setenv("HYBRID_RAG__" + path.upper().replace(".", "__"), _env_value(value))
        return load_settings()
    raw = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    node, *parts = raw, *path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return load_settings(cfg)


def _case_ids():
    import inspect

    src = inspect.getsource(_cases)
    return [line.split('"')[1] for line in src.splitlines() if line.strip().startswith('("')]


CASE_IDS = _case_ids()
SLOW = {"embedder.cache_dir"}  # exports the ONNX model into a new folder


@pytest.mark.parametrize("channel", ["file", "env"])
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASE_IDS])
def test_each_setting_takes_effect(case, channel, tmp_path, monkeypatch):
    for k in ("HYBRID_RAG_ADMIN_PASSWORD", "MY_ADMIN_PW", "MY_EMBED_KEY", "HYBRID_RAG_NIM_URL", "MILVUS_TOKEN",
              "MY_MILVUS_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-test")  # the NVIDIA embedder is built, never called
    if case == "embedder.api_key_env":
        monkeypatch.delenv("NVIDIA_API_KEY")
    entry = {c[0]: c for c in _cases(tmp_path, monkeypatch)}[case]
    path, value, observe, expected = entry
    monkeypatch.setenv("HYBRID_RAG_DATA", str(tmp_path / "default"))
    before = observe(load_settings())
    monkeypatch.setenv("HYBRID_RAG_DATA", str(tmp_path / "flipped"))
    after = observe(_settings_via(channel, path, value, tmp_path, monkeypatch))
    if expected == "changed":
        assert after != before, f"{path} through {channel}: nothing changed ({before!r})"
    else:
        assert after == expected, f"{path} through {channel}: saw {after!r}, want {expected!r}"
        assert before != expected, f"{path}: the default already gives {expected!r}; the case observes nothing"


# collections of data rather than settings (each entry is data the code reads as a whole), and format versions
NOT_LEAVES = {"models.models", "models.endpoints", "router.rules", "router.exemplars", "models.version",
              "router.version"}


def _leaves(model, prefix=""):
    from pydantic import BaseModel

    out = []
    for name in type(model).model_fields:
        value, path = getattr(model, name), prefix + name
        if path in NOT_LEAVES:
            continue
        if isinstance(value, BaseModel):
            out += _leaves(value, path + ".")
        elif isinstance(value, dict):
            out += [f"{path}.{k}" for k in value]
        else:
            out.append(path)
    return out


def test_every_setting_has_a_case():
    """Every setting of default.yaml, models.yaml and router.yaml (but their lists of models, endpoints,
    rules and exemplars) is flipped by a case above."""
    missing = sorted(set(_leaves(load_settings())) - set(CASE_IDS))
    assert not missing, f"settings with no take-effect case in tests/test_settings.py: {missing}"


def test_unknown_or_bad_settings_are_errors_that_name_their_source(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_RAG__RETRIEVL__K", "5")
    with pytest.raises(ConfigError, match="retrievl.*HYBRID_RAG__RETRIEVL__K.*unknown setting|unknown setting"):
        load_settings()
    monkeypatch.delenv("HYBRID_RAG__RETRIEVL__K")
    monkeypatch.setenv("HYBRID_RAG__RETRIEVAL__K", "0")
    with pytest.raises(ConfigError, match=r"retrieval\.k \(set by HYBRID_RAG__RETRIEVAL__K\)"):
        load_settings()
    monkeypatch.delenv("HYBRID_RAG__RETRIEVAL__K")
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrieval: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")


def test_defaults_of_the_schema_equal_default_yaml():
    """The code's defaults and the shipped file agree, so a component built without settings behaves alike."""
    from rag.config import DenseSettings, SparseSettings
    from rag.dense import DenseIndex, gpu_count
    from rag.sparse import SparseIndex

    s = load_settings()
    for section in ("embedder", "chunking", "retrieval", "dense", "sparse", "limits", "admin", "offline_llm", "api",
                    "jobs"):
        assert getattr(s, section) == type(getattr(s, section))(), section
    d = DenseIndex(8)
    assert (d.exact_max, d.approx, d.ivf_nprobe) == (s.dense.exact_max, s.dense.approx, s.dense.ivf_nprobe) == (
        DenseSettings().exact_max, DenseSettings().approx, DenseSettings().ivf_nprobe)
    # storage auto resolves where the index is made: fast-scan pq on a machine whose FAISS sees no GPU
    assert s.dense.storage == DenseSettings().storage == "auto"
    assert d.storage == ("sq8" if gpu_count() else "pq")
    assert SparseIndex().params == {k: getattr(SparseSettings(), k) for k in ("method", "k1", "b", "stopwords", "stemmer")}
