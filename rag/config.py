"""Settings: configs/default.yaml, overridden by environment variables, validated with pydantic."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
ENV_PREFIX = "HYBRID_RAG__"


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedderSettings(_Strict):
    kind: Literal["local", "nvidia"] = "local"
    model: str = "nvidia/nv-embedqa-e5-v5"
    base_url: str | None = None
    batch_size: int = Field(64, ge=1, le=4096)
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"


class ChunkingSettings(_Strict):
    chunk_tokens: int = Field(200, ge=16, le=8192)
    overlap_tokens: int = Field(40, ge=0, le=4096)


class RetrievalSettings(_Strict):
    mode: Literal["sparse", "dense", "hybrid"] = "hybrid"
    k: int = Field(8, ge=1, le=200)
    depth: int = Field(100, ge=1, le=10000)
    fusion: Literal["convex", "rrf"] = "convex"
    rrf_k: float = Field(60, ge=0)
    dense_weight: float = Field(0.7, ge=0)
    sparse_weight: float = Field(0.3, ge=0)
    index_title: bool = True


class DenseSettings(_Strict):
    exact_max: int = Field(50_000, ge=0)
    hnsw_m: int = Field(32, ge=4, le=256)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(96, ge=8)
    use_gpu: Literal["auto", "never"] = "auto"
    approx: Literal["hnsw", "ivf"] = "ivf"
    storage: Literal["flat", "fp16", "sq8"] = "sq8"
    ivf_nlist: int = Field(0, ge=0)
    ivf_nprobe: int = Field(64, ge=1)


class SparseSettings(_Strict):
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    k1: float = Field(0.9, gt=0, le=10)
    b: float = Field(0.4, ge=0, le=1)
    stopwords: str | None = "en"
    stemmer: str | None = "english"
    backend: Literal["auto", "numba", "numpy"] = "auto"


class LimitSettings(_Strict):
    max_file_bytes: int = Field(50 * 2**20, ge=1)
    max_files_per_upload: int = Field(200, ge=1)
    max_archive_bytes: int = Field(200 * 2**20, ge=1)
    max_archive_ratio: float = Field(100, ge=1)
    allowed_types: list[str] = Field(default_factory=lambda: [
        "pdf", "docx", "html", "htm", "md", "markdown", "txt", "text", "jsonl", "gz", "zip"])


class AdminSettings(_Strict):
    username: str = "admin"
    password_env: str = "HYBRID_RAG_ADMIN_PASSWORD"
    password: str | None = None


class Settings(_Strict):
    data_dir: Path = Path("data")
    embedder: EmbedderSettings = EmbedderSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    dense: DenseSettings = DenseSettings()
    sparse: SparseSettings = SparseSettings()
    limits: LimitSettings = LimitSettings()
    admin: AdminSettings = AdminSettings()


def _apply_env(raw: dict, environ) -> dict:
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(value) if value else None
    return raw


def load_settings(path: str | Path | None = None, data_dir: str | Path | None = None,
                  environ=None) -> Settings:
    """Read the YAML config, apply ``HYBRID_RAG__SECTION__KEY`` overrides, then the data directory
    (``data_dir`` argument, else ``HYBRID_RAG_DATA``, else the config's ``data_dir``)."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get("HYBRID_RAG_CONFIG") or CONFIG_DIR / "default.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} not found: pass an existing --config or restore configs/default.yaml.")
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}")
    raw = _apply_env(raw, environ)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"Invalid settings in {path} (or HYBRID_RAG__* variables):\n{e}")
    chosen = data_dir or environ.get("HYBRID_RAG_DATA") or settings.data_dir
    chosen = Path(chosen).expanduser()
    if not chosen.is_absolute():
        chosen = (REPO_ROOT / chosen) if data_dir is None and not environ.get("HYBRID_RAG_DATA") else chosen.resolve()
    settings.data_dir = chosen
    return settings


@lru_cache(maxsize=1)
def default_settings() -> Settings:
    return load_settings()


__all__ = ["Settings", "load_settings", "default_settings", "ConfigError", "REPO_ROOT", "CONFIG_DIR"]
