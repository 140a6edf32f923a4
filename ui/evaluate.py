"""Evaluate tab: retrieval evaluation on a BEIR-format set, several configurations side by side.

Upload ``queries.jsonl`` + ``qrels.tsv`` to evaluate a collection the signed-in user may read, or add
``corpus.jsonl(.gz)`` to ingest the corpus into a new collection first (editors and admins; the creator becomes
its owner; an existing collection is reused when it already holds exactly that corpus, which needs edit rights on
it). Saved runs are listed, opened and compared only for collections the user may read. The run goes on in a background thread
(one evaluation at a time per server); the handler follows it with a progress bar, and if the page goes
away the run still finishes and is saved. Every run is saved under ``<data_dir>/eval-runs/<id>/``
(:mod:`rag.evalruns`): a metrics table, nDCG@k and recall@k curves, a per-query drill-down, CSV/JSON exports,
and a comparison of two saved runs (which queries got worse).

Everything from the uploads (query text, ids) is shown in Dataframes (text, never markup) or escaped HTML.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from rag.errors import InvalidInput, user_message
from rag.eval import (
    CURVE_KS,
    DEFAULT_CONFIGS,
    EvalCancelled,
    judged,
    load_qrels,
    load_queries,
    parse_configs,
    rerank_note,
    reranker_for,
)
from rag.evalruns import (
    compare,
    compare_summary,
    label,
    list_saved,
    load,
    per_query_rows,
    save,
    to_csv,
    to_json,
)

from . import auth
from .render import esc, message_html
from .session import user_of

log = logging.getLogger(__name__)

PRESETS = ["sparse", "dense", "hybrid", "hybrid-rrf", "hybrid-convex"]
RERANK_PRESET = "hybrid-rerank"   # offered when a rerank endpoint is configured (rerank.base_url or the hosted key)
TABLE_COLUMNS = ["Configuration", "nDCG@10", "Recall@10", "Recall@100", "MRR@10", "p50 ms", "p95 ms", "Queries",
                 "Reranked"]
COMPARE_COLUMNS = ["Query id", "Query", "Baseline nDCG@10", "Other nDCG@10", "Change"]
MAX_QUERIES = 20_000   # judged queries per run
POLL_S = 0.3
_KEEP_JOBS = 20


# -- the background runs -------------------------------------------------------------------------------------

@dataclass
class EvalJob:
    id: str
    state: str = "queued"     # queued | running | done | failed | cancelled
    progress: float = 0.0
    message: str = ""
    run_id: str | None = None
    error: str | None = None
    owner: str | None = None   # the user who started it: only they (or an admin) may stop it
    cancel: threading.Event = field(default_factory=threading.Event)
    finished_event: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


class EvalJobs:
    """Evaluation runs, each in its own thread, one at a time (the others wait their turn)."""

    def __init__(self):
        self._jobs: dict[str, EvalJob] = {}
        self._lock = threading.Lock()
        self._one = threading.Semaphore(1)

    def submit(self, work, owner: str | None = None) -> EvalJob:
        job = EvalJob(uuid.uuid4().hex[:12], owner=owner)
        with self._lock:
            self._jobs[job.id] = job
            for old in [j for j in self._jobs.values() if j.finished][:-_KEEP_JOBS]:
                del self._jobs[old.id]
        threading.Thread(target=self._run, args=(job, work), name=f"eval-{job.id}", daemon=True).start()
        return job

    def _run(self, job: EvalJob, work) -> None:
        with self._one:
            job.state = "running"
            try:
                job.run_id = work(job)
                job.state, job.progress = "done", 1.0
            except EvalCancelled as e:
                job.state, job.error = "cancelled", str(e)
            except Exception as e:
                job.state, job.error = "failed", user_message(e, "The evaluation")
            finally:
                job.finished_event.set()

    def get(self, job_id: str) -> EvalJob:
        return self._jobs[job_id]

    def cancel_all(self, owner: str | None = None) -> int:
        """Stop the unfinished runs (only ``owner``'s when given)."""
        n = 0
        for j in list(self._jobs.values()):
            if not j.finished and not j.cancel.is_set() and (owner is None or j.owner == owner):
                j.cancel.set()
                n += 1
        return n


JOBS = EvalJobs()


# -- inputs ---------------------------------------------------------------------------------------------------

@dataclass
class SetFiles:
    queries: Path
    qrels: Path
    corpus: Path | None = None


def _role(name: str) -> str | None:
    n = name.lower()
    if "qrel" in n or n.endswith(".tsv"):
        return "qrels"
    if "quer" in n:
        return "queries"
    if "corpus" in n or n.endswith(".gz"):
        return "corpus"
    return None


def identify(files, max_bytes: int) -> SetFiles:
    """The uploaded files by role (their names say which: qrels*.tsv, queries*.jsonl, corpus*.jsonl(.gz))."""
    found: dict[str, Path] = {}
    for f in files or []:
        p = Path(f if isinstance(f, (str, Path)) else getattr(f, "name", ""))
        role = _role(p.name)
        if role is None:
            raise InvalidInput(f"{p.name}: not part of a BEIR set. Upload queries.jsonl and qrels.tsv, and "
                               "corpus.jsonl(.gz) to ingest a corpus too.")
        if role in found:
            raise InvalidInput(f"Two {role} files ({found[role].name}, {p.name}): upload one of each.")
        try:
            size = p.stat().st_size
        except OSError:
            raise InvalidInput(f"{p.name}: the upload cannot be read; upload it again.") from None
        if size > max_bytes:
            raise InvalidInput(f"{p.name}: {size / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB limit per "
                               "file (limits.max_file_bytes).")
        found[role] = p
    missing = [r for r in ("queries", "qrels") if r not in found]
    if missing:
        raise InvalidInput(f"Upload {' and '.join(f'{m}.{ext}' for m, ext in (('queries', 'jsonl'), ('qrels', 'tsv')) if m in missing)}"
                           " (BEIR format); corpus.jsonl(.gz) is optional.")
    return SetFiles(found["queries"], found["qrels"], found.get("corpus"))


def _stage(files: SetFiles) -> tuple[Path, SetFiles]:
    """Copies the job owns (Gradio may clean its uploads), under the names the loaders expect."""
    d = Path(tempfile.mkdtemp(prefix="hybrid-rag-eval-"))
    corpus = None
    if files.corpus is not None:
        corpus = d / ("corpus.jsonl.gz" if files.corpus.name.lower().endswith(".gz") else "corpus.jsonl")
        shutil.copyfile(files.corpus, corpus)
    return d, SetFiles(files.queries, files.qrels, corpus)


def presets_for(settings) -> tuple[list[str], list[str]]:
    """(the configuration choices, the ones ticked at first): ``hybrid-rerank`` beside ``hybrid`` when a rerank
    endpoint is configured, ticked when the app reranks (``rerank.enabled``)."""
    from rag.rerank import not_configured

    if not_configured(settings.rerank):
        return list(PRESETS), list(DEFAULT_CONFIGS)
    return [*PRESETS, RERANK_PRESET], [*DEFAULT_CONFIGS, *([RERANK_PRESET] if settings.rerank.enabled else [])]


def _configs(presets, extra) -> list:
    names = [*(presets or []), *str(extra or "").split(",")]
    return parse_configs([n for n in names if n.strip()] or list(DEFAULT_CONFIGS))


def _limit(limit) -> int | None:
    try:
        n = int(limit or 0)
    except (TypeError, ValueError):
        raise InvalidInput("Queries to run must be a whole number (0 for all).") from None
    if n < 0:
        raise InvalidInput("Queries to run must be 0 (all) or more.")
    return n or None


# -- the views of a run ----------------------------------------------------------------------------------------

def _reranked(m: dict) -> str:
    """The Reranked cell: how many queries the rerank stage ordered; the rest fell back to the fused order."""
    if "rerank_applied" not in m:
        return "–"
    n, bad = m["rerank_applied"] + m["rerank_fallbacks"], m["rerank_fallbacks"]
    return f"{m['rerank_applied']} of {n}" + (f" ({bad} fell back to fused order)" if bad else "")


def table_rows(result) -> list[list]:
    return [[name, m["ndcg@10"], m["recall@10"], m["recall@100"], m["mrr@10"], m["p50_ms"], m["p95_ms"],
             m["queries"], _reranked(m)] for name, m in result.summary().items()]


def curve_frames(result) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(nDCG@k, recall@k) as long tables: k, value, configuration."""
    curves = result.curves()
    frames = []
    for kind in ("ndcg", "recall"):
        rows = [{"k": k, "value": c[kind][k], "configuration": name} for name, c in curves.items() for k in CURVE_KS]
        frames.append(pd.DataFrame(rows, columns=["k", "value", "configuration"]))
    return frames[0], frames[1]


def query_choices(result) -> list[tuple[str, str]]:
    return [(f"{q} · {' '.join(t.split())[:90]}", q) for q, t in result.queries.items()]


def _export_dir(run_id: str) -> Path:
    d = Path(tempfile.gettempdir()) / "hybrid-rag" / "eval-exports" / run_id  # outside the data dir Gradio blocks
    d.mkdir(parents=True, exist_ok=True)
    return d


def export_files(result, run_id: str) -> list[str]:
    """CSV (per query and configuration) and JSON (everything) of a run, for download."""
    d = _export_dir(run_id)
    csv_path, json_path = d / f"eval-{run_id}.csv", d / f"eval-{run_id}.json"
    csv_path.write_text(to_csv(per_query_rows(result)), encoding="utf-8")
    json_path.write_text(to_json(result), encoding="utf-8")
    return [str(csv_path), str(json_path)]


def _load_readable(backend, request, run_id: str):
    """The saved run, if the signed-in user may read its collection (else :class:`rag.state.AccessDenied`)."""
    user = user_of(backend, request)
    result = load(backend.settings.data_dir, run_id)
    backend.state.require_read(user, result.info.get("collection") or "")
    return result


def run_views(backend, request, run_id: str | None):
    """(message, table, nDCG plot, recall plot, query dropdown, run id, exports, config dropdown) of a saved run."""
    if not run_id:
        return (message_html("Pick a saved run first.", "error"), *(gr.skip(),) * 7)
    try:
        result = _load_readable(backend, request, run_id)
        files = export_files(result, run_id)
    except Exception as e:
        return (message_html(user_message(e, "Opening the run"), "error"), *(gr.skip(),) * 7)
    ndcg, recall = curve_frames(result)
    choices = query_choices(result)
    info = result.info
    msg = (f"Run {run_id}: collection {info.get('collection', '?')}, {len(result.queries)} judged queries, "
           f"{len(result.names)} configurations. Latency: search time per query, query embedding excluded "
           f"({info.get('embed_ms_per_query', 0):.1f} ms per query, batched).")
    if rerank_note(result):
        msg += " Rerank: " + rerank_note(result).replace("\n", " · ")
    return (message_html(msg, "warn" if rerank_note(result) else "ok"), table_rows(result), ndcg, recall,
            gr.update(choices=choices, value=choices[0][1] if choices else None), run_id, files,
            gr.update(choices=result.names, value=result.names[0] if result.names else None))


def drill(backend, request, run_id, qid):
    """(HTML: the query and each configuration's nDCG@10 for it; rows: judged documents, grades, ranks)."""
    if not run_id or not qid:
        return "", None
    try:
        result = _load_readable(backend, request, run_id)
        if qid not in result.queries:
            raise InvalidInput(f"Query {qid!r} is not in this run.")
    except Exception as e:
        return message_html(user_message(e, "The drill-down"), "error"), None
    rel = result.qrels[qid]
    ranks = {n: {d: i for i, d in enumerate(result.ranked(n, qid), 1)} for n in result.names}
    per = {n: result.per_query(n)[qid]["ndcg@10"] for n in result.names}
    rows = []
    for doc, grade in sorted(rel.items(), key=lambda kv: (-kv[1], kv[0])):
        rows.append([doc, grade, *(ranks[n].get(doc, "—") for n in result.names)])
    scores = " · ".join(f"{esc(n)} {v:.3f}" for n, v in per.items())
    html = (f'<div class="hr-meta"><div><b>{esc(qid)}</b>: {esc(result.queries[qid])}</div>'
            f'<div class="hr-hint">nDCG@10 for this query: {scores}. Ranks among the top 100 documents; '
            "— not retrieved.</div></div>")
    return html, pd.DataFrame(rows, columns=["Document", "Grade", *result.names])


def compare_runs(backend, request, a_id, b_id, config):
    """(HTML summary, rows worst first, CSV path) of configuration ``config`` in run B against run A."""
    if not a_id or not b_id or not config:
        return message_html("Pick a baseline run, another run and a configuration.", "error"), None, None
    try:
        a, b = _load_readable(backend, request, a_id), _load_readable(backend, request, b_id)
        rows = compare(a, b, config)
    except Exception as e:
        return message_html(user_message(e, "The comparison"), "error"), None, None
    s = compare_summary(rows)
    if not rows:
        return message_html("The two runs share no judged query: nothing to compare.", "warn"), None, None
    kind = "warn" if s["worse"] else "ok"
    msg = (f"{config}: mean nDCG@10 {s['baseline_mean']:.4f} → {s['other_mean']:.4f} ({s['delta_mean']:+.4f}) over "
           f"{s['queries']} queries; {s['worse']} worse, {s['better']} better, {s['same']} unchanged. Worst first.")
    path = _export_dir(f"{a_id}-vs-{b_id}") / f"compare-{config}.csv"
    path.write_text(to_csv(rows), encoding="utf-8")
    table = [[r["query_id"], r["query"], r["baseline"], r["other"], r["delta"]] for r in rows]
    return message_html(msg, kind), table, str(path)


def saved_choices(backend, user) -> list[tuple[str, str]]:
    """The saved runs on collections ``user`` may read, newest first."""
    try:
        entries = list_saved(backend.settings.data_dir)
    except OSError as e:
        log.warning("cannot list saved evaluation runs: %s", e)
        return []
    ok = set(backend.state.readable(user, sorted({e["collection"] for e in entries})))
    return [(label(e), e["id"]) for e in entries if e["collection"] in ok]


# -- running ------------------------------------------------------------------------------------------------------

N_OUT = 11  # message, table, 2 plots, query, run id, exports, config, saved, compare A, compare B


def run_live(backend, request, files, collection, new_name, presets, extra, limit, progress=gr.Progress()):
    """Validate, start the evaluation in the background, follow it; yields the tab's outputs (``N_OUT``)."""
    skip = (gr.skip(),) * (N_OUT - 1)
    settings = backend.settings
    user, creating = None, False
    try:
        user = user_of(backend, request)
        configs = _configs(presets, extra)
        reranker = reranker_for(configs, settings)   # -rerank without a rerank endpoint is refused, saying what to set
        n_limit = _limit(limit)
        set_files = identify([f for f in (files or []) if f], settings.limits.max_file_bytes)
        qrels = load_qrels(set_files.qrels)
        queries = judged(load_queries(set_files.queries), qrels, n_limit)
        if len(queries) > MAX_QUERIES:
            raise InvalidInput(f"{len(queries)} judged queries: at most {MAX_QUERIES} per run; set 'Queries to run'.")
        if set_files.corpus is not None:
            from rag.store import validate_name

            collection = validate_name((new_name or "").strip())
            if collection in backend.collection_names():   # reused when it holds this corpus: that is a change
                backend.state.require_edit(user, collection)
            else:
                backend.state.require_create(user)
                creating = True
        elif not collection:
            raise InvalidInput("Pick the collection to evaluate, or upload corpus.jsonl too to ingest one.")
        elif collection not in backend.collection_names():
            raise InvalidInput(f"No collection named {collection!r}: pick one from the list.")
        else:
            backend.state.require_read(user, collection)
    except PermissionError as e:
        if user is not None and set_files_given(files):
            auth.audit(backend, user, "eval.ingest", collection=str(collection or new_name or "")[:64] or None,
                       result="denied", detail=str(e))
        yield (message_html(f"{user_message(e, 'The evaluation')} Without a corpus, evaluating a collection you may "
                            "read needs no other right.", "error"), *skip)
        return
    except Exception as e:
        yield (message_html(user_message(e, "The evaluation"), "error"), *skip)
        return

    staged, set_files = _stage(set_files)

    def work(job: EvalJob) -> str:
        try:
            share = 0.0
            if set_files.corpus is not None:
                from rag.evalset import ensure_collection

                share = 0.5

                def ingest_progress(frac, msg):
                    job.progress, job.message = share * frac, f"ingesting into {collection}: {msg}"

                try:
                    how = ensure_collection(collection, set_files.corpus, settings=settings,
                                            embedder=backend.embedder, progress=ingest_progress,
                                            cancelled=job.cancel.is_set)
                finally:
                    if creating and collection in backend.collection_names():
                        backend.state.forget_collection(collection)   # earlier rights on the name go (as the API)
                        backend.state.set_owner(collection, user)
                auth.audit(backend, user, "eval.ingest", collection=collection, detail=f"corpus {how}")
                job.message = f"collection {collection} {how}"
            total = len(configs) * len(queries)
            done = {"n": 0}

            def eval_progress(name, i, n):
                done["n"] += 1
                job.progress = share + (1 - share) * done["n"] / total
                job.message = f"{name}: query {i} of {n}"

            from rag.eval import run_configs

            result = run_configs(backend.engine.retriever(collection), queries, qrels, configs,
                                 progress=eval_progress, cancelled=job.cancel.is_set, reranker=reranker)
            return save(result, settings.data_dir, collection=collection)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    job = JOBS.submit(work, owner=user.name)
    progress(0.0, desc="Queued…")
    follow(job, progress)
    if job.state != "done":
        kind = "warn" if job.state == "cancelled" else "error"
        yield (message_html(job.error or "The evaluation did not finish.", kind), *skip)
        return
    views = run_views(backend, request, job.run_id)
    saved = saved_choices(backend, user)
    yield (*views, gr.update(choices=saved, value=job.run_id), gr.update(choices=saved),
           gr.update(choices=saved, value=job.run_id))


def set_files_given(files) -> bool:
    """Whether the upload holds a corpus (the evaluation would ingest it)."""
    return any(_role(Path(f if isinstance(f, (str, Path)) else getattr(f, "name", "")).name) == "corpus"
               for f in files or [] if f)


def stop_runs(backend=None, request=None) -> str:
    """Stop the signed-in user's evaluations (an admin's: everybody's)."""
    owner = None
    if backend is not None:
        try:
            user = user_of(backend, request)
        except Exception as e:
            return message_html(user_message(e, "Stopping"), "error")
        owner = None if user.is_admin else user.name
    n = JOBS.cancel_all(owner)
    if not n:
        return message_html("No evaluation is running.", "info")
    return message_html(f"Stopping {n} evaluation{'s' if n != 1 else ''} at the next query; nothing of it is saved.",
                        "ok")


# -- layout ---------------------------------------------------------------------------------------------------------

def build(backend) -> dict:
    """The tab, built with no collection or saved run in it: the page's load event fills both with what the
    signed-in user may read (``on_load``)."""
    settings = backend.settings
    gr.Markdown("Evaluate retrieval on a BEIR-format set: upload `queries.jsonl` and `qrels.tsv` to evaluate a "
                "collection, or add `corpus.jsonl(.gz)` to ingest it into a new collection first (editors and "
                "admins). Metrics "
                "as trec_eval computes them; see docs/evaluation.md.", elem_classes=["hr-hint"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=420):
            files = gr.File(file_count="multiple", file_types=[".jsonl", ".tsv", ".gz"], type="filepath",
                            label="BEIR files: queries.jsonl, qrels.tsv, optional corpus.jsonl(.gz)",
                            elem_id="eval-files", height=140)
            with gr.Row(equal_height=False):
                collection = gr.Dropdown([], value=None, label="Collection to evaluate",
                                         elem_id="eval-collection", scale=2)
                limit = gr.Number(0, label="Queries to run (0: all)", precision=0, minimum=0, elem_id="eval-limit",
                                  scale=1)
            with gr.Accordion("With a corpus: ingest into a new collection (editors and admins)", open=False):
                new_name = gr.Textbox("beir-eval", label="New collection", max_length=64, elem_id="eval-new-name")
        with gr.Column(scale=1, min_width=300):
            choices, ticked = presets_for(settings)
            presets = gr.CheckboxGroup(choices, value=ticked, label="Configurations", elem_id="eval-presets")
            extra = gr.Textbox(label="More configurations", max_length=500, elem_id="eval-extra",
                               placeholder="e.g. hybrid-convex-0.5-0.5, hybrid-rrf-k50")
            gr.Markdown("MODE[-FUSION][-WDENSE-WSPARSE][-kK][-rerank]: `hybrid` uses the settings' fusion and "
                        "weights; `-rerank` adds the rerank NIM (set `rerank.base_url` or the hosted key).",
                        elem_classes=["hr-hint"])
            with gr.Row():
                run_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-run", scale=3)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="eval-stop", scale=1)
    msg = gr.HTML("", elem_id="eval-msg", js_on_load=None)
    table = gr.Dataframe(headers=TABLE_COLUMNS, value=None, label="Metrics (mean over judged queries)",
                         interactive=False, elem_id="eval-table")
    with gr.Row():
        ndcg_plot = gr.LinePlot(None, x="k", y="value", color="configuration", title="nDCG@k", x_title="k",
                                y_title="nDCG@k", elem_id="eval-ndcg-plot")
        recall_plot = gr.LinePlot(None, x="k", y="value", color="configuration", title="recall@k", x_title="k",
                                  y_title="recall@k", elem_id="eval-recall-plot")
    current = gr.State(None)
    with gr.Accordion("Per query", open=False):
        query = gr.Dropdown([], label="Query", elem_id="eval-query")
        query_info = gr.HTML("", js_on_load=None)
        judged_table = gr.Dataframe(value=None, label="Judged documents: grade and rank per configuration",
                                    interactive=False, elem_id="eval-judged")
    with gr.Accordion("Saved runs, exports and comparison", open=False):
        with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
            saved_dd = gr.Dropdown([], value=None, label="Saved run", scale=4, elem_id="eval-saved")
            open_btn = gr.Button("Open", scale=1, elem_id="eval-open")
        exports = gr.File(label="Export (CSV per query, JSON)", file_count="multiple", interactive=False,
                          elem_id="eval-exports")
        with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
            cmp_a = gr.Dropdown([], label="Baseline run", scale=3, elem_id="eval-cmp-a")
            cmp_b = gr.Dropdown([], label="Other run", scale=3, elem_id="eval-cmp-b")
            cmp_config = gr.Dropdown([], label="Configuration", scale=2, allow_custom_value=True,
                                     elem_id="eval-cmp-config")
            cmp_btn = gr.Button("Compare", scale=1, elem_id="eval-compare")
        cmp_msg = gr.HTML("", js_on_load=None)
        cmp_table = gr.Dataframe(headers=COMPARE_COLUMNS, value=None, interactive=False, elem_id="eval-cmp-table",
                                 label="Per query, worst change first")
        cmp_file = gr.File(label="Comparison CSV", interactive=False, elem_id="eval-cmp-csv")

    outputs = [msg, table, ndcg_plot, recall_plot, query, current, exports, cmp_config, saved_dd, cmp_a, cmp_b]

    def _run(f, col, nn, pre, ex, lim, request: gr.Request, progress=gr.Progress()):
        yield from run_live(backend, request, f, col, nn, pre, ex, lim, progress=progress)

    def _stop(request: gr.Request):
        return stop_runs(backend, request)

    def _open(r, request: gr.Request):
        return run_views(backend, request, r)

    def _drill(r, q, request: gr.Request):
        return drill(backend, request, r, q)

    def _compare(a, b, c, request: gr.Request):
        return compare_runs(backend, request, a, b, c)

    run_btn.click(_run, [files, collection, new_name, presets, extra, limit], outputs,
                  concurrency_limit=1, concurrency_id="evaluate", api_visibility="private")
    stop_btn.click(_stop, None, msg, api_visibility="private")
    open_btn.click(_open, saved_dd, outputs[:8], api_visibility="private")
    query.change(_drill, [current, query], [query_info, judged_table], api_visibility="private")
    cmp_btn.click(_compare, [cmp_a, cmp_b, cmp_config], [cmp_msg, cmp_table, cmp_file], api_visibility="private")

    with gr.Accordion("Answer evaluation: a golden set over 1-4 models, a judge, the arena and the router",
                      open=False, elem_id="eval-answers"):
        from . import evaluate_answers

        answer_parts = evaluate_answers.build(backend, collection)

    def _saved_now(request: gr.Request):
        """The saved-run lists: the runs on collections this user may read."""
        try:
            saved = saved_choices(backend, user_of(backend, request))
        except Exception:
            saved = []
        first = saved[0][1] if saved else None
        return gr.update(choices=saved, value=first), gr.update(choices=saved), gr.update(choices=saved)

    return {"collection": collection,
            "on_load": [(_saved_now, [saved_dd, cmp_a, cmp_b]), *answer_parts.get("on_load", [])]}


def follow(job, progress) -> None:
    """Show a queued evaluation job's progress on ``progress`` until it finishes (both evaluation kinds)."""
    while not job.finished_event.wait(POLL_S):
        if job.state == "queued":
            progress(0.0, desc="Waiting for another evaluation to finish…")
        else:
            progress(min(max(job.progress, 0.0), 1.0), desc=(job.message or "Starting…")[:120])


__all__ = ["build", "run_live", "run_views", "drill", "compare_runs", "identify", "stop_runs", "JOBS", "follow"]
