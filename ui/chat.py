"""Chat tab: a streaming answer with numbered sources, the route/model/timings, and a stop button.

``respond`` is a plain generator over (chatbot messages, raw history, sources HTML, meta HTML), so the
unit tests drive it without a browser. Gradio cancels it when Stop is pressed; closing the generator
closes the model stream.
"""
from __future__ import annotations

import logging
import time

import gradio as gr

from .backend import event_kind, meta_dict
from .render import message_html, meta_html, safe_markdown, sources_html

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
MAX_TURNS = 20            # turns of history passed on to answer(); the prompt builder trims to the budget
YIELD_EVERY_S = 0.05      # at most ~20 UI updates a second while tokens stream
ROUTES = ("speed", "quality", "openusd")


def route_choices(catalog) -> list[tuple[str, str]]:
    """(label, value) pairs: the auto router, each route, then each catalog model as an override."""
    out = [("Auto (router decides)", "route:auto")]
    try:
        spec_routes = catalog.spec.routes
        for r in ROUTES:
            mid = spec_routes.get(r)
            out.append((f"Route: {r} ({mid})" if mid else f"Route: {r}", f"route:{r}"))
        for m in catalog.models:
            out.append((f"Model: {m.name}", f"model:{m.id}"))
    except Exception as e:  # a broken catalog must not take the tab down
        log.warning("catalog unavailable for the route list: %s", e)
        out += [(f"Route: {r}", f"route:{r}") for r in ROUTES]
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


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


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
    chat.append(_assistant("_Searching the collection…_"))
    yield chat, history, sources_html([], note="Searching…"), meta_html(None, status="Retrieving…"), ""

    if not collection:
        chat[-1] = _assistant("There is no collection to search yet. An admin can create one and upload "
                              "documents in the **Documents** tab.")
        yield chat, history, sources_html([]), meta_html(None), ""
        return
    try:
        res = backend.search(collection, question, mode=mode or None, k=int(k) if k else None)
    except Exception as e:
        log.exception("retrieval failed")
        chat[-1] = _assistant(safe_markdown(f"Search failed: {e}"))
        yield chat, history, sources_html([]), meta_html({"error": f"Retrieval failed: {e}"}), ""
        return

    route, model = parse_route(route_value)
    params = {}
    if temperature is not None:
        params["temperature"] = float(temperature)
    if max_tokens:
        params["max_tokens"] = int(max_tokens)
    hits = res.hits
    src_html = sources_html(hits)
    meta = {"retrieval_ms": res.retrieval_ms}
    chat[-1] = _assistant("_Thinking…_")
    yield chat, history, src_html, meta_html(meta, status="Generating…"), ""

    text = ""
    last = 0.0
    stream = None
    try:
        stream = backend.answer(question, hits, history=history[-2 * MAX_TURNS:], route=route, model=model,
                                params=params, query_vector=res.query_vector, retrieval_ms=res.retrieval_ms)
        for ev in stream:
            kind = event_kind(ev)
            if kind == "sources":
                hits = list(ev.hits)
                src_html = sources_html(hits)
                yield chat, history, src_html, meta_html(meta, status="Generating…"), ""
            elif kind == "token":
                text += ev.text
                now = time.monotonic()
                if now - last >= YIELD_EVERY_S:
                    last = now
                    chat[-1] = _assistant(safe_markdown(text))
                    yield chat, history, src_html, gr.skip(), ""
            elif kind == "done":
                meta = {**meta, **meta_dict(ev.meta)}
    except Exception as e:  # the model layer reports its own errors in Done; this is the last guard
        log.exception("answer failed")
        meta["error"] = f"The answer failed: {e}"
    finally:
        if stream is not None and hasattr(stream, "close"):
            stream.close()
    if not text and not meta.get("error"):
        text = "_(no answer)_"
    cited = _citations(text, hits)
    if cited is not None:
        used, unknown = cited
        src_html = sources_html(hits, cited=used)
        if unknown:
            meta["unknown_citations"] = unknown
    shown = safe_markdown(text)
    if meta.get("embedded"):
        shown += "\n\n_⚠ Answered by the embedded offline model (SmolLM2-135M): weak, check the sources._"
    chat[-1] = _assistant(shown)
    history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
    yield chat, history, src_html, meta_html(meta), ""


def _citations(text: str, hits) -> tuple[set[int], list[int]] | None:
    try:
        from rag.answer import parse_citations
    except ImportError:
        return None
    c = parse_citations(text, hits)
    return set(c.used), list(c.unknown)


def build(backend, collections_dd_holder: list) -> dict:
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
                    collection = gr.Dropdown(names, value=_default(names), label="Collection",
                                             elem_id="chat-collection", allow_custom_value=False)
                    mode = gr.Radio(["hybrid", "dense", "sparse"], value=settings.retrieval.mode,
                                    label="Retrieval mode")
                    k = gr.Slider(1, 20, value=min(settings.retrieval.k, 20), step=1, label="Top-k chunks")
                with gr.Row():
                    try:
                        choices = route_choices(backend.catalog)
                    except Exception as e:
                        log.warning("no catalog: %s", e)
                        choices = [("Auto (router decides)", "route:auto")]
                    route = gr.Dropdown(choices, value="route:auto", label="Route or model",
                                        elem_id="chat-route")
                    temperature = gr.Slider(0.0, 1.5, value=0.2, step=0.05, label="Temperature")
                    max_tokens = gr.Slider(16, 2048, value=256, step=16, label="Max tokens")
        with gr.Column(scale=2, min_width=320):
            meta = gr.HTML(meta_html(None), elem_id="chat-meta", js_on_load=None)
            sources = gr.HTML(sources_html([]), elem_id="chat-sources", js_on_load=None, max_height=560)
    history = gr.State([])
    collections_dd_holder.append(collection)

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
    return {"collection": collection}


def _default(names: list[str]) -> str | None:
    from .app import STARTER_COLLECTION

    if STARTER_COLLECTION in names:
        return STARTER_COLLECTION
    return names[0] if names else None
