"""The Gradio Blocks app: Chat, Documents, Compare, Evaluate and Admin tabs over one :class:`ui.backend.Backend`.

``build_app(settings)`` returns ``(blocks, launch_kwargs)``; ``api.app.create_app`` mounts it behind the sign-in
(:mod:`ui.signin`). The app is built once for everybody and holds no collection names: the page's load event
fills each collection list with what the signed-in user may read, shows who is signed in (with a Sign out
button), and hides the Admin tab from users who are not admins. Theme and CSS use system fonts only, so the page
loads with no network.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls

import gradio as gr  # noqa: E402

from . import admin, chat, compare, documents, evaluate  # noqa: E402
from .backend import STARTER_COLLECTION, Backend  # noqa: E402
from .session import readable_names, user_of  # noqa: E402

CSS = """
.gradio-container {max-width: 1400px !important; margin: 0 auto;}
#hr-title h1 {margin-bottom: 0; font-size: 1.6rem;}
#hr-title p {margin-top: .2rem; color: var(--body-text-color-subdued);}
.hr-sources ol {padding-left: 0; margin: 0; list-style: none;}
.hr-src {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .5rem .7rem; margin-bottom: .5rem;
  background: var(--background-fill-secondary);}
.hr-src-head {font-weight: 600; overflow-wrap: anywhere;}
.hr-num {color: var(--color-accent); margin-right: .25rem;}
.hr-src-cited {border-color: #76b900; box-shadow: inset 3px 0 0 #76b900;}
.hr-cited {font-size: .7em; font-weight: 600; color: #3d6600; background: #eef7dc; border-radius: 4px;
  padding: 0 .35rem; margin-left: .3rem; vertical-align: middle;}
.hr-where, .hr-title {font-weight: 400; color: var(--body-text-color-subdued); font-size: .9em;}
.hr-ranks {font-size: .8em; color: var(--body-text-color-subdued); margin: .15rem 0 .3rem;
  font-variant-numeric: tabular-nums;}
.hr-snippet summary {cursor: pointer; font-size: .9em; line-height: 1.4; overflow-wrap: anywhere;}
.hr-full {white-space: pre-wrap; font-size: .85em; margin-top: .4rem; max-height: 320px; overflow: auto;
  overflow-wrap: anywhere;}
.hr-empty, .hr-note {color: var(--body-text-color-subdued); font-size: .9em; padding: .4rem 0;}
.hr-meta {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .6rem .8rem; margin-bottom: .6rem;}
.hr-grid {display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; font-size: .9em;}
.hr-k {color: var(--body-text-color-subdued);}
.hr-v {font-variant-numeric: tabular-nums; overflow-wrap: anywhere;}
.hr-reason {font-size: .85em; margin-top: .4rem; overflow-wrap: anywhere;}
.hr-warn {background: #fff4e5; color: #7a4100; border: 1px solid #f5c27a; border-radius: 6px;
  padding: .45rem .6rem; margin-bottom: .5rem; font-size: .9em;}
.hr-error, .hr-msg-error {background: #fdecec; color: #8a1c1c; border: 1px solid #f1a7a7; border-radius: 6px;
  padding: .45rem .6rem; margin-bottom: .4rem;}
.hr-status {font-size: .9em; color: var(--body-text-color-subdued); margin-bottom: .3rem;}
.hr-msg {border-radius: 6px; padding: .45rem .6rem; margin: .2rem 0; font-size: .92em; overflow-wrap: anywhere;}
.hr-msg-ok {background: #ecf8ee; color: #1d5e2a; border: 1px solid #9fd8aa;}
.hr-msg-warn {background: #fff4e5; color: #7a4100; border: 1px solid #f5c27a;}
.hr-msg-info {background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary);}
.hr-hint, .hr-hint p {font-size: .85em !important; color: var(--body-text-color-subdued);}
.hr-cmp-col {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: .6rem .8rem !important;}
.hr-cmp-answer {min-height: 160px;}
.hr-cmp-stats, .hr-cmp-stats p {font-size: .85em !important; color: var(--body-text-color-subdued);}
.hr-chart {max-width: 980px;}
.hr-chart .hr-axis {font-size: 11px; fill: #777;}
.hr-chart .hr-label {font-size: 12px; fill: currentColor;}
.hr-chart .hr-val {font-size: 12px; fill: currentColor; font-variant-numeric: tabular-nums;}
.hr-chart .hr-ref {stroke: #bbb; stroke-dasharray: 3 3;}
.hr-chart .hr-ci {stroke: #76b900; stroke-width: 3; stroke-linecap: round; opacity: .55;}
.hr-chart .hr-dot {fill: #4a7a00;}
.hr-bar {align-items: flex-end !important;}
.hr-bar > button {align-self: flex-end; margin-bottom: 2px;}
#chat-stop, #cmp-stop, #delete-doc, #delete-collection {color: #b42318 !important; border-color: #f1a7a7 !important;}
#hr-header {align-items: center;}
#hr-user {text-align: right; font-size: .9em; color: var(--body-text-color-subdued);}
#hr-signout {max-width: 8rem;}
footer {display: none !important;}
"""

SIGN_OUT_JS = """() => { fetch('logout', {method: 'POST', credentials: 'same-origin'})
  .finally(() => { window.location.href = 'login?signed_out=1'; }); }"""


def theme():
    fonts = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial",
             "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(primary_hue="green", secondary_hue="slate", neutral_hue="slate", font=fonts,
                          font_mono=mono)


QUEUE_POLL_S = 0.05       # Gradio's queue polls every 1 ms when idle (about 5% of a core here); 50 ms: <1%
PROGRESS_POLL_S = 0.2      # and looks for progress updates every 10 ms


def quiet_queue(demo) -> None:
    """Slow down the Gradio queue's idle polling, so an idle server is idle. Adds at most 50 ms before an
    event starts, next to answers that take hundreds of milliseconds or more."""
    q = getattr(demo, "_queue", None)
    if q is not None and hasattr(q, "sleep_when_free"):
        q.sleep_when_free = QUEUE_POLL_S
        q.progress_update_sleep_when_free = PROGRESS_POLL_S


def _chain(ev, step):
    """``ev.then(fn, inputs, outputs)`` for a tab's load step: (fn, outputs) or (fn, inputs, outputs)."""
    fn, *io = step
    inputs, outputs = (None, io[0]) if len(io) == 1 else io
    return ev.then(fn, inputs, outputs, api_visibility="private")


def user_line(user) -> str:
    from .render import esc

    return f"Signed in as <b>{esc(user.name)}</b> ({esc(user.role)})"


def build_app(settings, *, backend: Backend | None = None):
    """The Blocks app and the keyword arguments ``launch()`` needs (theme, CSS, limits, blocked paths)."""
    backend = backend or Backend(settings)
    with gr.Blocks(title="hybrid-rag", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        with gr.Row(equal_height=False, elem_id="hr-header"):
            gr.Markdown("# hybrid-rag\nAsk questions about your documents; every answer cites the passages it "
                        "was given. Hybrid retrieval (FAISS + BM25), routed to NVIDIA NIM endpoints or the embedded "
                        "offline model.", elem_id="hr-title")
            with gr.Column(scale=0, min_width=220):
                who = gr.HTML("", elem_id="hr-user", js_on_load=None)
                signout = gr.Button("Sign out", size="sm", elem_id="hr-signout")
        signout.click(None, None, None, js=SIGN_OUT_JS)
        with gr.Tabs(elem_id="hr-tabs"):
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                chat_parts = chat.build(backend)
            with gr.Tab("Documents", id="documents", elem_id="tab-documents"):
                doc_parts = documents.build(backend)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                cmp_parts = compare.build(backend)
            with gr.Tab("Evaluate", id="evaluate", elem_id="tab-evaluate"):
                eval_parts = evaluate.build(backend)
            with gr.Tab("Admin", id="admin", elem_id="tab-admin", visible=False) as admin_tab:
                admin_parts = admin.build(backend)

        others = [chat_parts["collection"], cmp_parts["collection"], eval_parts["collection"]]
        all_dd = [*others, doc_parts["collection"]]

        def sync(request: gr.Request, *current):
            """Each collection list: what this user may read now (nothing when the session is gone)."""
            try:
                names = readable_names(backend, user_of(backend, request))
            except Exception:  # signed out meanwhile: the next request goes to the sign-in page
                names = []
            return [gr.update(choices=names, value=v if v in names else backend.default_collection(names))
                    for v in current]

        for ev in doc_parts["changed"]:
            ev.then(sync, others, others, api_visibility="private")

        # a page load sees the user's collections and the votes as they are now, not as they were at start-up
        def on_load(request: gr.Request, *current):
            try:
                user = user_of(backend, request)
            except Exception as e:
                from rag.errors import user_message

                from .render import esc

                return [esc(user_message(e, "Checking the session")), gr.update(visible=False),
                        *[gr.update(choices=[], value=None) for _ in current]]
            return [user_line(user), gr.update(visible=user.is_admin), *sync(request, *current)]

        def models_now(route, picks):
            """The model lists as they are now: a local NIM found by GET /v1/models adds its models."""
            routes = chat.route_choices(backend.live_catalog())
            choices, _ = compare.model_choices(backend)
            keys = {k for _, k in choices}
            return (gr.update(choices=routes, value=route if route in {v for _, v in routes} else "route:auto"),
                    gr.update(choices=choices, value=[p for p in picks or [] if p in keys]))

        admin_fn, admin_outputs = admin_parts["load"]

        def admin_load(request: gr.Request):
            try:
                if not user_of(backend, request).is_admin:
                    return [gr.skip()] * len(admin_outputs)
            except Exception:
                return [gr.skip()] * len(admin_outputs)
            return admin_fn(request)

        for ev in doc_parts["changed"]:  # a collection made or deleted shows in the Admin tab's lists too
            ev.then(admin_load, None, admin_outputs, api_visibility="private")

        docs_fn, docs_outputs = doc_parts["docs_views"]
        model_dd = [chat_parts["route"], cmp_parts["models"]]
        ev = demo.load(on_load, all_dd, [who, admin_tab, *all_dd], api_visibility="private")
        ev = ev.then(docs_fn, doc_parts["collection"], docs_outputs, api_visibility="private")
        ev = _chain(ev, doc_parts["whoami"])
        ev = ev.then(admin_load, None, admin_outputs, api_visibility="private")
        for parts in (chat_parts, cmp_parts, eval_parts):  # the tabs' own load steps (conversation list, leaderboard, ...)
            steps = [parts[k] for k in ("conversations", "leaderboard") if k in parts] + list(parts.get("on_load", []))
            for step in steps:
                ev = _chain(ev, step)
        ev.then(models_now, model_dd, model_dd, api_visibility="private")
    demo.queue(default_concurrency_limit=2, max_size=64)
    quiet_queue(demo)
    launch_kwargs = {
        "theme": theme(),
        "css": CSS,
        "max_file_size": settings.limits.max_file_bytes,
        "blocked_paths": [str(settings.data_dir)],
        "allowed_paths": [],
        "show_error": False,
        "ssr_mode": False,
    }
    return demo, launch_kwargs


__all__ = ["build_app", "STARTER_COLLECTION", "CSS"]
