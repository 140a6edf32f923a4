"""Chat tab: a streaming answer with numbered sources, the route/model/timings, and a stop button. Once the
answer is complete, the citation check (:mod:`rag.verify`) marks sentences its sources do not support and
statements with no citation (a highlight with a tooltip, and a legend under the answer).

Each signed-in user's conversations are saved as they chat (:mod:`rag.state`: every completed turn, with the
answer's sources and metadata): a list beside the chat (newest first) resumes any of them, renames, deletes
(after a confirmation) or exports one as Markdown. A resumed conversation's turns become the history again,
so follow-up questions go through the same token budget as before (``Engine.ask(history=...)``).

Every handler learns the user from ``gr.Request`` (:func:`ui.session.user_of`) and checks the right to read
the collection on the server (``State.require_read``) before anything is retrieved; the page is not trusted.

``respond`` is a plain generator over (chatbot messages, raw history, sources HTML, meta HTML, textbox,
conversation id, conversation list), so the unit tests drive it without a browser. Gradio cancels it when
Stop is pressed; closing the generator closes the model stream (a stopped turn is neither kept in the
history nor saved).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

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
from .session import user_of

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
MAX_TURNS = 20            # turns of history passed on to answer(); the prompt builder trims to the budget
YIELD_EVERY_S = 0.05      # at most ~20 UI updates a second while tokens stream
TITLE_CHARS = 80          # a new conversation is titled with the start of its first question
EXPORT_KEEP_S = 3600      # exported Markdown files are removed from the temp folder after an hour
EMBEDDED_NOTE = "\n\n_⚠ Answered by the embedded offline model (SmolLM2-135M): weak, check the sources._"


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


# ------------------------------------------------------------------------------------------------
# what a saved answer keeps, and how it is shown again
# ------------------------------------------------------------------------------------------------

SAVED_META = ("route", "model", "model_name", "endpoint", "reason", "retrieval_ms", "ttft_ms", "tokens_per_s",
              "prompt_tokens", "completion_tokens", "embedded", "warning", "error", "partial", "citations",
              "unknown_citations", "verification", "fallbacks", "rerank", "injection_flags")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def saved_meta(meta: dict, *, collection: str, mode, k) -> dict:
    """The answer's metadata as stored with it: what the meta panel shows, plus the settings it was asked with."""
    out = {key: meta[key] for key in SAVED_META if meta.get(key) not in (None, "", [], {})}
    if isinstance(out.get("endpoint"), dict):
        out["endpoint"] = out["endpoint"].get("name") or out["endpoint"].get("base_url")
    out.update(collection=collection, mode=mode or None, k=k)
    return _jsonable(out)


def source_dicts(hits, *, cited=(), unsupported=()) -> list[dict]:
    """The passages the model was given, numbered as the answer cites them, as plain dicts for the state
    database (document name, page, heading, the chunk's text, its ranks, and whether the answer cited it)."""
    out = []
    for i, h in enumerate(hits or [], 1):
        c = h.chunk
        out.append({
            "n": i, "document": c.source, "doc_id": c.doc_id, "chunk_id": getattr(c, "id", ""),
            "page": c.page, "heading": c.heading, "title": getattr(c, "title", "") or "", "text": c.text,
            "score": float(h.score), "fused_rank": h.fused_rank, "dense_rank": h.dense_rank,
            "sparse_rank": h.sparse_rank, "rerank_rank": getattr(h, "rerank_rank", None),
            "rerank_score": getattr(h, "rerank_score", None), "cited": i in cited, "unsupported": i in unsupported})
    return _jsonable(out)


def stored_hits(sources) -> list[SimpleNamespace]:
    """Saved source dicts back as hit-like objects for :func:`ui.render.sources_html`."""
    hits = []
    for s in sources or []:
        if not isinstance(s, dict):
            continue
        chunk = SimpleNamespace(id=s.get("chunk_id") or "", doc_id=s.get("doc_id") or "",
                                source=s.get("document") or s.get("source") or "", text=s.get("text") or "",
                                page=s.get("page"), heading=s.get("heading"), title=s.get("title") or "")
        try:
            score = float(s.get("score") or 0.0)
        except (TypeError, ValueError):
            score = 0.0
        hits.append(SimpleNamespace(chunk=chunk, score=score, fused_rank=s.get("fused_rank"),
                                    dense_rank=s.get("dense_rank"), sparse_rank=s.get("sparse_rank"),
                                    rerank_rank=s.get("rerank_rank"), rerank_score=s.get("rerank_score")))
    return hits


def title_for(question: str) -> str:
    """A new conversation's title: the start of its first question, on one line."""
    flat = " ".join(str(question).split())
    return flat if len(flat) <= TITLE_CHARS else flat[: TITLE_CHARS - 1].rstrip() + "…"


def _when(ts) -> str:
    try:
        if isinstance(ts, _dt.datetime):
            d = ts
        elif isinstance(ts, (int, float)):
            d = _dt.datetime.fromtimestamp(ts)
        else:
            d = _dt.datetime.fromisoformat(str(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    if d.tzinfo is not None:
        d = d.astimezone()
    return d.strftime("%d %b %H:%M")


def list_label(conv: dict) -> str:
    """A conversation in the list: its title and when it last changed (shown as text, never as markup)."""
    title = " ".join(str(conv.get("title") or "Untitled").split()) or "Untitled"
    when = _when(conv.get("updated_at"))
    return f"{title} · {when}" if when else title


def conversation_choices(backend, user) -> list[tuple[str, int]]:
    """(label, id) for each of the user's conversations, newest first."""
    return [(list_label(c), int(c["id"])) for c in backend.state.list_conversations(user)]


def _listing(backend, user, value=None):
    try:
        choices = conversation_choices(backend, user)
    except Exception as e:  # the chat goes on; the list says nothing new
        log.warning("cannot list conversations: %s", user_message(e, "Listing conversations"))
        return gr.skip()
    return gr.update(choices=choices, value=value if value in {v for _, v in choices} else None)


def load_conversations(backend, request=None):
    """The conversation list for the signed-in user (on page load): newest first, none selected."""
    try:
        user = user_of(backend, request)
    except Exception:
        return gr.update(choices=[], value=None)
    return _listing(backend, user)


def save_turn(backend, user, conv, *, collection: str, question: str, answer: str, sources: list[dict],
              meta: dict) -> tuple[int, bool]:
    """Store one completed turn; a conversation is created by its first one (titled with the question).
    Returns the conversation id and whether it was created here (also when ``conv`` was deleted meanwhile, e.g.
    from another tab)."""
    state = backend.state
    created = False
    if conv not in (None, ""):
        try:
            conv = int(conv)
            state.append_message(user, conv, "user", question, meta={"collection": collection})
        except Exception as e:  # noqa: BLE001 - gone or not this user's: the turn starts a new conversation
            log.info("conversation %r not appendable (%s); starting a new one", conv, type(e).__name__)
            conv = None
    if conv in (None, ""):
        conv = int(state.create_conversation(user, title_for(question), collection))
        created = True
        state.append_message(user, conv, "user", question, meta={"collection": collection})
    state.append_message(user, conv, "assistant", answer, sources=sources, meta=meta)
    return conv, created


# ------------------------------------------------------------------------------------------------
# handlers
# ------------------------------------------------------------------------------------------------

def respond(backend, message, chat, history, collection, mode, k, route_value, temperature, max_tokens,
            conv=None, request=None):
    """Generator: yields (chat, history, sources_html, meta_html, textbox value, conversation id,
    conversation list, title box)."""
    chat = list(chat or [])
    history = list(history or [])
    skip = gr.skip()
    question = (message or "").strip()
    if not question:
        yield chat, history, skip, skip, "", skip, skip, skip
        return
    if len(question) > MAX_QUESTION_CHARS:
        yield chat, history, skip, message_html(
            f"The question is {len(question):,} characters long; the limit is {MAX_QUESTION_CHARS:,}. "
            "Shorten it, or put the long text in a document and upload it.", "error"), message, skip, skip, skip
        return
    chat.append({"role": "user", "content": safe_markdown(question)})
    try:
        user = user_of(backend, request)
    except Exception as e:
        said = user_message(e, "The answer")
        chat.append(_assistant(safe_markdown(said)))
        yield chat, history, sources_html([]), meta_html({"error": said}), message, skip, skip, skip
        return
    if not collection:
        chat.append(_assistant("There is no collection to search yet. An admin can create one and upload "
                               "documents in the **Documents** tab."))
        yield chat, history, sources_html([]), meta_html(None), "", skip, skip, skip
        return
    chat.append(_assistant("_Searching the collection…_"))
    yield chat, history, sources_html([], note="Searching…"), meta_html(None, status="Retrieving…"), "", skip, \
        skip, skip

    route, model = parse_route(route_value)
    hits, src_html, meta, text = [], sources_html([]), {}, ""
    last = 0.0
    stream = None
    try:
        backend.state.require_read(user, collection)  # on the server, before anything is retrieved
        params = {"temperature": temperature, "max_tokens": whole_number(max_tokens, "Max tokens")}
        k = whole_number(k, "Top-k")
        stream = backend.ask(question, collection=collection, history=history[-2 * MAX_TURNS:], route=route,
                             model=model, params={p: v for p, v in params.items() if v is not None},
                             mode=mode or None, k=k)
        for ev in stream:
            if isinstance(ev, Retrieved):
                hits = ev.result.hits
                src_html = sources_html(hits)
                meta = {"retrieval_ms": ev.result.retrieval_ms}
                chat[-1] = _assistant("_Thinking…_")
                yield chat, history, src_html, meta_html(meta, status="Generating…"), "", skip, skip, skip
            elif isinstance(ev, Sources):
                hits = list(ev.hits)
                src_html = sources_html(hits)
                yield chat, history, src_html, meta_html(meta, status="Generating…"), "", skip, skip, skip
            elif isinstance(ev, Token):
                text += ev.text
                now = time.monotonic()
                if now - last >= YIELD_EVERY_S:
                    last = now
                    chat[-1] = _assistant(safe_markdown(text))
                    yield chat, history, src_html, skip, "", skip, skip, skip
            elif isinstance(ev, Done):
                meta = {**meta, **ev.meta}
                if _verifies(backend) and text:   # the whole answer now; its marks come with Verified
                    chat[-1] = _assistant(safe_markdown(text))
                    yield chat, history, src_html, meta_html(meta, status="Checking the citations…"), "", skip, \
                        skip, skip
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
    cited, weak = set(), set()
    if cites:
        cited = set(cites["used"])
        weak = {x["source"] for x in report.get("sources") or [] if not x.get("supported")}
        src_html = sources_html(hits, cited=cited, unsupported=weak)
        if cites["unknown"]:
            meta["unknown_citations"] = cites["unknown"]
    shown = verified_markdown(text, report) if text else safe_markdown(meta.get("error", ""))
    if meta.get("embedded"):
        shown += EMBEDDED_NOTE
    chat[-1] = _assistant(shown)
    listing = title = skip
    note = ""
    if text:
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
        try:
            conv, created = save_turn(backend, user, conv, collection=collection, question=question, answer=text,
                             sources=source_dicts(hits, cited=cited, unsupported=weak),
                             meta=saved_meta(meta, collection=collection, mode=mode, k=k))
        except Exception as e:  # the answer stands; it says it was not saved
            note = message_html(f"This answer was not saved: {user_message(e, 'Saving the conversation')}", "warn")
        else:
            listing = _listing(backend, user, conv)
            if created:
                title = title_for(question)
    yield chat, history, src_html, note + meta_html(meta), "", conv, listing, title


def _readable(backend, user, collection) -> bool:
    try:
        return bool(collection) and backend.state.can_read(user, collection)
    except Exception:  # noqa: BLE001 - an unknown or odd name: not readable
        return False


def open_conversation(backend, conv_id, request=None):
    """Resume a saved conversation. Returns (chat, history, sources HTML, meta HTML, conversation id, title,
    collection drop-down, message, export file, delete confirmation).

    The turns become the history again, so the next question goes through the same token budget. The last
    answer's sources show only while the user may still read the collection they came from."""
    skip = gr.skip()
    try:
        user = user_of(backend, request)
        if conv_id in (None, ""):
            raise InvalidInput("Choose a conversation in the list.")
        conv = backend.state.get_conversation(user, int(conv_id))
    except Exception as e:
        msg = message_html(user_message(e, "Opening the conversation"), "error")
        return skip, skip, skip, skip, skip, skip, skip, msg, skip, skip
    collection = conv.get("collection") or ""
    chat, history = [], []
    last_sources, last_meta, last_from = [], None, collection
    for m in conv.get("messages") or []:
        role, content = m.get("role"), str(m.get("content") or "")
        meta = m.get("meta") or {}
        if role == "user":
            chat.append({"role": "user", "content": safe_markdown(content)})
            history.append({"role": "user", "content": content})
        elif role == "assistant":
            shown = verified_markdown(content, meta.get("verification"))
            if meta.get("embedded"):
                shown += EMBEDDED_NOTE
            chat.append(_assistant(shown))
            history.append({"role": "assistant", "content": content})
            last_sources, last_meta, last_from = m.get("sources") or [], meta, meta.get("collection") or collection
    if not last_sources:
        src = sources_html([])
    elif _readable(backend, user, last_from):
        hits = stored_hits(last_sources)
        src = sources_html(hits, note="The sources of the last answer.",
                           cited={s.get("n") for s in last_sources if isinstance(s, dict) and s.get("cited")},
                           unsupported={s.get("n") for s in last_sources
                                        if isinstance(s, dict) and s.get("unsupported")})
    else:
        src = sources_html([], note=f"The sources are hidden: you may no longer read the collection "
                                    f"{last_from!r}. Ask its owner or an admin for access.")
    names = backend.collection_names()
    dropdown = gr.update(value=collection) if collection in names and _readable(backend, user, collection) else skip
    n = sum(1 for m in conv.get("messages") or [] if m.get("role") == "assistant")
    msg = message_html(f"Resumed “{title_for(conv.get('title') or '')}”: {n} answer{'s' if n != 1 else ''}. "
                       "Ask a follow-up question below.", "info")
    return (chat, history, src, meta_html(last_meta), int(conv["id"]), str(conv.get("title") or ""), dropdown, msg,
            gr.update(value=None, visible=False), False)


def new_conversation(backend, request=None):
    """An empty chat; the next answered question starts a new saved conversation. Returns (chat, history,
    sources, meta, textbox, conversation id, list, title, message, export file, delete confirmation)."""
    try:
        listing = _listing(backend, user_of(backend, request))
    except Exception:
        listing = gr.update(value=None)
    return ([], [], sources_html([]), meta_html(None), "", None, listing, "", "",
            gr.update(value=None, visible=False), False)


def rename_conversation(backend, conv_id, title, request=None):
    """Returns (message, conversation list)."""
    title = " ".join(str(title or "").split())
    try:
        user = user_of(backend, request)
        if conv_id in (None, ""):
            raise InvalidInput("Open a conversation (or ask a question) first, then rename it.")
        if not title:
            raise InvalidInput("Type a title first.")
        backend.state.rename_conversation(user, int(conv_id), title)
    except Exception as e:
        return message_html(user_message(e, "Renaming the conversation"), "error"), gr.skip()
    return message_html(f"Renamed to “{title}”.", "ok"), _listing(backend, user, int(conv_id))


def delete_conversation(backend, conv_id, confirmed, request=None):
    """Delete the open conversation once the confirmation is ticked; then an empty chat. Returns the same values
    as :func:`new_conversation`."""
    skip = gr.skip()
    try:
        user = user_of(backend, request)
        if conv_id in (None, ""):
            raise InvalidInput("Open the conversation to delete first.")
        if not confirmed:
            raise InvalidInput("Tick 'Yes, delete this conversation' to confirm.")
        backend.state.delete_conversation(user, int(conv_id))
    except Exception as e:
        msg = message_html(user_message(e, "Deleting the conversation"), "error")
        return skip, skip, skip, skip, skip, skip, skip, skip, msg, skip, skip
    out = list(new_conversation(backend, request))
    out[8] = message_html("The conversation was deleted.", "ok")
    return tuple(out)


def _export_dir() -> Path:
    root = Path(tempfile.gettempdir()) / "hybrid-rag" / "conversations"
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - EXPORT_KEEP_S
    for d in root.iterdir():  # old exports (Gradio has served its own copy by then)
        try:
            if d.is_dir() and d.stat().st_mtime < cutoff:
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=root))


def export_conversation(backend, conv_id, request=None):
    """The open conversation as a Markdown file with its sources. Returns (file, message)."""
    from rag.state import AccessDenied

    try:
        user = user_of(backend, request)
        if conv_id in (None, ""):
            raise InvalidInput("Open a conversation (or ask a question) first, then export it.")
        conv = backend.state.get_conversation(user, int(conv_id))
        used = {conv.get("collection") or ""} | {(m.get("meta") or {}).get("collection") or ""
                                                 for m in conv.get("messages") or [] if m.get("sources")}
        for c in sorted(used - {""}):
            if not _readable(backend, user, c):  # the export carries the passages' text
                raise AccessDenied(f"You may no longer read the collection {c!r} this conversation's sources come "
                                   "from, so it cannot be exported with them. Ask its owner or an admin for access.")
        text = backend.state.export_markdown(user, int(conv_id))
    except Exception as e:
        return gr.update(value=None, visible=False), message_html(user_message(e, "Exporting the conversation"),
                                                                  "error")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(conv.get("title") or "")).strip("-.")[:60] or "conversation"
    path = _export_dir() / f"{slug}.md"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    return gr.update(value=str(path), visible=True), message_html("Exported: download the file below.", "ok")


# ------------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------------

def build(backend) -> dict:
    """Lay out the Chat tab inside the current Blocks context; return the components app.py wires up.

    ``"conversations"`` is ``(fn, outputs)`` for the page's load event: it fills the conversation list for the
    signed-in user (the list is built empty: who is asking is known only per request)."""
    settings = backend.settings
    names: list[str] = []  # filled per user on page load: no collection name reaches another user's page config
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=230, elem_id="conv-panel"):
            new = gr.Button("New conversation", size="sm", elem_id="conv-new")
            conv_list = gr.Radio([], value=None, label="Your conversations (newest first)", elem_id="conv-list",
                                 info="Saved as you chat. Pick one to resume it.")
            title = gr.Textbox(label="Title", max_lines=1, max_length=200, elem_id="conv-title",
                               placeholder="Open a conversation to rename it")
            with gr.Row():
                rename = gr.Button("Rename", size="sm", elem_id="conv-rename", min_width=60)
                export = gr.Button("Export .md", size="sm", elem_id="conv-export", min_width=60)
            export_file = gr.File(label="Markdown export", visible=False, interactive=False, elem_id="conv-file")
            confirm = gr.Checkbox(False, label="Yes, delete this conversation", elem_id="conv-delete-confirm")
            delete = gr.Button("Delete conversation", size="sm", variant="stop", elem_id="conv-delete")
            conv_msg = gr.HTML("", elem_id="conv-msg", js_on_load=None)
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
    conv = gr.State(None)        # the open conversation's id (server side only)

    inputs = [box, chatbot, history, collection, mode, k, route, temperature, max_tokens, conv]
    outputs = [chatbot, history, sources, meta, box, conv, conv_list, title]

    def _respond(message, chat_value, hist, coll, md, kk, rv, temp, mt, cid, request: gr.Request):
        yield from respond(backend, message, chat_value, hist, coll, md, kk, rv, temp, mt, conv=cid,
                           request=request)

    ev_submit = box.submit(_respond, inputs, outputs, concurrency_limit=4, concurrency_id="answer",
                           show_progress="hidden")
    ev_click = send.click(_respond, inputs, outputs, concurrency_limit=4, concurrency_id="answer",
                          show_progress="hidden")
    answering = [ev_submit, ev_click]
    stop.click(None, None, None, cancels=answering)

    fresh = [chatbot, history, sources, meta, box, conv, conv_list, title, conv_msg, export_file, confirm]

    def _new(request: gr.Request):
        return new_conversation(backend, request)

    def _open(cid, request: gr.Request):
        return open_conversation(backend, cid, request)

    def _rename(cid, new_title, request: gr.Request):
        return rename_conversation(backend, cid, new_title, request)

    def _delete(cid, confirmed, request: gr.Request):
        return delete_conversation(backend, cid, confirmed, request)

    def _export(cid, request: gr.Request):
        return export_conversation(backend, cid, request)

    def _load(request: gr.Request):
        return load_conversations(backend, request)

    clear.click(_new, None, fresh, cancels=answering, api_visibility="private")
    new.click(_new, None, fresh, cancels=answering, api_visibility="private")
    chatbot.clear(_new, None, fresh, cancels=answering, api_visibility="private")  # its own trash icon
    conv_list.input(_open, [conv_list], [chatbot, history, sources, meta, conv, title, collection, conv_msg,
                                         export_file, confirm], cancels=answering, api_visibility="private")
    rename.click(_rename, [conv, title], [conv_msg, conv_list], api_visibility="private")
    delete.click(_delete, [conv, confirm], fresh, cancels=answering, api_visibility="private")
    export.click(_export, [conv], [export_file, conv_msg], api_visibility="private")
    return {"collection": collection, "route": route, "conversations": (_load, [conv_list])}
