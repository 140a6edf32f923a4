"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI contract over :meth:`Engine.ask`.

The answer comes from the same path as the Chat tab (retrieve → route → budget → stream → citations).
The last message is the question; earlier user/assistant messages are the history (same token budget
as the app); system messages are not used (the app has its own instructions). RAG settings are extra
body fields: ``collection``, ``mode``, ``top_k``. Citations: a top-level ``citations`` array (source
``[i+1]`` is entry i) in the completion; when streaming, on the chunk just before ``data: [DONE]`` (the
finish chunk, or the usage chunk with ``stream_options.include_usage``), with ``x_hybrid_rag`` (route,
reason, model, endpoint, fallbacks, timings, ``verification``: the citation check, ``rerank``). Each citation
entry also says whether the sentences citing it are supported by it (``supported``, ``support_score``; None
for sources no sentence cites, or when the check is off).

The key's user must be allowed to read the collection (:func:`api.rights.check_read`), checked before anything
is retrieved: a collection they may not read answers as a missing one (404), before any text streams.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, Depends, Request

from rag.answer import Done, Sources, Token
from rag.catalog import ROUTES
from rag.engine import Retrieved, Verified
from rag.metrics import GENERATIONS

from . import rights
from .documents import hit_fields
from .errors import APIError
from .pump import ClosingStreamingResponse, Pump
from .schemas import ChatCompletion, ChatMessage, ChatRequest, ModelCard, ModelList
from .security import Caller
from .service import Service, read_key, service

router = APIRouter(prefix="/v1", tags=["chat"])

ROUTE_IDS = ("auto", *ROUTES)
_ROUTE_TEXT = {"auto": "the router picks speed, quality or openusd per question",
               "speed": "fast answers", "quality": "the strongest model", "openusd": "OpenUSD code questions"}
_SAMPLING = ("temperature", "top_p", "max_tokens", "stop", "seed", "frequency_penalty", "presence_penalty")
META_KEYS = ("route", "reason", "mode", "model", "model_name", "api_model", "endpoint", "fallbacks", "embedded",
             "warning", "attempts", "retrieval_ms", "ttft_ms", "total_ms", "tokens_per_s", "prompt_tokens",
             "completion_tokens", "usage_source", "injection_flags", "chunks_dropped", "history", "params",
             "finish_reason", "partial", "error", "citations", "prompt_style", "loop_stop", "extractive",
             "extractive_reason", "citations_added", "threads", "verification", "rerank")


# --- models -----------------------------------------------------------------------------------------
def _model_cards(svc: Service) -> list[ModelCard]:
    cat = svc.engine.live_catalog()  # with the models local NIMs list (GET /v1/models there, cached)
    cards = [ModelCard(id=r, owned_by="hybrid-rag", x_hybrid_rag={
        "kind": "route", "description": _ROUTE_TEXT[r], "model": None if r == "auto" else cat.model_for_route(r).id})
        for r in ROUTE_IDS]
    for m in cat.models:
        cards.append(ModelCard(id=m.id, owned_by=m.id.split("/", 1)[0] if "/" in m.id else "hybrid-rag",
                               x_hybrid_rag={"kind": "model", "name": m.name, "aliases": list(m.aliases),
                                             "context": m.context, "embedded": m.embedded,
                                             "endpoints": list(cat.endpoints_for(m)), "route": cat.route_of(m.id),
                                             "found_locally": [ep for (mid, ep) in getattr(cat, "found", {})
                                                               if mid == m.id] or None,
                                             "catalog": m.id not in getattr(cat, "extra", ())}))
    return cards


@router.get("/models", response_model=ModelList, summary="Routes and catalog models (OpenAI list format)")
def list_models(svc: Service = Depends(service), _key: Caller = Depends(read_key)):
    return ModelList(data=_model_cards(svc))


@router.get("/models/{model_id:path}", response_model=ModelCard, summary="One route or model")
def get_model(model_id: str, svc: Service = Depends(service), _key: Caller = Depends(read_key)):
    if model_id not in ROUTE_IDS:
        model_id = svc.engine.live_catalog().get_model(model_id).id  # 404 for an unknown one
    return next(c for c in _model_cards(svc) if c.id == model_id)


# --- request → Engine.ask arguments -----------------------------------------------------------------------
def _text(m: ChatMessage, i: int) -> str:
    if m.content is None or isinstance(m.content, str):
        return m.content or ""
    parts = []
    for p in m.content:
        if p.type != "text":
            raise APIError(422, f"messages[{i}]: content parts of type {p.type!r} are not supported; send text.",
                           code="invalid_value", param=f"messages[{i}].content")
        parts.append(p.text or "")
    return "".join(parts)


def conversation(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """(question, history): the last message must be the user's; earlier user/assistant turns are history."""
    last = messages[-1]
    if last.role != "user":
        raise APIError(422, f"The last message must be the user's question (role 'user'), not {last.role!r}.",
                       code="invalid_value", param=f"messages[{len(messages) - 1}].role")
    question = _text(last, len(messages) - 1)
    if not question.strip():
        raise APIError(422, "The question (the last message) is empty.", code="invalid_value",
                       param=f"messages[{len(messages) - 1}].content")
    history = [{"role": m.role, "content": _text(m, i)} for i, m in enumerate(messages[:-1])
               if m.role in ("user", "assistant")]
    return question, history


def ask_arguments(req: ChatRequest, svc: Service) -> dict:
    """Keyword arguments of :meth:`Engine.ask` for ``req`` (raises 4xx :class:`APIError` on bad input)."""
    if req.n not in (None, 1):
        raise APIError(422, "n must be 1: one answer per request.", code="invalid_value", param="n")
    if req.tools:
        raise APIError(422, "tools are not supported: this endpoint answers from documents.", code="invalid_value",
                       param="tools")
    question, history = conversation(req.messages)
    collection = req.collection or svc.settings.api.default_collection
    if not collection:
        raise APIError(422, "No collection: send \"collection\" in the request body (extra_body with the OpenAI "
                            "SDK), or set api.default_collection on the server.", code="invalid_value",
                       param="collection")
    if req.model in ROUTE_IDS:
        route, model = req.model, None
    else:  # a catalog model, or one a local NIM offers: Engine.ask checks it (404 when neither has it)
        route, model = "auto", req.model
    params = {f: getattr(req, f) for f in _SAMPLING if getattr(req, f) is not None}
    if req.max_completion_tokens is not None and "max_tokens" not in params:
        params["max_tokens"] = req.max_completion_tokens
    return {"question": question, "collection": collection, "history": history, "route": route, "model": model,
            "params": params, "mode": req.mode, "k": req.top_k}


# --- response pieces ---------------------------------------------------------------------------------
def citations(hits, used: set[int], verification: dict | None = None) -> list[dict]:
    """One entry per source sent ([i] is entry i - 1); ``supported``/``support_score`` from the citation check."""
    checked = {x["source"]: x for x in (verification or {}).get("sources") or []}
    return [{"index": i, "cited": i in used, **hit_fields(h), "supported": checked.get(i, {}).get("supported"),
             "support_score": checked.get(i, {}).get("support_score")} for i, h in enumerate(hits, 1)]


def x_meta(meta: dict, collection: str, retrieval_mode: str | None, api_ttft_ms: float | None) -> dict:
    out = {k: meta.get(k) for k in META_KEYS if k in meta}
    if isinstance(out.get("endpoint"), dict):  # name and kind; the URL of an internal NIM is not the client's business
        out["endpoint"] = {k: v for k, v in out["endpoint"].items() if k != "base_url"}
    out["collection"] = collection
    out["retrieval_mode"] = retrieval_mode
    out["api_ttft_ms"] = api_ttft_ms
    return out


def usage(meta: dict) -> dict:
    p, c = int(meta.get("prompt_tokens") or 0), int(meta.get("completion_tokens") or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class _Answer:
    """What the events told so far."""

    def __init__(self, requested: str, collection: str):
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = requested
        self.collection = collection
        self.mode = None
        self.hits = []
        self.meta: dict | None = None
        self.started = False    # Sources came: an endpoint accepted the request
        self.parts: list[str] = []
        self.t0 = time.perf_counter()
        self.ttft_ms: float | None = None

    def take(self, ev) -> None:
        if isinstance(ev, Retrieved):
            self.mode = ev.result.mode
        elif isinstance(ev, Sources):
            self.hits, self.started = ev.hits, True
            self.model = ev.model or self.model
        elif isinstance(ev, Token):
            if self.ttft_ms is None:
                self.ttft_ms = round((time.perf_counter() - self.t0) * 1000, 2)
            self.parts.append(ev.text)
        elif isinstance(ev, Done):
            self.meta = ev.meta
        elif isinstance(ev, Verified) and self.meta is not None:
            self.meta["verification"] = ev.report

    def citations(self) -> list[dict]:
        used = set((self.meta or {}).get("citations", {}).get("used", []))
        return citations(self.hits, used, (self.meta or {}).get("verification"))

    def x(self) -> dict:
        return x_meta(self.meta or {}, self.collection, self.mode, self.ttft_ms)

    def chunk(self, delta: dict | None, finish: str | None = None, **extra) -> str:
        obj = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _watch_disconnect(request: Request, pump: Pump) -> None:
    """Stop the generation when the client goes away before the response starts (or, unstreamed, at all)."""
    while not pump.finished.is_set():
        if await request.is_disconnected():
            pump.stop()
            return
        await asyncio.sleep(0.2)


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "a chat.completion, or SSE chat.completion.chunk events when stream"}},
             summary="Answer from a collection, with citations (OpenAI chat completions)")
async def chat_completions(req: ChatRequest, request: Request, svc: Service = Depends(service),
                           key: Caller = Depends(read_key)):
    args = ask_arguments(req, svc)
    question = args.pop("question")
    svc.slots.acquire(key.name)
    GENERATIONS.inc()

    def release() -> None:
        svc.slots.release(key.name)
        GENERATIONS.dec()

    def start():
        rights.check_read(svc, key, args["collection"])  # the user's right, before anything is retrieved
        return svc.engine.ask(question, **args)

    ans = _Answer(req.model, args["collection"])
    try:  # the rights check, and Engine.ask's validation and opening of the collection, run in the pump's thread
        # (no extra thread hop); their errors come out of pump.next() before any response starts
        pump = Pump(start, on_exit=release, urgent=lambda ev: isinstance(ev, Token))
    except BaseException:
        release()
        raise
    watcher = asyncio.create_task(_watch_disconnect(request, pump))
    try:
        # failures before the first answer text (no model available, a bad collection) are HTTP errors
        while ans.meta is None and not ans.started:
            ev = await pump.next()
            if ev is Pump.END:
                break
            ans.take(ev)
        if not req.stream:
            while (ev := await pump.next()) is not Pump.END:
                ans.take(ev)
            return _completion(ans)
    except BaseException:
        pump.stop()
        raise
    finally:
        watcher.cancel()
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return ClosingStreamingResponse(_sse(pump, ans, include_usage), on_close=pump.stop, media_type="text/event-stream",
                                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _broken(meta: dict) -> APIError:
    return APIError(502, f"The model's stream broke before the answer was complete: {meta.get('error')}. The text "
                         "so far is not a whole answer; ask again.", type="server_error", code="upstream_broken")


def _completion(ans: _Answer) -> dict:
    meta = ans.meta or {}
    if meta.get("partial"):
        raise _broken(meta)
    return {"id": ans.id, "object": "chat.completion", "created": ans.created, "model": ans.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(ans.parts)},
                         "finish_reason": meta.get("finish_reason") or "stop"}],
            "usage": usage(meta), "citations": ans.citations(), "x_hybrid_rag": ans.x()}


async def _sse(pump: Pump, ans: _Answer, include_usage: bool):
    # the role goes with the first text (one write less before the first token); a client sees the usual deltas
    role = {"role": "assistant"}
    try:
        for text in ans.parts:  # tokens that arrived with the head
            yield ans.chunk({**role, "content": text})
            role = {}
        while (ev := await pump.next()) is not Pump.END:
            ans.take(ev)
            if isinstance(ev, Token):
                yield ans.chunk({**role, "content": ev.text})
                role = {}
    except Exception as e:  # the headers are sent: report in the stream, as OpenAI does
        from .errors import error_response

        yield f"data: {error_response(e, 'The answer').body.decode()}\n\n"
        yield "data: [DONE]\n\n"
        return
    if role:  # no text at all: the role still comes first
        yield ans.chunk({**role, "content": ""})
    meta = ans.meta or {}
    if meta.get("partial"):  # the text so far stays with the client; the error says it is not whole
        from .errors import error_response

        yield f"data: {error_response(_broken(meta)).body.decode()}\n\n"
        yield "data: [DONE]\n\n"
        return
    # The chunk just before [DONE] carries the citations: the finish chunk (so `chunk.choices[0]` works in every
    # client loop), or with include_usage the usage chunk after it (empty choices, as OpenAI sends it).
    extra = {"citations": ans.citations(), "x_hybrid_rag": ans.x()}
    yield ans.chunk({}, meta.get("finish_reason") or "stop", **({} if include_usage else extra))
    if include_usage:
        yield ans.chunk(None, usage=usage(meta), **extra)
    yield "data: [DONE]\n\n"


__all__ = ["router", "conversation", "ask_arguments", "citations"]
