"""Documents tab: collections, uploads (many files, .zip included) with a per-file result table,
the document list with chunk counts, chunk previews, and deletes.

An upload runs as a background job (``backend.jobs``, shared with the HTTP API): the handler copies the files
into a staging directory, submits them and follows the job: the result table shows each file's state as it
goes (queued, loading, embedding, committed...), and the document list refreshes whenever files of the batch
are committed (they are searchable from then on, while bigger ones still embed). If the page goes away the job
keeps running; "Cancel upload" stops the collection's jobs at their next step: files already committed stay.

Reading is open to everyone. Every change calls :func:`ui.auth.require_admin` on the server with the
credentials typed in this tab, for each action; without them the action is refused and nothing changes.
"""
from __future__ import annotations

import datetime as _dt
import logging
import shutil
from pathlib import Path

import gradio as gr

from rag.errors import InvalidInput, user_message

from .auth import (
    AdminDenied,
    admin_configured,
    client_of,
    not_configured_message,
    require_admin,
)
from .render import message_html

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["File", "Result", "Chunks", "Details"]
DOC_COLUMNS = ["Document", "Title", "Chunks", "Size", "Type", "Added"]
CHUNK_COLUMNS = ["#", "Page", "Heading", "Text"]
PREVIEW_LIMIT = 200
POLL_S = 0.5  # how often a following upload handler refreshes the progress bar
_STATUS_TEXT = {"added": "added", "replaced": "replaced (new version)", "duplicate": "skipped: duplicate",
                "failed": "failed"}
_FILE_STATE_TEXT = {"queued": "waiting", "loading": "reading", "embedding": "embedding",
                    "embedded": "embedded, saving soon", "committed": "added (searchable)",
                    "duplicate": "skipped: duplicate", "failed": "failed", "cancelled": "cancelled"}


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _size(n) -> str:
    if not n:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _when(ts) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OSError, OverflowError):
        return ""


def limits_text(settings) -> str:
    lim = settings.limits
    types = ", ".join("." + t for t in lim.allowed_types)
    return (f"Up to {lim.max_files_per_upload} files per upload, {_mib(lim.max_file_bytes)} each "
            f"(.zip archives: up to {_mib(lim.max_archive_bytes)} unpacked). Accepted: {types}.")


def file_types(settings) -> list[str]:
    return ["." + t for t in settings.limits.allowed_types]


# ------------------------------------------------------------------------------------------------
# table builders (plain lists: no markup, the Dataframe shows text as text)
# ------------------------------------------------------------------------------------------------

def result_rows(results) -> list[list]:
    rows = []
    for r in results:
        detail = r.error or "; ".join(r.details)
        status = _STATUS_TEXT.get(r.status, r.status)
        if r.status == "added" and r.documents > 1:
            status = f"added ({r.documents} documents)"
        rows.append([r.name, status, r.chunks, detail])
    return rows


def state_rows(states) -> list[list]:
    """The result table while an upload runs: one row per file (``ingest.pipeline.FileState``)."""
    rows = []
    for s in states:
        text = _FILE_STATE_TEXT.get(s.state, s.state)
        if s.state == "embedding" and s.chunks:
            text = f"embedding {s.embedded}/{s.chunks}"
        rows.append([s.name, text, s.chunks, s.detail])
    return rows


def document_rows(docs: list[dict]) -> list[list]:
    return [[d["source"], d.get("title") or "", d["chunks"], _size(d.get("bytes")), d.get("format") or "",
             _when(d.get("added_at"))] for d in docs]


def chunk_rows(chunks) -> list[list]:
    return [[i, c.page or "", c.heading or "", c.text] for i, c in enumerate(chunks, 1)]


def collection_summary(backend, name: str | None) -> str:
    if not name:
        return message_html("No collection selected. An admin can create one below.", "info")
    for c in backend.collections():
        if c["name"] == name:
            return message_html(f"{name}: {c['documents']} documents, {c['chunks']} chunks, "
                                f"embedder {c['embedder']}, updated {_when(c['updated'])}."
                                + _jobs_note(backend, name), "info")
    return message_html(f"Collection {name!r} not found." + _jobs_note(backend, name), "warn")


def _active_jobs(backend, name: str | None) -> list:
    if not name:
        return []
    try:
        return backend.jobs.list(collection=name, active=True)
    except Exception as e:  # the summary must show even if the job queue cannot start
        log.warning("cannot list the upload jobs of %s: %s", name, e)
        return []


def _jobs_note(backend, name: str | None) -> str:
    """" An upload is running: 40% — x.md (2/5)." for a collection with active jobs, else ""."""
    active = _active_jobs(backend, name)
    running = [j for j in active if j.state == "running"]
    waiting = len(active) - len(running)
    parts = []
    if running:
        j = running[0]
        parts.append(f"An upload is running: {j.progress:.0%} — {j.message or 'starting'}")
    if waiting:
        parts.append(f"{waiting} {'more ' if running else ''}upload{'s' if waiting != 1 else ''} waiting to start")
    return (" " + "; ".join(parts) + ".") if parts else ""


def _docs(backend, name: str | None) -> list[dict]:
    if not name:
        return []
    try:
        return backend.open(name).documents()
    except Exception as e:
        log.warning("cannot list documents of %s: %s", name, e)
        return []


def doc_choices(docs: list[dict]) -> list[tuple[str, str]]:
    return [(d["source"] if d["source"] == d["doc_id"] else f"{d['source']} ({d['doc_id']})", d["doc_id"])
            for d in docs]


def _doc_views(backend, name):
    docs = _docs(backend, name)
    choices = doc_choices(docs)
    return (document_rows(docs), gr.update(choices=choices, value=choices[0][1] if choices else None),
            collection_summary(backend, name))


def _names_update(backend, value=None):
    names = backend.collection_names()
    if value not in names:
        value = names[0] if names else None
    return gr.update(choices=names, value=value)


# ------------------------------------------------------------------------------------------------
# handlers (each admin one checks credentials first)
# ------------------------------------------------------------------------------------------------

def check_signin(backend, user, password, client=None) -> str:
    try:
        require_admin(user, password, backend.settings, action="sign in", client=client)
    except AdminDenied as e:
        return message_html(str(e), "error")
    return message_html(f"Signed in as {user}. Every change is checked against these credentials again.", "ok")


def create_collection(backend, user, password, name, client=None):
    name = (name or "").strip()
    try:
        require_admin(user, password, backend.settings, action="create a collection", client=client)
        if not name:
            raise InvalidInput("Type a name for the new collection first.")
        backend.create_collection(name)
    except Exception as e:
        return message_html(user_message(e, "Creating the collection"), "error"), *(gr.skip(),) * 5
    rows, docs_dd, summary = _doc_views(backend, name)
    return (message_html(f"Created collection {name!r}. Upload files into it below.", "ok"),
            _names_update(backend, name), rows, docs_dd, summary, "")


def delete_collection(backend, user, password, name, confirmed, client=None):
    try:
        require_admin(user, password, backend.settings, action="delete a collection", client=client)
        if not name:
            raise InvalidInput("Select a collection to delete.")
        if not confirmed:
            raise InvalidInput(f"Tick 'Yes, delete it' to confirm deleting {name!r} and all its documents.")
        backend.delete_collection(name)
    except Exception as e:
        msg = user_message(e, "Deleting the collection") + _busy_hint(backend, name, e)
        return message_html(msg, "error"), *(gr.skip(),) * 5
    upd = _names_update(backend, None)
    rows, docs_dd, summary = _doc_views(backend, upd["value"])
    return message_html(f"Deleted collection {name!r}.", "ok"), upd, rows, docs_dd, summary, False


def upload(backend, files, user, password, name, progress=gr.Progress(), client=None):
    """Ingest the uploaded files as a background job and follow it to the end.

    Returns (message, results, docs, doc dropdown, summary, files): the last outputs of :func:`upload_live`.
    """
    out = None
    for out in upload_live(backend, files, user, password, name, progress=progress, client=client):
        pass
    return out


def upload_live(backend, files, user, password, name, progress=gr.Progress(), client=None):
    """:func:`upload` as the tab runs it: yields (message, results, docs, doc dropdown, summary, files) while the
    job runs (each file's state in the results table; the document list after each commit), then the outcome.
    If the page goes away, the job goes on."""
    skip6 = (gr.skip(),) * 5
    files = [f for f in (files or []) if f]
    try:
        require_admin(user, password, backend.settings, action="upload files", client=client)
    except AdminDenied as e:
        yield (message_html(str(e), "error"), *skip6)
        return
    lim = backend.settings.limits
    if not name:
        yield (message_html("Select or create a collection first.", "error"), *skip6)
        return
    if not files:
        yield (message_html("Choose one or more files first (a .zip counts as one file).", "error"), *skip6)
        return
    if len(files) > lim.max_files_per_upload:
        yield (message_html(
            f"{len(files)} files selected; at most {lim.max_files_per_upload} per upload "
            "(limits.max_files_per_upload). Upload them in smaller batches, or as a .zip.", "error"), *skip6)
        return
    try:
        job = _submit_upload(backend, name, files)
        progress(0.0, desc="Queued…")
        shown, committed = None, 0
        for job in _follow(backend.jobs, job.id, progress):
            if job.finished or job.file_states is shown:
                continue
            shown = job.file_states
            now = sum(s.state == "committed" for s in shown)
            views = _doc_views(backend, name) if now != committed else (gr.skip(),) * 3
            committed = now
            yield (message_html(_live_message(job), "info"), state_rows(shown), *views, gr.skip())
    except Exception as e:
        msg = f"The upload failed and nothing was changed: {user_message(e, 'The upload')}"
        yield (message_html(msg, "error"), *skip6)
        return
    yield _upload_outcome(backend, name, job)


def _live_message(job) -> str:
    if job.state == "queued":
        return "Waiting for an earlier upload to finish…"
    n = sum(s.state == "committed" for s in job.file_states)
    return (f"Ingesting {len(job.file_states)} file{'s' if len(job.file_states) != 1 else ''}"
            + (f": {n} already added and searchable." if n else "…"))


def _submit_upload(backend, name: str, files):
    """Copy Gradio's temporary files into a staging directory the job owns, and submit them."""
    jobs = backend.jobs
    staging = jobs.staging_dir()
    try:
        items = []
        for i, f in enumerate(files):
            src = Path(f if isinstance(f, (str, Path)) else getattr(f, "name", f))
            dst = staging / f"{i:04d}"
            try:
                shutil.copyfile(src, dst)
            except OSError as e:  # the pipeline reports this file as unreadable; the others still go in
                log.warning("upload: cannot stage %s: %s", src.name, e)
                dst = src
            items.append((src.name, dst))
        return jobs.submit(name, items, owned_dir=staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _follow(jobs, job_id: str, progress, poll_s: float = POLL_S):
    """Follow a job, showing its progress on ``progress``: yields it every ``poll_s`` until it is finished,
    then once finished."""
    while True:
        job = jobs.wait(job_id, timeout=poll_s)
        yield job
        if job.finished:
            return
        if job.state == "queued":
            progress(0.0, desc="Waiting for an earlier upload to finish…")
        else:
            progress(min(max(float(job.progress), 0.0), 1.0), desc=(job.message or "Starting…")[:120])


def _upload_outcome(backend, name: str, job):
    """The upload handler's outputs for a finished job."""
    states = job.file_states
    kept = sum(s.state == "committed" for s in states)
    table = state_rows(states) or [[f, "cancelled", 0, "not ingested"] for f in job.files]
    if job.state == "failed":
        if not kept:
            msg = f"The upload failed and nothing was changed: {job.error}"
            return (message_html(msg, "error"), *(gr.skip(),) * 5)
        rows, docs_dd, summary = _doc_views(backend, name)
        msg = (f"The upload failed after {kept} file{'s' if kept != 1 else ''} had been added (they stay): "
               f"{job.error}")
        return message_html(msg, "error"), table, rows, docs_dd, summary, gr.skip()
    rows, docs_dd, summary = _doc_views(backend, name)
    if job.state == "cancelled":
        where = f" It was at: {job.message}." if job.message else " It had not started."
        what = ("the collection keeps its earlier documents." if not kept else
                f"{kept} file{'s' if kept != 1 else ''} had already been added and stay{'s' if kept == 1 else ''}; "
                "the rest were not added.")
        return (message_html(f"Cancelled: {what}" + where, "warn"), table, rows, docs_dd, summary, gr.skip())
    results = job.results
    ok = [r for r in results if r.ok]
    chunks = sum(r.chunks for r in results)
    failed = len(results) - len(ok)
    kind = "ok" if not failed else ("warn" if ok else "error")
    msg = (f"{len(ok)} of {len(results)} file{'s' if len(results) != 1 else ''} ingested into {name!r}: "
           f"{chunks} chunk{'s' if chunks != 1 else ''} added"
           + (f", {failed} failed (see the table)." if failed else "."))
    return message_html(msg, kind), result_rows(results), rows, docs_dd, summary, None


def cancel_uploads(backend, user, password, name, client=None) -> str:
    """Cancel every queued or running upload job of collection ``name`` (admin only)."""
    try:
        require_admin(user, password, backend.settings, action="cancel an upload", client=client)
        if not name:
            raise InvalidInput("Select the collection whose upload should stop first.")
        jobs = backend.jobs
        n = 0
        for job in jobs.list(collection=name, active=True):
            try:
                job = jobs.cancel(job.id)
            except KeyError:  # finished and forgotten meanwhile
                continue
            n += job.state in ("queued", "running", "cancelled")
    except Exception as e:
        return message_html(user_message(e, "Cancelling the upload"), "error")
    if not n:
        return message_html(f"No upload into {name!r} is running or waiting: nothing to cancel.", "info")
    return message_html(f"Cancelled {n} upload{'s' if n != 1 else ''} into {name!r}: a running one stops at its "
                        "next step; the files it has already added stay, the rest are not added.", "ok")


def _busy_hint(backend, name, e: Exception) -> str:
    """A lock timeout while an upload into the collection runs: say which upload and what to do."""
    from rag.store import CollectionError

    if isinstance(e, CollectionError) and _active_jobs(backend, name):
        return (f" An upload into {name!r} is still running: wait until it finishes, or press "
                "Cancel upload, then try again.")
    return ""


def delete_document(backend, user, password, name, doc_id, client=None):
    try:
        require_admin(user, password, backend.settings, action="delete a document", client=client)
        if not name or not doc_id:
            raise InvalidInput("Select a collection and a document first.")
        n = backend.remove_documents(name, [doc_id])
        if not n:
            raise InvalidInput(f"{doc_id!r} is not in {name!r} (already deleted?).")
    except Exception as e:
        msg = user_message(e, "Deleting the document") + _busy_hint(backend, name, e)
        return message_html(msg, "error"), *(gr.skip(),) * 4
    rows, docs_dd, summary = _doc_views(backend, name)
    return message_html(f"Deleted {doc_id!r} from {name!r}.", "ok"), rows, docs_dd, summary, []


def preview(backend, name, doc_id):
    if not name or not doc_id:
        return []
    try:
        return chunk_rows(backend.open(name).document_chunks(doc_id, limit=PREVIEW_LIMIT))
    except Exception as e:
        log.warning("preview failed: %s", e)
        return []


# ------------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------------

def build(backend) -> dict:
    settings = backend.settings
    names = backend.collection_names()
    first = names[0] if names else None
    with gr.Row(equal_height=False, elem_id="admin-row", elem_classes=["hr-bar"]):
        user = gr.Textbox(settings.admin.username, label="Admin user", scale=1, elem_id="admin-user",
                          max_length=200)
        password = gr.Textbox(label="Admin password", type="password", scale=2, elem_id="admin-password",
                              max_length=1000,
                              placeholder="needed for every change" if admin_configured(settings)
                              else "admin is disabled on this server")
        signin = gr.Button("Check sign-in", scale=1, elem_id="admin-signin")
    admin_msg = gr.HTML(
        message_html("Anyone can browse. Creating, uploading and deleting need the admin password.", "info")
        if admin_configured(settings) else message_html(not_configured_message(settings), "warn"),
        elem_id="admin-msg", js_on_load=None)

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### Collections")
            collection = gr.Dropdown(names, value=first, label="Collection", elem_id="docs-collection")
            summary = gr.HTML(collection_summary(backend, first), js_on_load=None)
            with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                new_name = gr.Textbox(label="New collection", placeholder="letters, digits, _ - .", scale=2,
                                      elem_id="new-collection", max_length=64)
                create = gr.Button("Create", scale=1, elem_id="create-collection")
            with gr.Accordion("Delete this collection", open=False):
                confirm = gr.Checkbox(False, label="Yes, delete it and all its documents")
                delete_col = gr.Button("Delete collection", variant="stop", elem_id="delete-collection")
        with gr.Column(scale=2, min_width=420):
            gr.Markdown("### Upload")
            files = gr.File(file_count="multiple", file_types=file_types(settings), type="filepath",
                            label="Files or .zip archives", elem_id="upload-files", height=140)
            gr.Markdown(limits_text(settings), elem_classes=["hr-hint"])
            with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                ingest_btn = gr.Button("Ingest files", variant="primary", scale=3, elem_id="ingest")
                cancel_btn = gr.Button("Cancel upload", variant="stop", scale=1, elem_id="cancel-ingest")
            action_msg = gr.HTML("", elem_id="docs-msg", js_on_load=None)
            results = gr.Dataframe(headers=RESULT_COLUMNS, value=None, label="Upload results", interactive=False,
                                   wrap=True, elem_id="upload-results", datatype="str",
                                   column_widths=["30%", "18%", "10%", "42%"])
    gr.Markdown("### Documents")
    docs0 = _docs(backend, first)
    docs_table = gr.Dataframe(value=document_rows(docs0) or None, headers=DOC_COLUMNS, interactive=False,
                              wrap=True, elem_id="docs-table", datatype="str", max_height=360)
    with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
        choices = doc_choices(docs0)
        doc = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Document", scale=3,
                          elem_id="docs-doc")
        preview_btn = gr.Button("Preview chunks", scale=1, elem_id="preview")
        delete_doc = gr.Button("Delete document", variant="stop", scale=1, elem_id="delete-doc")
    chunks = gr.Dataframe(headers=CHUNK_COLUMNS, value=preview(backend, first, choices[0][1]) if choices else None, label="Chunks", interactive=False, wrap=True,
                          elem_id="chunks-table", datatype="str", max_height=420,
                          column_widths=["6%", "8%", "20%", "66%"])

    # every admin handler takes the caller's address from Gradio's request: it keys the guessing brake
    def _signin(u, p, request: gr.Request):
        return check_signin(backend, u, p, client=client_of(request))

    signin.click(_signin, [user, password], admin_msg, api_visibility="private")
    password.submit(_signin, [user, password], admin_msg, api_visibility="private")

    def _views_and_preview(n):
        rows, dd, summ = _doc_views(backend, n)
        return rows, dd, summ, preview(backend, n, dd["value"]) or None

    def _create(u, p, n, request: gr.Request):
        return create_collection(backend, u, p, n, client=client_of(request))

    def _delete_col(u, p, n, c, request: gr.Request):
        return delete_collection(backend, u, p, n, c, client=client_of(request))

    collection.change(_views_and_preview, collection, [docs_table, doc, summary, chunks])
    ev_create = create.click(_create, [user, password, new_name],
                             [action_msg, collection, docs_table, doc, summary, new_name], api_visibility="private")
    ev_delete = delete_col.click(_delete_col, [user, password, collection, confirm],
                                 [action_msg, collection, docs_table, doc, summary, confirm], api_visibility="private")

    def _upload(f, u, p, n, request: gr.Request, progress=gr.Progress()):
        yield from upload_live(backend, f, u, p, n, progress=progress, client=client_of(request))

    up = ingest_btn.click(_upload, [files, user, password, collection],
                          [action_msg, results, docs_table, doc, summary, files], concurrency_limit=1,
                          concurrency_id="ingest", api_visibility="private")

    def _cancel(u, p, n, request: gr.Request):
        return cancel_uploads(backend, u, p, n, client=client_of(request))

    # not in the "ingest" concurrency group: it must run while the upload handler follows its job
    cancel_btn.click(_cancel, [user, password, collection], action_msg, api_visibility="private")
    preview_btn.click(lambda n, d: preview(backend, n, d), [collection, doc], chunks)
    doc.change(lambda n, d: preview(backend, n, d), [collection, doc], chunks)
    def _delete_doc(u, p, n, d, request: gr.Request):
        return delete_document(backend, u, p, n, d, client=client_of(request))

    delete_doc.click(_delete_doc, [user, password, collection, doc],
                     [action_msg, docs_table, doc, summary, chunks], concurrency_limit=1, concurrency_id="ingest",
                     api_visibility="private")

    def _pick(evt: gr.SelectData, n):
        try:
            row = evt.index[0]
            return _docs(backend, n)[row]["doc_id"]
        except Exception:
            return gr.skip()

    docs_table.select(_pick, [collection], doc)
    return {"collection": collection, "changed": [ev_create, ev_delete, up], "docs_views": (
        _views_and_preview, [docs_table, doc, summary, chunks])}
