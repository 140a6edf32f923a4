"""Generation: question + history + hits -> prompt within the model's budget -> routed, streamed events.

This is the generate stage of :func:`rag.ask.ask`, which every face (Chat tab, Compare, CLI) calls;
nothing else calls :func:`answer` directly. Events, in order: one :class:`Sources` (exactly the chunks in
the prompt, as [1]..[n]), any number of :class:`Token`, one :class:`Done` (route, model, endpoint,
timings, usage, ...). ``answer`` validates its arguments before returning the iterator (bad sampling
values raise :class:`~rag.catalog.ParamsError` at the call). It raises :class:`NoModelAvailable` from
the iterator when every endpoint in the chain failed, with each reason. It keeps no state between calls,
so Compare can run several at once in threads.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .catalog import ROUTES, Catalog, ModelSpec, SamplingParams, validate_params
from .errors import InvalidInput
from .extractive import attribute, extract, support
from .llm import (
    HEALTH,
    EmbeddedUnavailable,
    EndpointError,
    HealthCache,
    LLMError,
    NeedsKey,
    StreamBroken,
    found_note,
    make_client,
    probe,
    redact,
)
from .prompt import (  # the prompt stage; re-exported here, where callers have always found it
    EMBEDDED_REMINDER,
    EMBEDDED_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    PromptTooLong,
    build_prompt,
    compact_prompt,
)
from .repetition import LoopGuard
from .router import Router, decide
from .types import Hit

log = logging.getLogger(__name__)

EMBEDDED_WARNING = ("Answered by the small offline model (SmolLM2-135M) because no NIM endpoint was "
                    "available: expect low quality and check the sources.")
MIN_ANSWER_WORDS = 2          # an offline answer with fewer words is empty
MIN_LOOPED_WORDS = 8          # an offline answer cut by the loop stop with fewer words is unusable
MIN_SUPPORT = 0.5             # an offline answer with fewer of its words in the sources or question is made up


class NoModelAvailable(LLMError):
    """Every endpoint in the fallback chain failed; ``fallbacks`` lists each reason."""

    def __init__(self, fallbacks: list[dict], too_long: bool = False):
        self.fallbacks = fallbacks
        self.too_long = too_long  # every endpoint that was reachable refused the question as too long
        lines = "; ".join(f"{f['endpoint']} ({f['model']}): {f['reason']}" for f in fallbacks)
        super().__init__(f"No model could answer. {lines}")


@dataclass
class Sources:
    """The hits that went into the prompt, in order: ``hits[i]`` is source ``[i + 1]``. Sent once the chosen
    endpoint accepted the request: ``model`` (catalog id) and ``endpoint`` (name) are the ones answering."""

    hits: list[Hit]
    model: str | None = None
    endpoint: str | None = None


@dataclass
class Token:
    text: str


@dataclass
class Done:
    """End of the answer. ``meta`` keys: see :func:`answer`."""

    meta: dict = field(default_factory=dict)


Event = Sources | Token | Done


# --- citations ----------------------------------------------------------------------------------------
_CITE_RE = re.compile(r"\[(\s*\d+(?:\s*[-–,]\s*\d+)*\s*)\]")


@dataclass
class Citations:
    """Citation numbers found in an answer: ``used`` maps n -> the hit shown as [n]; ``unknown`` lists
    numbers outside 1..len(hits) (a model inventing a source)."""

    used: dict[int, Hit]
    unknown: list[int]


def parse_citations(text: str, hits: list[Hit]) -> Citations:
    """Find ``[n]``, ``[n, m]``, ``[n-m]`` and ``[n][m]`` in ``text`` and map them to ``hits`` (1-based)."""
    nums: list[int] = []
    for m in _CITE_RE.finditer(text):
        for part in m.group(1).split(","):
            part = part.strip()
            rng = re.split(r"\s*[-–]\s*", part)
            if len(rng) == 2 and rng[0].isdigit() and rng[1].isdigit():
                a, b = int(rng[0]), int(rng[1])
                if 0 < b - a < 50:
                    nums.extend(range(a, b + 1))
                    continue
            if part.isdigit():
                nums.append(int(part))
    used, unknown = {}, []
    for n in dict.fromkeys(nums):
        if 1 <= n <= len(hits):
            used[n] = hits[n - 1]
        else:
            unknown.append(n)
    return Citations(used=used, unknown=unknown)


# --- prompt injection ---------------------------------------------------------------------------------
_INJECTION_RE = re.compile(
    r"(?im)\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier|all|any|"
    r"your|the)\b[^.\n]{0,20}\b(?:instructions?|prompts?|rules|directions|guidelines)\b"
    r"|\b(?:reveal|leak)\b[^.\n]{0,30}\b(?:system prompt|instructions|api[ _-]?key|password|secret)"
    r"|\b(?:print|show|repeat|tell me)\s+(?:me\s+)?your\s+(?:system prompt|instructions|api[ _-]?key)"
    r"|\byou are now\b|\bdeveloper mode\b|\bjailbreak\b"
    r"|<\|?(?:system|im_start|im_end)\|?>|\[/?INST\]|^\s*(?:system|assistant)\s*:")


def injection_flags(hits: list[Hit]) -> list[dict]:
    """Sources whose text reads like instructions to the model ("ignore previous instructions", "reveal the
    system prompt", chat-template markers). They stay in the prompt as quoted data; the flags only warn.
    Returns ``[{"source": n, "chunk": chunk id, "match": the matched text}]`` with n as shown ([n])."""
    out = []
    for n, h in enumerate(hits, 1):
        m = _INJECTION_RE.search(h.chunk.text or "")
        if m:
            out.append({"source": n, "chunk": h.chunk.id, "match": m.group(0).strip()[:80]})
    return out


# --- the offline model's answer: loop stop and extractive fallback ---------------------------------------
def unusable(text: str, hits: list[Hit], looped: bool, question: str = "") -> str | None:
    """Why an offline answer cannot be shown as it is: ``empty`` (the question or the instruction copied back
    counts as nothing), ``loop`` (cut by the loop stop before it
    said much), ``unsupported`` (under :data:`MIN_SUPPORT` of its words are in the sources or the question:
    :func:`rag.extractive.support`) or ``no_citation`` (no ``[n]`` of a passage sent); None when it can."""
    for echo in (question.strip(), EMBEDDED_REMINDER.strip()):   # the prompt copied back says nothing
        if echo:
            text = re.sub(re.escape(echo), " ", text, flags=re.I)
    words = re.findall(r"[^\W\d_]{2,}", _CITE_RE.sub(" ", text))
    if len(words) < MIN_ANSWER_WORDS:
        return "empty"
    if looped and len(words) < MIN_LOOPED_WORDS:
        return "loop"
    if support(text, question, hits) < MIN_SUPPORT:
        return "unsupported"
    if not parse_citations(text, hits).used:
        return "no_citation"
    return None


_WHY_REPLACED = {"empty": "was unusable: it was empty", "loop": "was unusable: it repeated itself",
                 "unsupported": "was unusable: most of it is not in the sources",
                 "no_citation": "was unusable: it cited no source"}
_WHY_ADDED = {"empty": "above is too short", "loop": "above was cut short: it started repeating itself",
              "unsupported": "above is mostly not in the sources", "no_citation": "above cites no source"}


def _guarded(stream, guard: LoopGuard, question: str, hits: list[Hit], state: dict) -> Iterator[str]:
    """The embedded model's pieces through ``guard``: text is released once it is known not to repeat; a loop
    ends generation; an unusable answer is replaced by (or, where part of it was shown, followed by) the
    extractive answer. ``state`` gets ``pieces``, ``extractive_reason`` and ``error`` (a broken stream)."""
    try:
        for piece in stream:
            state["pieces"] += 1
            out = guard.feed(piece)
            if out:
                yield out
            if guard.loop is not None:
                break
    except StreamBroken as e:
        state["error"] = e
    finally:
        _close(stream.pieces)  # a loop, or a consumer that stopped early, ends the model's generation now
    kept = guard.text
    rest = guard.finish()
    if state["error"] is None:
        reason = unusable(kept, hits, guard.loop is not None, question)
        if reason == "no_citation":
            # the model rarely writes [n]: an answer whose words come from a passage gets that passage's number
            added = attribute(kept, question, hits)[:2]
            if added:
                rest = rest.rstrip() + " " + "".join(f"[{n}]" for n in added)
                state["citations_added"] = added
                reason = None
        state["extractive_reason"] = reason
        if reason:
            shown = kept[: len(kept) - len(rest)].strip()
            if shown:
                rest = rest.rstrip() + "\n\n" + extract(question, hits, _WHY_ADDED[reason])
            else:
                rest = extract(question, hits, _WHY_REPLACED[reason])
    if rest:
        yield rest


# --- the chain ----------------------------------------------------------------------------------------
def _candidates(catalog: Catalog, model: ModelSpec, mode: str) -> list[tuple[ModelSpec, str]]:
    """(model, endpoint) pairs to try: the chosen model on its endpoints in fallback order; in auto or route
    mode also the other routed models; then the embedded model."""
    out = [(model, ep) for ep in catalog.endpoints_for(model) if catalog.endpoint(ep).kind != "embedded"]
    if mode != "model":
        for r in ROUTES:
            other = catalog.model_for_route(r)
            if other.id != model.id and not any(o.id == other.id for o, _ in out):
                out += [(other, ep) for ep in catalog.endpoints_for(other) if catalog.endpoint(ep).kind != "embedded"]
    emb = catalog.embedded_model()
    out += [(emb, ep) for ep in emb.serves]
    return out


def _close(it) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _warning(embedded: bool, extractive_reason: str | None) -> str | None:
    if not embedded:
        return None
    if extractive_reason is None:
        return EMBEDDED_WARNING
    why = {"empty": "was empty", "loop": "repeated itself", "unsupported": "was mostly not in the sources",
           "no_citation": "cited no source"}[extractive_reason]
    return (EMBEDDED_WARNING + f" Its answer {why}, so sentences extracted from the sources are shown "
            "(marked as extracted).")


def validate_request(question, *, route: str, model: str | None, params, history, catalog: Catalog) -> SamplingParams:
    """Check a request before anything streams; return the validated sampling parameters.

    Raises :class:`~rag.errors.InvalidInput` (or ``ParamsError``/``UnknownModelError``) naming what is wrong."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("The question is empty: type a question.")
    if route != "auto" and route not in ROUTES:
        raise InvalidInput(f"Unknown route {route!r}: use auto, {', '.join(ROUTES)}.")
    if model:
        catalog.get_model(model)  # UnknownModelError now, not mid-stream
    for h in history or []:
        if not isinstance(h, dict) or h.get("role") not in ("user", "assistant", "system") or "content" not in h:
            raise InvalidInput("history must be a list of {'role': 'user'|'assistant', 'content': str} dicts.")
    return validate_params(params)


def answer(question: str, hits: list[Hit], *, history: list[dict] | None = None, route: str = "auto",
           model: str | None = None, params: dict | SamplingParams | None = None,
           query_vector: np.ndarray | None = None, retrieval_ms: float | None = None,
           catalog: Catalog, router: Router | None = None, health: HealthCache | None = None,
           embedded_options: dict | None = None) -> Iterator[Event]:
    """Answer ``question`` from ``hits``, streaming events (see the module docstring).

    Args:
        question: the user's question (non-empty).
        hits: retrieved chunks, best first; those that fit the model's context are sent as [1]..[n].
        history: earlier turns, ``[{"role": "user"|"assistant", "content": str}, ...]``, oldest first.
        route: ``auto`` (the router picks), or ``speed`` | ``quality`` | ``openusd``.
        model: a catalog model id or alias; overrides ``route``.
        params: sampling overrides (temperature, top_p, max_tokens, stop, seed, frequency_penalty,
            presence_penalty) on top of the model's defaults; validated here.
        query_vector: the query embedding dense retrieval computed (the router reuses it).
        retrieval_ms: reported back in the metadata.
        catalog: the model catalog (``Catalog.from_settings``).
        router: the auto router (``Router.from_settings``); needed when ``route`` is ``auto``.
        health: endpoint health cache (default: the process-wide one).
        embedded_options: the ``offline_llm`` settings (threads, repack, flash_attn, repeat_penalty, prompt,
            passages, passage_tokens, loop_stop) for the embedded model.

    ``Done.meta``: route, reason, mode, model, model_name, api_model, endpoint {name, kind, base_url},
    fallbacks [{endpoint, model, reason}], embedded, warning, retrieval_ms, ttft_ms, total_ms,
    tokens_per_s, prompt_tokens, completion_tokens, usage_source, sources (chunk ids), injection_flags
    (sources that read like instructions, see :func:`injection_flags`), chunks_dropped,
    history {turns, kept, condensed, dropped}, params, finish_reason, partial, error, prompt_style (``full``, or
    ``compact`` for the embedded model: see :func:`compact_prompt`), loop_stop (None, or {rule, why, words} when
    the embedded model's output started repeating itself and generation was stopped: see
    :mod:`rag.repetition`), extractive (True when the embedded model's answer was unusable and the answer is, or
    ends with, sentences extracted from the sources: see :mod:`rag.extractive`), extractive_reason (``empty``,
    ``loop``, ``unsupported`` or ``no_citation``: see :func:`unusable`), citations_added (the [n] appended to an
    embedded answer that cited nothing but whose words come from those passages: see
    :func:`rag.extractive.attribute`), threads (the CPU threads the embedded model used; None for endpoints).
    """
    user_params = validate_request(question, route=route, model=model, params=params, history=history,
                                   catalog=catalog)
    return _run(question, list(hits), list(history or []), route, model, user_params, query_vector,
                retrieval_ms, catalog, router, health or HEALTH, dict(embedded_options or {}))


def _run(question, hits, history, route, model, user_params, query_vector, retrieval_ms, catalog, router,
         health, embedded_options) -> Iterator[Event]:
    t0 = time.perf_counter()
    decision = decide(question, catalog=catalog, route=route, model=model, query_vector=query_vector,
                      router=router, passages=[h.chunk.text for h in hits])
    chosen = catalog.get_model(decision.model)
    secrets = catalog.secrets()
    fallbacks: list[dict] = []
    attempts: list[bool] = []  # per endpoint that was tried: did it refuse the prompt as too long?

    for spec, ep_name in _candidates(catalog, chosen, decision.mode):
        ep = catalog.endpoint(ep_name)
        missing = catalog.key_missing(ep)
        if missing:
            fallbacks.append({"endpoint": ep_name, "model": spec.id, "reason": f"{missing} is not set"})
            continue
        base_url = ep.resolved_base_url(catalog.environ)
        was_cached = health.get(ep, base_url) is not None
        ok, why, served = probe(ep, catalog, health)
        if not ok:
            fallbacks.append({"endpoint": ep_name, "model": spec.id,
                              "reason": f"down: {why}" + (" (cached)" if was_cached else "")})
            continue
        api_model = spec.serves[ep_name]
        model_state = health.get(ep, base_url, api_model)
        if model_state is not None and not model_state[0]:
            fallbacks.append({"endpoint": ep_name, "model": spec.id, "reason": f"failed recently (cached): {model_state[1]}"})
            continue
        if ep.kind == "local_nim" and served and api_model not in served:
            fallbacks.append({"endpoint": ep_name, "model": spec.id,
                              "reason": f"serves {', '.join(sorted(served))}, not {api_model}"})
            continue
        client = make_client(catalog, ep_name, spec, **(embedded_options if ep.kind == "embedded" else {}))
        params = spec.params.merged(user_params)
        try:
            prompt = build_prompt(question, hits, history, client, params)
            params = params.merged(SamplingParams(max_tokens=prompt.max_tokens))
            stream = client.open(prompt.messages, params)
        except NeedsKey as e:
            fallbacks.append({"endpoint": ep_name, "model": spec.id, "reason": redact(str(e), secrets)})
            continue
        except (LLMError, EmbeddedUnavailable) as e:
            attempts.append(isinstance(e, PromptTooLong))
            reason = redact(str(e), secrets)
            if isinstance(e, EndpointError) and ep.kind != "embedded":
                # no HTTP status: the endpoint itself is unreachable; with one: only this model failed
                health.set(ep, base_url, False, reason, model=api_model if e.status else None)
            fallbacks.append({"endpoint": ep_name, "model": spec.id, "reason": reason})
            continue
        for r in stream.retry_reasons:
            fallbacks.append({"endpoint": ep_name, "model": spec.id, "reason": f"retried: {redact(r, secrets)}"})

        yield Sources(list(prompt.hits), model=spec.id, endpoint=ep_name)
        t_first = None
        n_pieces = 0
        error = None
        embedded = ep.kind == "embedded"
        guard = LoopGuard() if embedded and getattr(client, "loop_stop", False) else None
        state = {"pieces": 0, "extractive_reason": None, "error": None, "citations_added": []}
        pieces = _guarded(stream, guard, question, prompt.hits, state) if guard is not None else stream
        try:
            for piece in pieces:
                if t_first is None:
                    t_first = time.perf_counter()
                n_pieces += 1
                yield Token(piece)
        except StreamBroken as e:
            error = redact(str(e), secrets)
        finally:
            _close(pieces)
            _close(stream.pieces)  # a consumer that stopped early ends the model's generation now
        if state["error"] is not None:
            error = redact(str(state["error"]), secrets)
        n_pieces = state["pieces"] if guard is not None else n_pieces
        t_end = time.perf_counter()
        completion = stream.completion_tokens if stream.completion_tokens is not None else n_pieces
        gen_s = (t_end - t_first) if t_first else 0.0
        note = found_note(catalog, spec.id, ep_name)
        meta = {
            "route": decision.route, "reason": decision.reason + (f"; {note}" if note else ""), "mode": decision.mode,
            "route_scores": decision.scores,
            "model": spec.id, "model_name": spec.name, "api_model": api_model,
            "endpoint": ep.describe(catalog.environ), "fallbacks": fallbacks,
            "embedded": embedded, "warning": _warning(embedded, state["extractive_reason"]),
            "attempts": stream.attempts,
            "retrieval_ms": retrieval_ms,
            "ttft_ms": round((t_first - t0) * 1000, 2) if t_first else None,
            "total_ms": round((t_end - t0) * 1000, 2),
            "tokens_per_s": round((completion - 1) / gen_s, 2) if gen_s > 0 and completion > 1 else None,
            "prompt_tokens": stream.prompt_tokens if stream.prompt_tokens is not None else prompt.prompt_tokens,
            "completion_tokens": completion,
            "usage_source": stream.usage_source,
            "sources": [h.chunk.id for h in prompt.hits],
            "injection_flags": injection_flags(prompt.hits),
            "chunks_dropped": len(hits) - len(prompt.hits),
            "history": prompt.history,
            "params": params.request_fields(),
            "finish_reason": stream.finish_reason,
            "partial": error is not None, "error": error,
            "prompt_style": prompt.style,
            "loop_stop": ({"rule": guard.loop.rule, "why": guard.loop.describe(), "words": guard.loop.words}
                          if guard is not None and guard.loop is not None else None),
            "extractive": state["extractive_reason"] is not None,
            "extractive_reason": state["extractive_reason"],
            "citations_added": state["citations_added"],
            "threads": getattr(stream, "threads", None),
        }
        yield Done(meta)
        return
    raise NoModelAvailable(fallbacks, too_long=bool(attempts) and all(attempts))


__all__ = ["answer", "validate_request", "Sources", "Token", "Done", "Event", "Citations", "parse_citations", "build_prompt", "injection_flags",
           "NoModelAvailable", "PromptTooLong", "SYSTEM_PROMPT", "EMBEDDED_SYSTEM_PROMPT", "EMBEDDED_WARNING",
           "compact_prompt", "unusable"]
