"""Request and response models of the HTTP API (they make the OpenAPI schema at ``/docs``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["sparse", "dense", "hybrid"]


class _Open(BaseModel):
    """OpenAI clients send fields this server does not use (``user``, ``logprobs``...): accepted, ignored."""

    model_config = ConfigDict(extra="allow")


# --- chat -----------------------------------------------------------------------------------------
MAX_TEXT = 1_000_000  # characters in one message (the body itself is capped at 8 MiB)


class ContentPart(_Open):
    type: str
    text: str | None = Field(None, max_length=MAX_TEXT)


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    @field_validator("content")
    @classmethod
    def _bounded(cls, v):
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT:,} characters per message ({len(v):,} sent)")
        if isinstance(v, list) and len(v) > 100:
            raise ValueError(f"at most 100 content parts per message ({len(v)} sent)")
        return v


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    model: str = Field(..., description="a route (auto, speed, quality, openusd) or a catalog model id or alias",
                       examples=["auto"])
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=1000,
                                        description="the conversation; the last message is the question")
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = Field(None, description="same as max_tokens (newer OpenAI clients)")
    stop: str | list[str] | None = Field(None, max_length=1000)
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int | None = Field(None, description="only 1 is supported")
    tools: list[Any] | None = Field(None, description="not supported")
    # RAG settings (the OpenAI SDK sends them with extra_body)
    collection: str | None = Field(None, description="the collection to answer from (api.default_collection "
                                                     "when omitted)")
    mode: Mode | None = Field(None, description="retrieval mode (settings: retrieval.mode)")
    top_k: int | None = Field(None, ge=1, le=200, description="chunks retrieved and offered to the model")


class Citation(BaseModel):
    """Source ``[index]`` exactly as the model saw it, with the ranks that put it there."""

    index: int = Field(..., description="n in the answer's [n] markers")
    cited: bool = Field(..., description="whether the answer cites it")
    document: str
    doc_id: str
    title: str
    page: int | None
    heading: str | None
    chunk_id: str
    text: str = Field(..., description="the chunk text sent to the model")
    start: int
    end: int
    score: float = Field(..., description="the fused score (or the one retriever's score)")
    fused_rank: int | None
    dense_rank: int | None
    dense_score: float | None
    sparse_rank: int | None
    sparse_score: float | None
    rerank_rank: int | None = Field(None, description="rank after the rerank stage (None when it did not run)")
    rerank_score: float | None = Field(None, description="the rerank NIM's score")
    supported: bool | None = Field(None, description="the citation check: every sentence citing this source is "
                                                     "supported by it (None: not cited, or the check is off)")
    support_score: float | None = Field(None, description="the lowest support score of the sentences citing it")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(..., description="the catalog id of the model that answered")
    choices: list[Choice]
    usage: Usage
    citations: list[Citation]
    x_hybrid_rag: dict = Field(..., description="route, reason, model, endpoint, fallbacks, retrieval_ms, "
                                                "ttft_ms, citations used/unknown, verification (the citation "
                                                "check: counts, unsupported and uncited sentences), rerank, ...")


# --- models ---------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    x_hybrid_rag: dict


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- search ---------------------------------------------------------------------------------------
class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=10_000)
    collection: str | None = None
    mode: Mode | None = None
    k: int | None = Field(None, ge=1, le=1000)


class SearchHit(BaseModel):
    rank: int
    document: str
    doc_id: str
    title: str
    page: int | None
    heading: str | None
    chunk_id: str
    text: str
    start: int
    end: int
    score: float
    fused_rank: int | None
    dense_rank: int | None
    dense_score: float | None
    sparse_rank: int | None
    sparse_score: float | None
    rerank_rank: int | None = Field(None, description="rank after the rerank stage (None when it did not run)")
    rerank_score: float | None = Field(None, description="the rerank NIM's score")


class SearchResponse(BaseModel):
    object: Literal["search.result"] = "search.result"
    collection: str
    mode: str
    retrieval_ms: float
    timings: dict
    hits: list[SearchHit]
    rerank: dict | None = Field(None, description="null when rerank.enabled is off; else {model, where (local | hosted), "
                                "reranked (passages sent), ms, applied, reason (why the fused order was kept, "
                                "or null), failure (its class: timeout, down, auth, rate_limited, key_missing, "
                                "error, or null)}")


# --- collections, documents, jobs -------------------------------------------------------------------
class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64)


class CollectionInfo(BaseModel):
    name: str
    version: str
    documents: int
    chunks: int
    embedder: str
    updated: float
    active_jobs: list[str] = Field(default_factory=list)


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionInfo]


class DocumentInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    doc_id: str
    source: str
    title: str | None = None
    chunks: int
    bytes: int | None = None
    format: str | None = None
    added_at: float | None = None


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    data: list[DocumentInfo]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class FileResultInfo(BaseModel):
    name: str
    status: str = Field(..., description="added | replaced | duplicate | failed")
    chunks: int
    documents: int
    error: str | None
    details: list[str]


class FileStateInfo(BaseModel):
    name: str
    state: str = Field(..., description="queued | loading | embedding | embedded | committed | duplicate | failed | "
                                        "cancelled")
    chunks: int
    embedded: int
    detail: str


class JobInfo(BaseModel):
    id: str
    object: Literal["job"] = "job"
    collection: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float
    message: str
    files: list[str]
    created_at: float
    started_at: float | None
    finished_at: float | None
    chunks: int
    error: str | None
    results: list[FileResultInfo]
    file_states: list[FileStateInfo] = Field(default_factory=list, description="each file's state as the job runs "
                                             "(committed files are searchable before the job ends)")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobInfo]


__all__ = [n for n in dir() if n[0].isupper() and n not in ("Any", "BaseModel", "ConfigDict", "Field", "Literal",
                                                             "MAX_TEXT")]
