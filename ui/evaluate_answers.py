"""Answer evaluation in the Evaluate tab: a golden set answered by 1-4 models over the same passages, scored.

Upload a golden set (JSONL: question, reference, expected_docs, answerable) or use the shipped example about
this project's docs; pick 1-4 models and the judge; the run goes on in the background (one evaluation at a time,
shared with retrieval evaluation: :data:`ui.evaluate.JOBS`) and is saved under ``<data_dir>/answer-runs/``
(:mod:`rag.answereval`). Shown: the automatic scores per model (table and chart), the judge's scores apart from
them (or why no judge ran), a per-question view, saved runs with CSV/JSON export, the arena leaderboard beside the
automatic scores for the models both have seen, and the router checked against people's votes
(:func:`rag.arena.router_agreement`, :func:`rag.arena.leaderboard_by_route`).

Everything from uploads and answers is shown in Dataframes (text, never markup) or escaped HTML. The signed-in
user answers only from collections they may read, and sees and opens only saved runs on those collections.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from rag import answereval as ae
from rag.errors import InvalidInput, user_message
from rag.eval import EvalCancelled

from .evaluate import JOBS, follow, stop_runs
from .render import esc, message_html
from .session import user_of

SUMMARY_COLUMNS = ["Model", "Answered", "Not counted", "Citation validity", "Citation coverage", "Supported",
                   "Refusals (unanswerable)", "False refusals", "Expected-doc recall", "Reference similarity",
                   "TTFT p50 ms", "Tokens/s"]
_KEYS = ["citation_validity", "citation_coverage", "supported_rate", "refusal_rate", "false_refusal_rate",
         "expected_doc_recall", "reference_similarity", "ttft_p50_ms", "tokens_per_s"]
CHART_METRICS = {"citation_validity": "validity", "citation_coverage": "coverage", "supported_rate": "supported",
                 "refusal_rate": "refusals", "expected_doc_recall": "doc recall",
                 "reference_similarity": "ref. similarity"}
JUDGE_COLUMNS = ["Model", "Graded", "Groundedness (1-5)", "Quality (1-5)", "Unparsable or failed"]
QUESTION_COLUMNS = ["Model", "Answer", "Validity", "Coverage", "Supported", "Refusal", "Doc recall", "Ref. sim.",
                    "TTFT ms", "Judge G/Q", "Judge reason", "Note"]
SIDE_COLUMNS = ["Model", "Arena score", "Win rate", "Battles", "Supported", "Citation validity", "Reference similarity",
                "Judge quality"]
ROUTER_COLUMNS = ["Route", "Votes", "Router's model shown", "One winner", "Router's model won", "Agreement",
                  "Chance"]
ROUTE_LB_COLUMNS = ["Route", "Rank", "Model", "Score", "Win rate", "Battles"]
MAX_GOLDEN_BYTES = 2 * 2**20


def _num(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(v, digits) if isinstance(v, float) else v


# -- inputs ------------------------------------------------------------------------------------------------------
def golden_from(upload) -> tuple[list[ae.GoldenItem], str]:
    """The uploaded golden set, or the shipped example when nothing is uploaded: (items, name)."""
    if not upload:
        return ae.load_golden(), ae.EXAMPLE_SET.name
    p = Path(upload if isinstance(upload, str) else getattr(upload, "name", upload))
    if p.stat().st_size > MAX_GOLDEN_BYTES:
        raise InvalidInput(f"The golden set is over {MAX_GOLDEN_BYTES // 2**20} MiB: split it.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("The golden set is not UTF-8 text: save it as UTF-8 JSONL.") from None
    return ae.parse_golden(text, "uploaded golden set"), "uploaded golden set"


def model_choices(backend) -> list[tuple[str, str]]:
    return [(f"{m.name} ({m.id})", m.id) for m in backend.live_catalog().models]


def judge_choices(backend) -> list[tuple[str, str]]:
    return [("No judge", "none")] + [(f"{m.name} ({m.id})", m.id) for m in backend.live_catalog().models
                                     if not m.embedded]


# -- views of a run ------------------------------------------------------------------------------------------------
def summary_rows(result: ae.AnswerRun) -> list[list]:
    out = []
    for m, s in result.summary.items():
        out.append([m, f"{s['answered']}/{s['questions']}", s["fell_back"] + s["errors"],
                    *[_num(s[k]) for k in _KEYS]])
    return out


def judge_rows(result: ae.AnswerRun) -> list[list]:
    return [[m, s["judge"]["judged"], _num(s["judge"]["groundedness"]), _num(s["judge"]["quality"]),
             s["judge"]["errors"]] for m, s in result.summary.items() if s.get("judge")]


def chart_frame(result: ae.AnswerRun) -> pd.DataFrame:
    """Long form for the bar chart: one bar per (metric, model), the rates from 0 to 1."""
    rows = []
    for key, name in CHART_METRICS.items():
        for m, s in result.summary.items():
            if s.get(key) is not None:
                rows.append({"bar": f"{name} · {m}", "metric": name, "model": m, "value": s[key]})
    return pd.DataFrame(rows, columns=["bar", "metric", "model", "value"])


def question_choices(result: ae.AnswerRun) -> list[tuple[str, str]]:
    return [(f"{q['id']}: {q['question'][:80]}", q["id"]) for q in result.questions]


def question_view(result: ae.AnswerRun | None, qid: str | None) -> tuple[str, list[list]]:
    """The question (escaped HTML: question, reference, expected documents, the passages sent) and one row per
    model (its answer and scores)."""
    q = next((q for q in (result.questions if result else []) if q["id"] == qid), None)
    if q is None:
        return "", []
    srcs = "".join(f"<li>[{s['n']}] {esc(s['source'])}</li>" for s in q["sources"])
    info = (f"<p><b>{esc(q['question'])}</b>{'' if q['answerable'] else ' <i>(not answerable from the documents)</i>'}"
            f"</p>" + (f"<p>Reference: {esc(q['reference'])}</p>" if q.get("reference") else "")
            + (f"<p>Expected documents: {esc(', '.join(q['expected_docs']))} "
               f"(retrieved: {esc(q.get('expected_retrieved'))})</p>" if q.get("expected_docs") else "")
            + f"<p>Passages sent to every model:</p><ol class='hr-eval-sources'>{srcs}</ol>")
    rows = []
    for m in result.models:
        a = q["answers"].get(m) or {}
        s, j = a.get("scores") or {}, a.get("judge") or {}
        note = a.get("error") or a.get("fell_back") or j.get("error") or ""
        rows.append([m, a.get("text") or "", _num(s.get("citation_validity")), _num(s.get("citation_coverage")),
                     _num(s.get("supported_rate")), s.get("refusal") or "", _num(s.get("expected_doc_recall")),
                     _num(s.get("reference_similarity")), _num(s.get("ttft_ms"), 1),
                     f"{j['groundedness']}/{j['quality']}" if "groundedness" in j else "", j.get("reason") or "",
                     note])
    return info, rows


def export_files(result: ae.AnswerRun) -> list[str]:
    d = Path(tempfile.mkdtemp(prefix="answer-eval-"))
    name = result.id or "answer-run"
    csv_path, json_path = d / f"{name}.csv", d / f"{name}.json"
    csv_path.write_text(ae.to_csv(result), encoding="utf-8")
    json_path.write_text(json.dumps(result.to_dict(), default=str), encoding="utf-8")
    return [str(csv_path), str(json_path)]


def judge_note(result: ae.AnswerRun) -> str:
    j = result.judge
    if j.get("ran"):
        return message_html(f"Judge: {j['status']} ({j.get('graded', 0)} answers graded). Judge scores are the "
                            "judge model's opinion, shown apart from the automatic scores.", "info")
    return message_html(f"Judge: {j.get('status') or 'no judge ran'}. Only automatic scores.", "warn")


def run_views(backend, request, run_id: str | None):
    """(message, summary, chart, judge note, judge table, question choices, current run, exports, side by side)."""
    if not run_id:
        return (message_html("Pick a saved run.", "info"), *[gr.skip()] * 8)
    try:
        user = user_of(backend, request)
        result = ae.load(backend.settings.data_dir, run_id)
        backend.state.require_read(user, result.collection)
    except Exception as e:
        return (message_html(user_message(e, "Opening the run"), "error"), *[gr.skip()] * 8)
    choices = question_choices(result)
    msg = (f"Run {result.id}: {len(result.questions)} questions on '{result.collection}', "
           f"{len(result.models)} model(s), answers capped at {result.settings.get('max_tokens')} tokens.")
    return (message_html(msg, "ok"), summary_rows(result), chart_frame(result), judge_note(result),
            judge_rows(result), gr.update(choices=choices, value=choices[0][1] if choices else None),
            result, export_files(result), side_by_side(backend, result))


def saved_choices(backend, user) -> list[tuple[str, str]]:
    """The saved answer runs on collections ``user`` may read, newest first."""
    entries = ae.list_saved(backend.settings.data_dir)
    ok = set(backend.state.readable(user, sorted({e["collection"] for e in entries})))
    return [(f"{e['created_at']} · {e['collection']} · {', '.join(e['models'])} · {e['questions']} q"
             + (f" · judge {e['judge']}" if e["judge"] else ""), e["id"]) for e in entries if e["collection"] in ok]


# -- the arena beside the automatic scores; the router against people ------------------------------------------------
def side_by_side(backend, result: ae.AnswerRun | None) -> list[list]:
    """For the models both the arena and this run have seen: arena score, win rate, battles, and the run's scores."""
    if result is None:
        return []
    lb = {r["model"]: r for r in backend.arena.leaderboard(bootstrap=0)}
    out = []
    for m in result.models:
        if m in lb:
            s, r = result.summary[m], lb[m]
            out.append([m, _num(r["score"], 1), _num(r["win_rate"]), r["battles"], _num(s["supported_rate"]),
                        _num(s["citation_validity"]), _num(s["reference_similarity"]),
                        _num((s.get("judge") or {}).get("quality"))])
    return out


def router_views(backend) -> tuple[str, list[list], list[list]]:
    """(note, agreement per route, leaderboard per route) over every arena vote."""
    from rag.arena import (
        leaderboard_by_route,
        router_agreement,
        router_pick,
        vote_picks,
    )

    votes = backend.arena.votes()
    if not votes:
        return message_html("No arena votes yet: vote in the Compare tab first.", "info"), [], []
    try:
        picks = vote_picks(votes, lambda q: router_pick(backend.engine, q))
    except Exception as e:
        return message_html(user_message(e, "Routing the votes' questions"), "error"), [], []
    agree = router_agreement(votes, picks)

    def row(name, t):
        return [name, t["votes"], t["router_model_shown"], t["decided"], t["agreed"], _num(t["rate"]),
                _num(t["chance"])]

    rows = [row("all", agree)] + [row(r, t) for r, t in agree["routes"].items()]
    lb = [[r, x["rank"], x["model"], _num(x["score"], 1), _num(x["win_rate"]), x["battles"]]
          for r, board in leaderboard_by_route(votes, picks, bootstrap=0).items() for x in board]
    note = (f"{len(votes)} votes. The router's pick is stored with votes made since this version and recomputed from "
            f"the question for {agree['recomputed']} older ones (without their passages). Agreement: of the votes "
            "with one winner where the router's model was a column, the share it won; chance: what a random "
            "column would score.")
    return message_html(note, "info"), rows, lb


# -- the run ------------------------------------------------------------------------------------------------------
def run_live(backend, request, upload, collection, models, judge, max_tokens, limit, progress=gr.Progress()):
    """Validate, run in the background, follow it; yields the section's outputs (message, summary, chart, judge
    note, judge table, question dropdown, current run, exports, side by side, saved dropdown)."""
    skip = (gr.skip(),) * 9
    try:
        user = user_of(backend, request)
        golden, name = golden_from(upload)
        n = int(limit or 0)
        if n < 0:
            raise InvalidInput("Questions to run must be 0 (all) or more.")
        golden = golden[:n] if n else golden
        if not collection or collection not in backend.collection_names():
            raise InvalidInput("Pick the collection to answer from (the example set is about the starter "
                               "collection, hybrid-rag-docs).")
        backend.state.require_read(user, collection)
        if not models:
            raise InvalidInput(f"Pick 1 to {ae.MAX_MODELS} models.")
        picked = ae.resolve_models(backend.live_catalog(), list(models))
        mt = int(max_tokens) if max_tokens else None
        if mt is not None and not 16 <= mt <= 8192:
            raise InvalidInput("Max tokens must be from 16 to 8192.")
        the_judge = ae.open_run_judge(backend.engine, judge or "none")
    except Exception as e:
        yield (message_html(user_message(e, "The answer evaluation"), "error"), *skip)
        return

    def work(job) -> str:
        def step(i, total, msg):
            job.progress, job.message = i / total, f"{i} of {total} answers · {msg}"

        try:
            result = ae.run(backend.engine, collection, golden, picked, judge=the_judge, max_tokens=mt,
                            progress=step, cancelled=job.cancel.is_set)
        except ae.AnswerEvalCancelled:
            raise EvalCancelled("The answer evaluation was stopped; nothing of it is saved.") from None
        return ae.save(result, backend.settings.data_dir)

    job = JOBS.submit(work, owner=user.name)
    progress(0.0, desc=f"{len(golden)} questions from the {name} · {the_judge.status}"[:120])
    follow(job, progress)
    if job.state != "done":
        yield (message_html(job.error or "The evaluation did not finish.",
                            "warn" if job.state == "cancelled" else "error"), *skip)
        return
    saved = saved_choices(backend, user)
    yield (*run_views(backend, request, job.run_id), gr.update(choices=saved, value=job.run_id))


# -- layout ---------------------------------------------------------------------------------------------------------
def build(backend, collection) -> dict:
    """The section; ``collection`` is the tab's collection dropdown (shared with retrieval evaluation)."""
    settings = backend.settings
    emb = backend.catalog.embedded_model().id
    judges = judge_choices(backend)
    default_judge = settings.evaluation.judge_model or "none"
    if default_judge not in {v for _, v in judges}:
        default_judge = "none"
    gr.Markdown("Answer a golden set (JSONL: `question`, optional `reference`, `expected_docs`, `answerable`) with "
                "1-4 models; every model gets the same passages per question. Without an upload the example set "
                "about this project's docs runs (for the `hybrid-rag-docs` collection). Metrics: docs/evaluation.md.",
                elem_classes=["hr-hint"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=420):
            upload = gr.File(file_types=[".jsonl"], type="filepath", label="Golden set (empty: the shipped example)",
                             elem_id="ans-golden", height=110)
            models = gr.Dropdown(model_choices(backend), value=[emb], multiselect=True, max_choices=ae.MAX_MODELS,
                                 label="Models (1-4)", elem_id="ans-models")
        with gr.Column(scale=1, min_width=300):
            judge = gr.Dropdown(judges, value=default_judge, label="Judge (never the offline model)",
                                elem_id="ans-judge")
            with gr.Row():
                max_tokens = gr.Number(settings.evaluation.max_tokens, label="Max tokens per answer", precision=0,
                                       elem_id="ans-max-tokens")
                limit = gr.Number(0, label="Questions to run (0: all)", precision=0, minimum=0, elem_id="ans-limit")
            with gr.Row():
                run_btn = gr.Button("Run answer evaluation", variant="primary", elem_id="ans-run", scale=3)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="ans-stop", scale=1)
    msg = gr.HTML("", elem_id="ans-msg", js_on_load=None)
    table = gr.Dataframe(headers=SUMMARY_COLUMNS, value=None, label="Automatic scores per model (means; docs/evaluation.md)",
                         interactive=False, elem_id="ans-table")
    chart = gr.BarPlot(None, x="bar", y="value", color="model", title="Automatic scores (0-1) per model",
                       x_title="metric · model", y_title="score", y_lim=[0, 1], x_label_angle=-40, sort=None,
                       elem_id="ans-chart")
    judge_msg = gr.HTML("", js_on_load=None, elem_id="ans-judge-msg")
    judge_table = gr.Dataframe(headers=JUDGE_COLUMNS, value=None, label="Judge scores (apart from the automatic ones)",
                               interactive=False, elem_id="ans-judge-table")
    current = gr.State(None)
    with gr.Accordion("Per question", open=False):
        question = gr.Dropdown([], label="Question", elem_id="ans-question")
        q_info = gr.HTML("", js_on_load=None)
        q_table = gr.Dataframe(headers=QUESTION_COLUMNS, value=None, interactive=False, wrap=True,
                               elem_id="ans-q-table")
    with gr.Accordion("Saved runs and exports", open=False):
        with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
            saved_dd = gr.Dropdown([], value=None, label="Saved answer run", scale=4, elem_id="ans-saved")
            open_btn = gr.Button("Open", scale=1, elem_id="ans-open")
        exports = gr.File(label="Export (CSV per question and model, JSON)", file_count="multiple",
                          interactive=False, elem_id="ans-exports")
    with gr.Accordion("Arena and router: people's votes beside the automatic scores", open=False):
        side = gr.Dataframe(headers=SIDE_COLUMNS, value=None, interactive=False, elem_id="ans-side",
                            label="Models both the arena and this run have seen")
        router_btn = gr.Button("Check the router against the votes", elem_id="ans-router-btn")
        router_msg = gr.HTML("", js_on_load=None)
        router_table = gr.Dataframe(headers=ROUTER_COLUMNS, value=None, interactive=False, elem_id="ans-router",
                                    label="How often the router's model was the one people preferred")
        route_lb = gr.Dataframe(headers=ROUTE_LB_COLUMNS, value=None, interactive=False, elem_id="ans-route-lb",
                                label="Leaderboard by route (the route the router picks for the vote's question)")

    outputs = [msg, table, chart, judge_msg, judge_table, question, current, exports, side]

    def _run(up, col, ms, j, mt, lim, request: gr.Request, progress=gr.Progress()):
        yield from run_live(backend, request, up, col, ms, j, mt, lim, progress=progress)

    def _stop(request: gr.Request):
        return stop_runs(backend, request)

    def _open(r, request: gr.Request):
        return run_views(backend, request, r)

    def _saved_now(request: gr.Request):
        try:
            saved = saved_choices(backend, user_of(backend, request))
        except Exception:
            saved = []
        return gr.update(choices=saved, value=saved[0][1] if saved else None)

    run_btn.click(_run, [upload, collection, models, judge, max_tokens, limit], [*outputs, saved_dd],
                  concurrency_limit=1, concurrency_id="evaluate", api_visibility="private")
    stop_btn.click(_stop, None, msg, api_visibility="private")
    open_btn.click(_open, saved_dd, outputs, api_visibility="private")
    question.change(question_view, [current, question], [q_info, q_table], api_visibility="private")
    router_btn.click(lambda: router_views(backend), None, [router_msg, router_table, route_lb],
                     api_visibility="private")
    return {"models": models, "judge": judge, "on_load": [(_saved_now, [saved_dd])]}


__all__ = ["build", "run_live", "run_views", "question_view", "router_views", "side_by_side", "golden_from",
           "summary_rows", "judge_rows", "chart_frame"]
