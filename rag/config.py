"""Settings: one loader and one strict schema for ``default.yaml``, ``models.yaml`` and ``router.yaml``.

``load_settings()`` reads the settings file (``--config``, else ``$HYBRID_RAG_CONFIG``, else the packaged
``configs/default.yaml``), then the model catalog and the router file it names (``models_file``,
``router_file``: beside it, else the packaged ones), applies environment overrides and validates the
whole with pydantic. Every setting is a field of :class:`Settings`, and every field can be set by an
environment variable named after its path::

    HYBRID_RAG__RETRIEVAL__FUSION=rrf          retrieval.fusion
    HYBRID_RAG__EMBEDDER__BACKEND=torch        embedder.backend
    HYBRID_RAG__MODELS__FALLBACK_ORDER=hosted,embedded
    HYBRID_RAG__OFFLINE_LLM__THREADS=2

Text settings take the value as it is; others are parsed as YAML (``5``, ``true``, ``[a, b]``), and list
settings also take ``a,b``. Two short names remain: ``HYBRID_RAG_DATA`` (= ``data_dir``) and
``HYBRID_RAG_CONFIG`` (which file to read). ``data_dir`` and ``embedder.cache_dir`` are relative to the
working directory; ``models_file`` and ``router_file`` are looked up beside the settings file, then in
the working directory, then among the packaged files. Keys live in environment variables that settings
name (``api_key_env``, ``password_env``); validation errors never echo the value of a password, key or
token setting.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .catalog import CatalogSpec
from .router import RouterSpec
from .schema import ConfigError, CsvList, Strict

ENV_PREFIX = "HYBRID_RAG__"
CONFIG_ENV = "HYBRID_RAG_CONFIG"
DATA_ENV = "HYBRID_RAG_DATA"


def _config_dir() -> Path:
    """The shipped settings files: ``rag/configs`` in an installed package, ``configs/`` in a checkout."""
    packaged = Path(__file__).resolve().parent / "configs"
    return packaged if (packaged / "default.yaml").is_file() else Path(__file__).resolve().parent.parent / "configs"


CONFIG_DIR = _config_dir()
# the source checkout (README, docs/) when running from one; None in an installed package
SOURCE_ROOT: Path | None = CONFIG_DIR.parent if (CONFIG_DIR.parent / "pyproject.toml").is_file() else None


class EmbedderSettings(Strict):
    kind: Literal["local", "nvidia"] = "local"
    model: str = "nvidia/nv-embedqa-e5-v5"
    base_url: str | None = None
    api_key_env: str = "NVIDIA_API_KEY"
    batch_size: int = Field(64, ge=1, le=4096)
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache_dir: Path | None = None


class ChunkingSettings(Strict):
    chunk_tokens: int = Field(200, ge=16, le=8192)
    overlap_tokens: int = Field(40, ge=0, le=4096)

    @model_validator(mode="after")
    def _overlap_fits(self):
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be smaller than chunk_tokens "
                             f"({self.chunk_tokens})")
        return self


class RetrievalSettings(Strict):
    mode: Literal["sparse", "dense", "hybrid"] = "hybrid"
    k: int = Field(8, ge=1, le=200)
    depth: int = Field(100, ge=1, le=10000)
    fusion: Literal["convex", "rrf"] = "convex"
    rrf_k: float = Field(60, ge=0)
    dense_weight: float = Field(0.7, ge=0)
    sparse_weight: float = Field(0.3, ge=0)
    index_title: bool = True


class DenseSettings(Strict):
    exact_max: int = Field(50_000, ge=0)
    approx: Literal["hnsw", "ivf"] = "ivf"
    storage: Literal["auto", "flat", "fp16", "sq8", "pq"] = "auto"
    ivf_nlist: int = Field(0, ge=0)
    ivf_nprobe: int = Field(64, ge=1)
    hnsw_m: int = Field(32, ge=4, le=256)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(96, ge=8)
    use_gpu: Literal["auto", "never"] = "auto"

    @model_validator(mode="after")
    def _pq_is_ivf(self):
        if self.storage == "pq" and self.approx != "ivf":
            raise ValueError("storage pq (product quantisation) needs approx ivf: use sq8 or fp16 with hnsw")
        return self


class SparseSettings(Strict):
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    k1: float = Field(0.9, gt=0, le=10)
    b: float = Field(0.4, ge=0, le=1)
    stopwords: Literal["en"] | None = "en"
    stemmer: str | None = "english"
    backend: Literal["auto", "numba", "numpy"] = "auto"

    @field_validator("stemmer")
    @classmethod
    def _known_stemmer(cls, v):
        import Stemmer  # PyStemmer, a dependency

        if v is not None and v not in Stemmer.algorithms():
            raise ValueError(f"unknown stemmer; use null or one of {', '.join(Stemmer.algorithms())}")
        return v


class LimitSettings(Strict):
    max_file_bytes: int = Field(50 * 2**20, ge=1)
    max_files_per_upload: int = Field(200, ge=1)
    max_archive_bytes: int = Field(200 * 2**20, ge=1)
    max_archive_ratio: float = Field(100, gt=1)
    allowed_types: CsvList = Field(default_factory=lambda: [
        "pdf", "docx", "pptx", "xlsx", "odt", "epub", "html", "htm", "md", "markdown", "rst", "txt", "text", "csv", "tsv", "jsonl", "gz", "zip", "py", "usda", "usd", "json", "yaml", "yml", "toml", "ini", "cfg", "xml", "js", "ts", "c", "h", "cpp", "hpp", "java", "go", "rs", "sh", "sql"])


class AdminSettings(Strict):
    username: str = "admin"
    password_env: str = "HYBRID_RAG_ADMIN_PASSWORD"
    password: str | None = None


class AuthSettings(Strict):
    """Accounts and sign-in (rag/state): web sessions, trusted proxies, single sign-on, the state database."""

    session_ttl_s: int = Field(28800, ge=60, le=365 * 86400)      # a web session ends after this long idle
    session_max_s: int = Field(604800, ge=60, le=3650 * 86400)    # ... and this long after sign-in, whatever happens
    trusted_proxies: CsvList = Field(default_factory=list)        # addresses/CIDRs whose X-Forwarded-For (and SSO
                                                                  # header) are believed
    sso_header: str = ""                    # e.g. X-Forwarded-User; empty: single sign-on off
    sso_role: Literal["admin", "editor", "reader"] = "reader"     # the role of a user first seen through SSO
    database_url_env: str = "HYBRID_RAG_DATABASE_URL"             # the variable that holds a database URL

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v):
        import ipaddress

        for item in v:
            try:
                ipaddress.ip_network(str(item).strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network (e.g. 10.0.0.1 or 10.0.0.0/8)") from None
        return [str(item).strip() for item in v]


class OfflineLLMSettings(Strict):
    """The embedded SmolLM2 chat model (llama.cpp)."""

    threads: int = Field(0, ge=0, le=256)   # 0: the cores free when an answer starts, 1 to 4
    repack: bool = False                    # llama.cpp weight repacking (AMX/AVX-512 kernels)
    flash_attn: bool = True                 # llama.cpp's fused attention
    repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)   # llama.cpp's penalty on the last 64 tokens; 1 = off
    prompt: Literal["compact", "full"] = "compact"      # compact: few passages cut to their best sentences
    passages: int = Field(3, ge=1, le=20)               # passages in the compact prompt
    passage_tokens: int = Field(60, ge=16, le=1024)     # each cut to its best sentences within this
    loop_stop: bool = True                  # stop a repeating answer; extractive answer when it is unusable


class ApiSettings(Strict):
    """The HTTP API under /v1 (rag/api)."""

    default_collection: str | None = None   # chat and search without a ``collection`` field use this
    max_generations_per_key: int = Field(2, ge=1, le=1000)  # simultaneous chat completions per API key
    retry_after_s: int = Field(2, ge=1, le=3600)             # the Retry-After of a 429 beyond that limit


class JobSettings(Strict):
    """Background ingest jobs (API uploads and the Documents tab)."""

    keep: int = Field(200, ge=1, le=100_000)   # finished jobs remembered, newest first


MILVUS_INDEX_TYPES = ("HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX",
                      "GPU_CAGRA", "GPU_IVF_FLAT", "GPU_IVF_PQ", "GPU_BRUTE_FORCE")


class MilvusSettings(Strict):
    """The Milvus server (or Milvus Lite file) that ``store.backend: milvus`` collections live in."""

    uri: str | None = None                  # None: the Milvus Lite file <data_dir>/milvus.db
    token_env: str = "MILVUS_TOKEN"         # the variable that holds the token ("user:password" or an API key)
    index_type: Literal[MILVUS_INDEX_TYPES] = "HNSW"   # dense index of new collections; GPU_* need a GPU server


class StoreSettings(Strict):
    backend: Literal["files", "milvus"] = "files"   # where new collections go; each collection keeps its own
    milvus: MilvusSettings = MilvusSettings()


class VerifySettings(Strict):
    """Verified citations (rag/verify.py): each answer's sentences checked against the passages they cite."""

    enabled: bool = True
    threshold: float = Field(0.54, ge=0, le=1)   # support score (cosine) a cited sentence needs; tuned, see docs


class RerankSettings(Strict):
    """The optional rerank stage (rag/rerank.py): a rerank NIM reorders the fused top ``top_n``."""

    enabled: bool = False
    model: str = "nvidia/llama-3.2-nv-rerankqa-1b-v2"
    base_url: str | None = None             # local rerank NIM, e.g. http://localhost:8000/v1; None = hosted
    api_key_env: str = "NVIDIA_API_KEY"     # the variable that holds the hosted key
    top_n: int = Field(20, ge=1, le=200)    # fused hits sent to the reranker (retrieval takes at least this many)
    timeout_s: float = Field(5.0, gt=0, le=300)   # then the fused order is kept


class EvaluationSettings(Strict):
    """Answer evaluation (rag/answereval.py, hybrid-rag eval-answers, the Evaluate tab)."""

    judge_model: str | None = "nvidia/llama-3.1-nemotron-70b-instruct"   # a catalog id/alias/route; None: no judge
    max_tokens: int = Field(256, ge=16, le=8192)   # each model's answer length cap in a run


class Settings(Strict):
    data_dir: Path = Path("data")
    models_file: Path = Path("models.yaml")
    router_file: Path = Path("router.yaml")
    embedder: EmbedderSettings = EmbedderSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    dense: DenseSettings = DenseSettings()
    sparse: SparseSettings = SparseSettings()
    store: StoreSettings = StoreSettings()
    limits: LimitSettings = LimitSettings()
    admin: AdminSettings = AdminSettings()
    auth: AuthSettings = AuthSettings()
    offline_llm: OfflineLLMSettings = OfflineLLMSettings()
    api: ApiSettings = ApiSettings()
    jobs: JobSettings = JobSettings()
    verify: VerifySettings = VerifySettings()
    rerank: RerankSettings = RerankSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    models: CatalogSpec          # from models_file
    router: RouterSpec           # from router_file


# --- loading ------------------------------------------------------------------------------------

def read_yaml(path: Path) -> dict:
    """A YAML mapping from ``path``, or :class:`ConfigError` saying what is wrong with the file."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Settings file {path} not found: pass an existing --config "
                          f"(or {CONFIG_ENV}), or restore it from the repository.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Settings file {path} cannot be read ({type(e).__name__}): check its permissions "
                          "and that it is UTF-8 text.") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', None) or 'a syntax error'}; "
                          "fix the file (a YAML checker shows the spot).") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not a {type(raw).__name__}.")
    return raw


def _is_text(path: list[str]) -> bool:
    """Whether the setting at ``path`` is text (str or a path): its variable's value is taken as it is."""
    from typing import Union, get_args, get_origin

    node = Settings
    for part in path:
        field = node.model_fields.get(part) if isinstance(node, type) and issubclass(node, BaseModel) else None
        if field is None:
            if get_origin(node) is dict:  # e.g. models.endpoints.<name>
                node = get_args(node)[1]
                continue
            return False
        node = field.annotation
        while get_origin(node) in (Union, type(int | None)):
            node = next(a for a in get_args(node) if a is not type(None))
    return node in (str, Path)


def env_overrides(environ) -> tuple[dict, dict[str, str]]:
    """``HYBRID_RAG__A__B=v`` as ``{"a": {"b": v}}``, and the variable behind each dotted path."""
    out: dict = {}
    origin: dict[str, str] = {}
    for key, value in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key} sets a key inside {'.'.join(path[:-1])}, which another variable sets "
                                  "to a value: unset one of them.")
        if not value.strip():
            node[path[-1]] = None
        elif _is_text(path):
            node[path[-1]] = value
        else:
            try:
                node[path[-1]] = yaml.safe_load(value)
            except yaml.YAMLError:
                node[path[-1]] = value
        origin[".".join(path)] = key
    if environ.get(DATA_ENV):
        out["data_dir"] = environ[DATA_ENV]
        origin["data_dir"] = DATA_ENV
    return out, origin


def merge(base: dict, over: dict) -> dict:
    """``over`` laid on ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _side_file(name, config_dir: Path) -> Path:
    p = Path(name).expanduser()
    if p.is_absolute():
        return p
    for base in (config_dir, Path.cwd()):
        if (base / p).is_file():
            return (base / p).resolve()
    return CONFIG_DIR / p


def _explain(e: ValidationError, sources: str, origin: dict[str, str]) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        names = [v for p, v in origin.items() if loc in ("", p) or loc.startswith(p + ".") or p.startswith(loc + ".")]
        where = f" (set by {', '.join(names)})" if names else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"- {loc}{where}: unknown setting; check its spelling against configs/default.yaml")
        elif any(w in loc.lower() for w in ("password", "key", "token", "secret")):
            lines.append(f"- {loc}{where}: {err['msg']}")  # never echo a secret
        else:
            lines.append(f"- {loc}{where}: {err['msg']} (got {err.get('input')!r})")
    return f"Invalid settings in {sources}:\n" + "\n".join(lines)


def load_settings(path: str | Path | None = None, data_dir: str | Path | None = None,
                  environ=None) -> Settings:
    """Read, override and validate every setting. ``data_dir`` (the ``--data-dir`` flag) wins over the rest."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get(CONFIG_ENV) or CONFIG_DIR / "default.yaml").expanduser()
    overrides, origin = env_overrides(environ)
    raw = merge(read_yaml(path), overrides)
    files = [str(path)]
    for section, key in (("models", "models_file"), ("router", "router_file")):
        side = _side_file(raw.get(key) or f"{section}.yaml", path.parent)
        section_over = raw.get(section) or {}
        if not isinstance(section_over, dict):
            raise ConfigError(f"{section} must be a mapping (it is read from {side}).")
        raw[section] = merge(read_yaml(side), section_over)
        raw[key] = str(side)
        files.append(str(side))
    if data_dir is not None:
        raw["data_dir"] = str(data_dir)
        origin.pop("data_dir", None)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, " + ".join(files) + " (or HYBRID_RAG__* variables)", origin)) from None
    settings.data_dir = settings.data_dir.expanduser().resolve()
    if settings.embedder.cache_dir is not None:
        settings.embedder.cache_dir = settings.embedder.cache_dir.expanduser().resolve()
    return settings


__all__ = ["Settings", "load_settings", "ConfigError", "CONFIG_DIR", "SOURCE_ROOT", "read_yaml", "merge",
           "EmbedderSettings", "ChunkingSettings", "RetrievalSettings", "DenseSettings", "SparseSettings", "LimitSettings",
           "StoreSettings", "MilvusSettings", "AuthSettings", "AdminSettings", "VerifySettings", "RerankSettings", "EvaluationSettings"]
