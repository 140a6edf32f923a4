"""Compare tab: one question, one retrieval, the same chunks sent to 2-4 models whose answers stream side by
side; blind voting into the arena, and the leaderboard with a chart and a CSV export.

Every handler learns the signed-in user from ``gr.Request`` (:func:`ui.session.user_of`): the comparison checks
the right to read the collection on the server before retrieving, and a vote records its voter (only the user who
ran the comparison may vote on it). The leaderboard can be narrowed to one collection's votes.

A *contestant* is a catalog model with optional sampling overrides. Offline, the embedded model is set
against itself with livelier sampling (``<id>@creative``), so the arena works with no endpoint at all.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from rag.answer import Done, Token
from rag.errors import user_message

from .chat import whole_number
from .render import esc, leaderboard_svg, message_html, safe_markdown, sources_html
from .session import readable_names, user_of

log = logging.getLogger(__name__)

LABELS = "ABCD"
MAX_COLUMNS = 4
YIELD_EVERY_S = 0.1
VOTES = [("A", "A is better"), ("B", "B is better"), ("C", "C is best"), ("D", "D is best"),
         ("tie", "Tie"), ("bad", "Both bad")]
CREATIVE = {"temperature": 0.9, "top_p": 0.95}
ALL = "*"                 # the leaderboard filter's "all collections" (not a valid collection name)
LEADERBOARD_COLUMNS = ["Rank", "Model", "Score", "95% CI", "Win rate", "Battles", "W / T / L", "All bad"]


@dataclass(frozen=True)
class Contestant:
    key: str                  # the name votes are stored under
    label: str                # shown once names are revealed
    model: str                # catalog model id
    params: dict = field(default_factory=dict, hash=False)
    embedded: bool = False


def needs(catalog, model) -> str | None:
    """What a model needs before it can answer here (a key variable), or None when it may answer."""
    missing = []
    for ep_name in catalog.endpoints_for(model):
        var = catalog.key_missing(catalog.endpoint(ep_name))
        if var is None:
            return None  # an endpoint with what it needs (or one that needs nothing)
        missing.append(var)
    return " or ".join(dict.fromkeys(missing)) or "an endpoint"


def contestants(catalog) -> list[Contestant]:
    """Every catalog model, plus the embedded model with creative sampling as a second offline entry."""
    out = []
    for m in catalog.models:
        out.append(Contestant(m.id, m.name, m.id, {}, bool(m.embedded)))
        if m.embedded:
            detail = ", ".join(f"{k} {v}" for k, v in CREATIVE.items())
            out.append(Contestant(f"{m.id}@creative", f"{m.name} · creative sampling ({detail})", m.id,
                                  dict(CREATIVE), True))
    return out


def default_selection(options: list[Contestant]) -> list[str]:
    """Offline default: the embedded model and its creative twin."""
    emb = [c.key for c in options if c.embedded]
    return emb[:2] if len(emb) >= 2 else [c.key for c in options[:2]]


@dataclass
class Column:
    contestant: Contestant
    text: str = ""
    meta: dict = field(default_factory=dict)
    done: bool = False
    error: str | None = None

    def fallback(self) -> str | None:
        """Why this column's answer did not come from the requested model, if it did not."""
        m = self.meta
        served = m.get("model")
        if m.get("embedded") and not self.contestant.embedded:
            return f"answered by the embedded fallback model instead of {self.contestant.label}"
        if served and served not in (self.contestant.model,) and not _same_model(served, self.contestant):
            return f"answered by {served} instead of {self.contestant.label}"
        return None


def _same_model(served: str, c: Contestant) -> bool:
    return served.split("@")[0].lower() == c.model.lower()


def header_md(i: int, col: Column | None, blind: bool, revealed: bool) -> str:
    if col is None:
        return ""
    if blind and not revealed:
        return f"### Model {LABELS[i]}"
    return f"### {LABELS[i]} · {esc(col.contestant.label)}"


def stats_md(col: Column, blind: bool, revealed: bool) -> str:
    m = col.meta
    bits = []
    if m.get("ttft_ms") is not None:
        bits.append(f"TTFT **{m['ttft_ms']:,.0f} ms**")
    if m.get("tokens_per_s") is not None:
        bits.append(f"**{m['tokens_per_s']:.1f}** tokens/s")
    if m.get("completion_tokens") is not None:
        bits.append(f"{m['completion_tokens']} tokens")
    if not col.done:
        bits.append("streaming…" if col.text else "waiting…")
    if not blind or revealed:
        ep = m.get("endpoint")
        if isinstance(ep, dict):
            ep = ep.get("name")
        if ep:
            bits.append(f"endpoint {esc(ep)}")
        fb = col.fallback() if col.done else None
        if fb:
            bits.append(f"⚠ {esc(fb)}")
    if col.error:
        bits.append(f"⚠ {esc(col.error)}")
    if m.get("partial"):
        bits.append("cut off")
    return " · ".join(bits) or "&nbsp;"


def _outputs(state: dict, cols: list[Column], sources: str | None, status: str | None, final: bool):
    """Values for: 4 × (column, header, answer, stats), sources, status, 6 vote buttons, state."""
    blind, revealed = state.get("blind", True), state.get("voted", False)
    out = []
    for i in range(MAX_COLUMNS):
        col = cols[i] if i < len(cols) else None
        out.append(gr.update(visible=col is not None))
        out.append(header_md(i, col, blind, revealed))
        out.append(safe_markdown(col.text) if col else "")
        out.append(stats_md(col, blind, revealed) if col else "")
    out.append(gr.skip() if sources is None else sources)
    out.append(gr.skip() if status is None else status)
    n = len(cols)
    can_vote = final and n >= 2 and not revealed
    for key, _label in VOTES:
        visible = key in ("tie", "bad") or (key in LABELS and LABELS.index(key) < max(n, 2))
        out.append(gr.update(visible=visible, interactive=can_vote))
    out.append(state)
    return out


def run_compare(backend, question, collection, mode, k, selected, blind, max_tokens, options: list[Contestant],
                request=None):
    """Generator for the Compare button (see :func:`_outputs` for what it yields)."""
    by_key = {c.key: c for c in options}
    chosen = [by_key[s] for s in (selected or []) if s in by_key]
    state = {"id": uuid.uuid4().hex, "blind": bool(blind), "voted": False, "done": False, "columns": []}
    question = (question or "").strip()
    if not question:
        yield _outputs(state, [], None, message_html("Type a question first.", "error"), False)
        return
    if not 2 <= len(chosen) <= MAX_COLUMNS:
        yield _outputs(state, [], None, message_html(
            f"Choose 2 to {MAX_COLUMNS} models to compare (you chose {len(chosen)}).", "error"), False)
        return
    if not collection:
        yield _outputs(state, [], None, message_html(
            "There is no collection yet: an admin can create one in the Documents tab.", "error"), False)
        return
    try:
        user = user_of(backend, request)
        backend.state.require_read(user, collection)  # on the server, before anything is retrieved
    except Exception as e:
        yield _outputs(state, [], None, message_html(user_message(e, "The comparison"), "error"), False)
        return
    state["user"] = user.name
    if blind:
        random.shuffle(chosen)
    cols = [Column(c) for c in chosen]
    state.update(question=question, collection=collection, mode=mode, k=k, max_tokens=max_tokens)
    yield _outputs(state, cols, sources_html([], note="Searching…"), message_html("Retrieving…", "info"), False)
    try:
        res = backend.search(collection, question, mode=mode or None, k=whole_number(k, "Top-k"))
        max_tokens = whole_number(max_tokens, "Max tokens")
    except Exception as e:
        yield _outputs(state, cols, sources_html([]), message_html(user_message(e, "The search"), "error"), False)
        return
    hits = res.hits
    state["router"] = _router_pick(backend, question, res)
    src = sources_html(hits, note=f"The same {len(hits)} passages go to every model.")
    yield _outputs(state, cols, src, message_html("Generating…", "info"), False)

    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker(i: int, c: Contestant):
        gen = None
        try:
            params = {**c.params}
            if max_tokens:
                params["max_tokens"] = int(max_tokens)
            gen = backend.ask(question, retrieval=res, model=c.model, params=params)
            for ev in gen:
                if stop.is_set():
                    break
                events.put((i, ev))
        except Exception as e:  # reported in the column; never kills the others
            events.put((i, user_message(e, f"Column {LABELS[i]}")))
        finally:
            if gen is not None and hasattr(gen, "close"):
                try:
                    gen.close()
                except Exception:
                    pass
            events.put((i, None))

    threads = [threading.Thread(target=worker, args=(i, col.contestant), daemon=True,
                                name=f"compare-{LABELS[i]}") for i, col in enumerate(cols)]
    for t in threads:
        t.start()
    alive = len(threads)
    last = 0.0
    try:
        while alive:
            try:
                i, ev = events.get(timeout=0.1)
            except queue.Empty:
                continue
            col = cols[i]
            if ev is None:
                alive -= 1
                col.done = True
            elif isinstance(ev, str):
                col.error = f"failed: {ev}"
            elif isinstance(ev, Token):
                col.text += ev.text
            elif isinstance(ev, Done):
                col.meta = dict(ev.meta)
                if col.meta.get("error"):
                    col.error = str(col.meta["error"])
            now = time.monotonic()
            if now - last >= YIELD_EVERY_S or ev is None:
                last = now
                yield _outputs(state, cols, None, None, False)
    finally:
        stop.set()
    state["done"] = True
    state["columns"] = [{"key": c.contestant.key, "label": c.contestant.label, "model": c.contestant.model,
                         "params": c.contestant.params, "meta": _small_meta(c.meta),
                         "fallback": c.fallback(), "error": c.error} for c in cols]
    # keep what the reveal needs on the server side only (gr.State never goes to the browser)
    state["_cols"] = cols
    fb = [f"{LABELS[i]}: {c.fallback()}" for i, c in enumerate(cols) if c.fallback()]
    note = "All answers are in. Which is better?" + (" (Names are hidden until you vote.)" if blind else "")
    if fb:
        note += " Note: " + "; ".join(fb) + " — a vote on this comparison will not be counted."
    yield _outputs(state, cols, None, message_html(note, "warn" if fb else "ok"), True)


def _router_pick(backend, question: str, res) -> dict | None:
    """What the auto router would pick for this question and retrieval (stored with the vote: the Evaluate tab
    checks the router against people's votes); None when routing fails (the comparison goes on)."""
    from rag.arena import router_pick

    try:
        return router_pick(backend.engine, question, res)
    except Exception as e:      # noqa: BLE001 - never stops a comparison
        log.warning("router pick for the arena failed: %s: %s", type(e).__name__, e)
        return None


def _small_meta(m: dict) -> dict:
    keep = ("model", "endpoint", "route", "ttft_ms", "tokens_per_s", "completion_tokens", "embedded", "partial")
    out = {k: m.get(k) for k in keep if k in m}
    if isinstance(out.get("endpoint"), dict):
        out["endpoint"] = out["endpoint"].get("name")
    return out


def vote(backend, outcome: str, state: dict | None, options: list[Contestant], request=None, board=ALL):
    """Record a vote by the signed-in user; returns the same outputs as the run, plus the leaderboard values
    (filtered by ``board``, a collection or :data:`ALL`)."""
    state = dict(state or {})
    cols = state.get("_cols") or []
    lb = leaderboard_values(backend, options, board, request=request)
    try:
        user = user_of(backend, request)
    except Exception as e:
        return [*_outputs(state, cols, None, message_html(user_message(e, "The vote"), "error"), False), *lb]
    if state.get("user") not in (None, user.name):
        return [*_outputs(state, cols, None, message_html(
            "This comparison was run by another account: run a new comparison to vote.", "error"), False), *lb]
    if not state.get("done") or len(cols) < 2:
        return [*_outputs(state, cols, None, message_html("Run a comparison and wait for the answers first.",
                                                            "error"), False), *lb]
    if state.get("voted"):
        return [*_outputs(state, cols, None, message_html("Already voted on this one: run a new comparison.",
                                                            "warn"), True), *lb]
    if outcome in LABELS and LABELS.index(outcome) >= len(cols):
        return [*_outputs(state, cols, None, message_html("That column is not shown.", "error"), True), *lb]
    state["voted"] = True
    names = ", ".join(f"{LABELS[i]} = {c.contestant.label}" for i, c in enumerate(cols))
    fallbacks = [c.fallback() for c in cols if c.fallback()]
    if fallbacks:
        msg = (f"Not counted: {'; '.join(fallbacks)}. The models were: {names}.")
        return [*_outputs(state, cols, None, message_html(msg, "warn"), True), *lb]
    try:
        backend.arena.record_vote(
            [c.contestant.key for c in cols], outcome, blind=bool(state.get("blind")),
            question=state.get("question", ""), collection=state.get("collection", ""), voter=user.name,
            meta={"columns": state.get("columns"), "mode": state.get("mode"), "k": state.get("k"),
                  "max_tokens": state.get("max_tokens"), "router": state.get("router")})
    except Exception as e:
        state["voted"] = False
        msg = f"The vote could not be stored: {user_message(e, 'Storing the vote')}"
        return [*_outputs(state, cols, None, message_html(msg, "error"), True), *lb]
    said = dict(VOTES).get(outcome, outcome)
    msg = f"Vote recorded ({said}). The models were: {names}."
    return [*_outputs(state, cols, None, message_html(msg, "ok"), True),
            *leaderboard_values(backend, options, board, request=request)]


def leaderboard_rows(rows: list[dict], labels: dict[str, str]) -> list[list]:
    out = []
    for r in rows:
        ci = "" if math.isnan(r["ci_low"]) else f"{r['ci_low']:.0f} – {r['ci_high']:.0f}"
        wr = "" if math.isnan(r["win_rate"]) else f"{r['win_rate'] * 100:.0f}%"
        out.append([r["rank"], labels.get(r["model"], r["model"]), f"{r['score']:.0f}", ci, wr, r["battles"],
                    f"{r['wins']} / {r['ties']} / {r['losses']}", r["both_bad"]])
    return out


def board_choices(backend, user) -> list[tuple[str, str]]:
    """The leaderboard filter: every vote, or one collection the user may read."""
    return [("All collections", ALL)] + [(n, n) for n in readable_names(backend, user)]


def leaderboard_values(backend, options: list[Contestant], board=ALL, request=None):
    """(chart HTML, table rows, CSV path for the download button, caption), over the votes on ``board`` (a
    collection the user may read, checked on the server) or on every collection (:data:`ALL`)."""
    from rag.arena import leaderboard_csv

    labels = {c.key: c.label for c in options}
    board = board or ALL
    try:
        if board != ALL:
            backend.state.require_read(user_of(backend, request), board)
        scope = {} if board == ALL else {"collection": board}
        rows = backend.arena.leaderboard(bootstrap=200, **scope)
        n = backend.arena.count(**scope)
    except Exception as e:
        return message_html(user_message(e, "The leaderboard"), "error"), None, None, ""
    csv_dir = Path(tempfile.gettempdir()) / "hybrid-rag"
    csv_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if board == ALL else "-" + board
    csv_path = csv_dir / f"leaderboard-{os.getpid()}{suffix}.csv"
    tmp = csv_path.with_suffix(f".tmp{threading.get_ident()}")
    tmp.write_text(leaderboard_csv(rows), encoding="utf-8")
    os.replace(tmp, csv_path)
    where = "" if board == ALL else f" on {board}"
    caption = (f"{n} vote{'s' if n != 1 else ''}{esc(where)}. Scores: Bradley-Terry on the Elo scale (1000 = average), "
               "95% bootstrap intervals over votes; win rate counts ties as half.")
    return leaderboard_svg(rows, labels), leaderboard_rows(rows, labels) or None, str(csv_path), caption


# ------------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------------

def _choice_label(catalog, c: Contestant) -> str:
    if c.embedded:
        return c.label
    need = needs(catalog, catalog.get_model(c.model))
    return f"{c.label} (needs {need})" if need else c.label


def model_choices(backend) -> tuple[list[tuple[str, str]], list[Contestant]]:
    """(label, key) pairs for the model picker and the contestants, from the catalog with what local NIMs serve."""
    catalog = backend.live_catalog()
    options = contestants(catalog)
    return [(_choice_label(catalog, c), c.key) for c in options], options


def build(backend) -> dict:
    settings = backend.settings
    names: list[str] = []  # filled per user on page load: no collection name reaches another user's page config
    choices, options = model_choices(backend)
    with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
        question = gr.Textbox(label="Question", placeholder="One question; every model gets the same passages.",
                              scale=5, elem_id="cmp-question", max_length=4000)
        run = gr.Button("Compare", variant="primary", scale=1, min_width=100, elem_id="cmp-run")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=80, elem_id="cmp-stop")
    with gr.Row(equal_height=False):
        picks = gr.CheckboxGroup(choices, value=default_selection(options),
                                 label="Models (2 to 4)", scale=3, elem_id="cmp-models")
        with gr.Column(scale=2, min_width=260):
            blind = gr.Checkbox(True, label="Blind: hide model names until the vote", elem_id="cmp-blind")
            collection = gr.Dropdown(names, value=backend.default_collection(names), label="Collection", elem_id="cmp-collection")
            with gr.Row():
                mode = gr.Radio(["hybrid", "dense", "sparse"], value=settings.retrieval.mode, label="Retrieval")
                k = gr.Slider(1, 20, value=min(settings.retrieval.k, 20), step=1, label="Top-k")
            max_tokens = gr.Slider(16, 1024, value=192, step=16, label="Max tokens")
    status = gr.HTML("", elem_id="cmp-status", js_on_load=None)
    col_parts = []
    with gr.Row(equal_height=False, elem_id="cmp-columns"):
        for i in range(MAX_COLUMNS):
            with gr.Column(visible=i < 2, min_width=240, elem_classes=["hr-cmp-col"]) as c:
                head = gr.Markdown(f"### Model {LABELS[i]}", elem_id=f"cmp-head-{i}")
                ans = gr.Markdown("", elem_id=f"cmp-answer-{i}", elem_classes=["hr-cmp-answer"],
                                  sanitize_html=True, min_height=160)
                stats = gr.Markdown("&nbsp;", elem_id=f"cmp-stats-{i}", elem_classes=["hr-cmp-stats"])
            col_parts += [c, head, ans, stats]
    with gr.Row(elem_id="cmp-votes"):
        vote_btns = [gr.Button(label, interactive=False, visible=key in ("A", "B", "tie", "bad"),
                               elem_id=f"vote-{key}", variant="secondary", min_width=90)
                     for key, label in VOTES]
    with gr.Accordion("Passages sent to every model", open=False):
        sources = gr.HTML(sources_html([]), js_on_load=None, max_height=420)
    state = gr.State({})

    gr.Markdown("## Leaderboard")
    chart0, table0, csv0, caption0 = leaderboard_values(backend, options)
    with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
        board = gr.Dropdown([("All collections", ALL)], value=ALL, label="Votes on", elem_id="lb-collection",
                            allow_custom_value=False, scale=3, min_width=240)
        refresh = gr.Button("Refresh", size="sm", elem_id="lb-refresh", scale=1, min_width=90)
        download = gr.DownloadButton("Download CSV", value=csv0, size="sm", elem_id="lb-csv", scale=1, min_width=120)
    caption = gr.Markdown(caption0, elem_classes=["hr-hint"], elem_id="lb-caption")
    chart = gr.HTML(chart0, elem_id="lb-chart", js_on_load=None)
    table = gr.Dataframe(value=table0, headers=LEADERBOARD_COLUMNS, interactive=False, datatype="str",
                         elem_id="lb-table", wrap=True,
                         column_widths=["6%", "38%", "8%", "12%", "9%", "8%", "11%", "8%"])
    run_outputs = [*col_parts, sources, status, *vote_btns, state]

    def _run(q, c, m, kk, sel, b, mt, request: gr.Request):  # the contestants as they are now (a local NIM
        yield from run_compare(backend, q, c, m, kk, sel, b, mt, model_choices(backend)[1],  # may come or go)
                               request=request)

    ev_run = run.click(_run, [question, collection, mode, k, picks, blind, max_tokens], run_outputs,
                       concurrency_limit=2, concurrency_id="compare", show_progress="hidden")
    ev_sub = question.submit(_run, [question, collection, mode, k, picks, blind, max_tokens], run_outputs,
                             concurrency_limit=2, concurrency_id="compare", show_progress="hidden")
    stop.click(None, None, None, cancels=[ev_run, ev_sub])
    lb_outputs = [chart, table, download, caption]

    def _voter(key):
        def _vote(st, b, request: gr.Request):
            return vote(backend, key, st, model_choices(backend)[1], request=request, board=b)
        return _vote

    for (key, _label), btn in zip(VOTES, vote_btns):
        btn.click(_voter(key), [state, board], [*run_outputs, *lb_outputs], concurrency_limit=4,
                  concurrency_id="vote")

    def _board(b, request: gr.Request):
        return leaderboard_values(backend, model_choices(backend)[1], b, request=request)

    def _on_load(request: gr.Request):
        """On page load: the filter lists the collections this user may read; the board shows every vote."""
        try:
            choices = board_choices(backend, user_of(backend, request))
        except Exception:  # noqa: BLE001 - not signed in: only "all"
            choices = [("All collections", ALL)]
        return (gr.update(choices=choices, value=ALL),
                *leaderboard_values(backend, model_choices(backend)[1], ALL, request=request))

    refresh.click(_board, [board], lb_outputs)
    board.input(_board, [board], lb_outputs)
    return {"collection": collection, "models": picks, "leaderboard": (_on_load, [board, *lb_outputs])}
