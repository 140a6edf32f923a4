"""Chat tab: a streaming answer with numbered sources, the route/model/timings, and a stop button. Once the
answer is complete, the citation check (:mod:`rag.verify`) marks sentences its sources do not support and
statements with no citation (a highlight with a tooltip, and a legend under the answer).

``respond`` is a plain generator over (chatbot messages, raw history, sources HTML, meta HTML), so the
unit tests drive it without a browser. Gradio cancels it when Stop is pressed; closing the generator
closes the model stream.
"""
from __future__ import annotations

import logging
import time

import gradio as gr

from rag.catalog import ROUTES
from rag.engine import Done, Retrieved, Sources, Token, Verified
from rag.errors import InvalidInput, user_message

from .render import (
    message_html,
    meta_html,
    safe_markdown,
    sources_html,
    verified_markdown,
)

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
MAX_TURNS = 20            # turns of history passed on to answer(); the prompt builder trims to the budget
YIELD_EVERY_S = 0.05      # at most ~20 UI updates a second while tokens stream


def route_choices(catalog) -> list[tuple[str, str]]:
    """(label, value) pairs: the auto router, each route, then each catalog model as an override."""
    out = [("Auto (router decides)", "route:auto")]
    out += [(f"Route: {r} ({catalog.spec.routes[r]})", f"route:{r}") for r in ROUTES]
    out += [(f"Model: {m.name}", f"model:{m.id}") for m in catalog.models]
    return out


def parse_route(value: str | None) -> tuple[str, str | None]:
    """``route:auto`` → ("auto", None); ``model:ID`` → ("auto", "ID")."""
    value = value or "route:auto"
    kind, _, rest = value.partition(":")
    if kind == "model" and rest:
        return "auto", rest
    if kind == "route" and rest in ("auto", *ROUTES):
        return rest, None
    return "auto", None


def whole_number(value, name: str) -> int | None:
    """A slider value as an int (None when unset); forged values get a clear message."""
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a whole number, got {str(value)[:40]!r}.") from None


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _verifies(backend) -> bool:
    settings = getattr(backend, "settings", None)
    return bool(getattr(getattr(settings, "verify", None), "enabled", False))


def respond(backend, message, chat, history, collection, mode, k, route_value, temperature, max_tokens):
    """Generator: yields (chat, history, sources_html, meta_html, textbox value)."""
    chat = list(chat or [])
    history = list(history or [])
    question = (message or "").strip()
    if not question:
        yield chat, history, gr.skip(), gr.skip(), ""
        return
    if len(question) > MAX_QUESTION_CHARS:
        yield chat, history, gr.skip(), message_html(
            f"The question is {len(question):,} characters long; the limit is {MAX_QUESTION_CHARS:,}. "
            "Shorten it, or put the long text in a document and upload it.", "error"), message
        return
    chat.append({"role": "user", "content": safe_markdown(question)})
    if not collection:
        chat.append(_assistant("There is no collection to search yet. An admin can create one and upload "
                               "documents in the **Documents** tab."))
        yield chat, history, sources_html([]), meta_html(None), ""
        return
    chat.append(_assistant("_Searching the collection…_"))
    yield chat, history, sources_html([], note="Searching…"), meta_html(None, status="Retrieving…"), ""

    route, model = parse_route(route_value)
    hits, src_html, meta, text = [], sources_html([]), {}, ""
    last = 0.0
    stream = None
    try:
        params = {"temperature": temperature, "max_tokens": whole_number(max_tokens, "Max tokens")}
        stream = backend.ask(question, collection=collection, history=history[-2 * MAX_TURNS:], route=route,
                             model=model, params={p: v for p, v in params.items() if v is not None},
                             mode=mode or None, k=whole_number(k, "Top-k"))
        for ev in stream:
            if isinstance(ev, Retrieved):
                hits = ev.result.hits
                src_html = sources_html(hits)
                meta = {"retrieval_ms": ev.result.retrieval_ms}
                chat[-1] = _assistant("_Thinking…_")
                yield chat, history, src_html, meta_html(meta, status="Generating…"), ""
            elif isinstance(ev, Sources):
                hits = list(ev.hits)
                src_html = sources_html(hits)
                yield chat, history, src_html, meta_html(meta, status="Generating…"), ""
            elif isinstance(ev, Token):
                text += ev.text
                now = time.monotonic()
                if now - last >= YIELD_EVERY_S:
                    last = now
                    chat[-1] = _assistant(safe_markdown(text))
                    yield chat, history, src_html, gr.skip(), ""
            elif isinstance(ev, Done):
                meta = {**meta, **ev.meta}
                if _verifies(backend) and text:   # the whole answer now; its marks come with Verified
                    chat[-1] = _assistant(safe_markdown(text))
                    yield chat, history, src_html, meta_html(meta, status="Checking the citations…"), ""
            elif isinstance(ev, Verified):
                meta["verification"] = ev.report
    except Exception as e:  # domain errors carry their own message; anything else is logged with a reference
        meta["error"] = user_message(e, "The answer")
    finally:
        if stream is not None:
            stream.close()
    if not text and not meta.get("error"):
        text = "_(no answer)_"
    cites = meta.get("citations")
    report = meta.get("verification") or {}
    if cites:
        weak = {x["source"] for x in report.get("sources") or [] if not x.get("supported")}
        src_html = sources_html(hits, cited=set(cites["used"]), unsupported=weak)
        if cites["unknown"]:
            meta["unknown_citations"] = cites["unknown"]
    shown = verified_markdown(text, report) if text else safe_markdown(meta.get("error", ""))
    if meta.get("embedded"):
        shown += "\n\n_⚠ Answered by the embedded offline model (SmolLM2-135M): weak, check the sources._"
    chat[-1] = _assistant(shown)
    if text:
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
    yield chat, history, src_html, meta_html(meta), ""


def build(backend) -> dict:
    """Lay out the Chat tab inside the current Blocks context; return the components app.py wires up."""
    settings = backend.settings
    names = backend.collection_names()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            chatbot = gr.Chatbot(
                label="Conversation", height=540, elem_id="chatbot", sanitize_html=True, allow_tags=False,
                feedback_options=None, buttons=["copy"], group_consecutive_messages=False,
                placeholder="Ask a question about the documents in the selected collection. "
                            "The answer cites its sources as [1], [2], …; they are listed on the right.")
            with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                box = gr.Textbox(placeholder="Ask a question…", show_label=False, lines=1, max_lines=6,
                                 scale=8, elem_id="chat-input", autofocus=True, max_length=MAX_QUESTION_CHARS)
                send = gr.Button("Send", variant="primary", scale=1, min_width=72, elem_id="chat-send")
                stop = gr.Button("Stop", variant="stop", scale=1, min_width=72, elem_id="chat-stop")
                clear = gr.Button("Clear", scale=1, min_width=72, elem_id="chat-clear")
            with gr.Accordion("Settings", open=False, elem_id="chat-settings"):
                with gr.Row():
                    collection = gr.Dropdown(names, value=backend.default_collection(names), label="Collection",
                                             elem_id="chat-collection", allow_custom_value=False)
                    mode = gr.Radio(["hybrid", "dense", "sparse"], value=settings.retrieval.mode,
                                    label="Retrieval mode")
                    k = gr.Slider(1, 20, value=min(settings.retrieval.k, 20), step=1, label="Top-k chunks")
                with gr.Row():
                    route = gr.Dropdown(route_choices(backend.live_catalog()), value="route:auto", label="Route or model",
                                        elem_id="chat-route")
                    temperature = gr.Slider(0.0, 1.5, value=0.2, step=0.05, label="Temperature")
                    max_tokens = gr.Slider(16, 2048, value=256, step=16, label="Max tokens")
        with gr.Column(scale=2, min_width=320):
            meta = gr.HTML(meta_html(None), elem_id="chat-meta", js_on_load=None)
            sources = gr.HTML(sources_html([]), elem_id="chat-sources", js_on_load=None, max_height=560)
    history = gr.State([])

    inputs = [box, chatbot, history, collection, mode, k, route, temperature, max_tokens]
    outputs = [chatbot, history, sources, meta, box]

    def _respond(*args):
        yield from respond(backend, *args)

    ev_submit = box.submit(_respond, inputs, outputs, concurrency_limit=4, concurrency_id="answer",
                           show_progress="hidden")
    ev_click = send.click(_respond, inputs, outputs, concurrency_limit=4, concurrency_id="answer",
                          show_progress="hidden")
    stop.click(None, None, None, cancels=[ev_submit, ev_click])
    clear.click(lambda: ([], [], sources_html([]), meta_html(None), ""), None,
                [chatbot, history, sources, meta, box], cancels=[ev_submit, ev_click])
    return {"collection": collection, "route": route}

