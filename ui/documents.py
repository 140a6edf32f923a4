"""Documents tab: collections, uploads (many files, .zip included) with a per-file result table,
the document list with chunk counts, chunk previews, and deletes.

An upload runs as a background job (``backend.jobs``, shared with the HTTP API): the handler copies the files
into a staging directory, submits them and follows the job: the result table shows each file's state as it
goes (queued, loading, embedding, committed...), and the document list refreshes whenever files of the batch
are committed (they are searchable from then on, while bigger ones still embed). If the page goes away the job
keeps running; "Cancel upload" stops the collection's jobs at their next step: files already committed stay.

Every handler takes the Gradio request, finds the signed-in user (:func:`ui.session.user_of`) and checks the
user's rights on the server (:mod:`ui.auth`, :class:`rag.state.State`) for each action: the collection list
holds only the collections the user may read; document lists and chunk previews need read rights; uploads,
document deletes and cancels need edit rights (owner, editor or admin); creating a collection needs the editor
or admin role (the creator becomes its owner); deleting one needs its owner or an admin. Changes, and refused
attempts at them, go to the audit log.
"""
from __future__ import annotations

import datetime as _dt
import logging
import shutil
from pathlib import Path

import gradio as gr

from rag.errors import InvalidInput, user_message

from . import auth
from .render import message_html
from .session import readable_names, user_of

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


def collection_summary(backend, name: str | None, user=None) -> str:
    if not name:
        return message_html("No collection selected." + (" Create one below." if user is not None and
                                                         user.role in auth.CREATORS else ""), "info")
    note = ""
    if user is not None:
        note = " You: " + auth.rights_note(backend.state, user, name) + "."
    for c in backend.collections():
        if c["name"] == name:
            return message_html(f"{name}: {c['documents']} documents, {c['chunks']} chunks, "
                                f"embedder {c['embedder']}, updated {_when(c['updated'])}." + note
                                + _jobs_note(backend, name), "info")
    return message_html(f"Collection {name!r} not found." + _jobs_note(backend, name), "warn")


def _readable(backend, user, name: str | None) -> bool:
    return bool(name) and backend.state.can_read(user, name)


def _doc_views(backend, user, name):
    """(document rows, document dropdown, summary) of ``name`` as ``user`` may see it: nothing when they may not
    read it."""
    if name and not _readable(backend, user, name):
        return ([], gr.update(choices=[], value=None),
                message_html(f"You may not read {name!r}: ask its owner or an admin for access.", "warn"))
    docs = _docs(backend, name)
    choices = doc_choices(docs)
    return (document_rows(docs), gr.update(choices=choices, value=choices[0][1] if choices else None),
            collection_summary(backend, name, user))


def _names_update(backend, user, value=None):
    names = readable_names(backend, user)
    if value not in names:
        value = names[0] if names else None
    return gr.update(choices=names, value=value)


# ------------------------------------------------------------------------------------------------
# handlers: each finds the signed-in user and checks the right for its action on the server
# ------------------------------------------------------------------------------------------------

def whoami(backend, request) -> str:
    """The line at the top of the tab: who is signed in and what their role lets them do here."""
    try:
        user = user_of(backend, request)
    except Exception as e:
        return message_html(user_message(e, "Checking the session"), "error")
    can = {"admin": "you may change every collection and manage users (Admin tab)",
           "editor": "you may create collections and change the ones you own or edit",
           "reader": "you may browse the collections you were given; changes need an editor or admin"}
    return message_html(f"Signed in as {user.name} ({user.role}): {can.get(user.role, '')}.", "info")


def views(backend, request, name):
    """(document rows, document dropdown, summary) for the selected collection, with read rights checked."""
    try:
        user = user_of(backend, request)
    except Exception as e:
        return [], gr.update(choices=[], value=None), message_html(user_message(e, "Listing documents"), "error")
    return _doc_views(backend, user, name)


def create_collection(backend, request, name):
    from rag.store import validate_name

    name = (name or "").strip()
    user, valid = None, False
    try:
        user = user_of(backend, request)
        backend.state.require_create(user)
        if not name:
            raise InvalidInput("Type a name for the new collection first.")
        valid = bool(validate_name(name))
        backend.create_collection(name)
        backend.state.forget_collection(name)   # rights left on this name (an earlier collection, a grant) go,
        backend.state.set_owner(name, user)     # as the API does: the creator owns it and nobody else has rights
    except Exception as e:
        if user is not None and name and (valid or isinstance(e, PermissionError)):  # not for a mistyped name
            auth.audit(backend, user, "collection.create", collection=name[:64], result=auth.outcome(e), detail=str(e))
        return message_html(user_message(e, "Creating the collection"), "error"), *(gr.skip(),) * 5
    auth.audit(backend, user, "collection.create", collection=name)
    rows, docs_dd, summary = _doc_views(backend, user, name)
    return (message_html(f"Created collection {name!r}; you own it. Upload files into it below.", "ok"),
            _names_update(backend, user, name), rows, docs_dd, summary, "")


def delete_collection(backend, request, name, confirmed):
    user = None
    try:
        user = user_of(backend, request)
        if not name:
            raise InvalidInput("Select a collection to delete.")
        backend.state.require_delete_collection(user, name)
        if not confirmed:
            raise InvalidInput(f"Tick 'Yes, delete it' to confirm deleting {name!r} and all its documents.")
        backend.delete_collection(name)
        backend.state.forget_collection(name)
    except Exception as e:
        if user is not None and name and not isinstance(e, InvalidInput):
            auth.audit(backend, user, "collection.delete", collection=name, result=auth.outcome(e), detail=str(e))
        msg = user_message(e, "Deleting the collection") + _busy_hint(backend, name, e)
        return message_html(msg, "error"), *(gr.skip(),) * 5
    auth.audit(backend, user, "collection.delete", collection=name)
    upd = _names_update(backend, user, None)
    rows, docs_dd, summary = _doc_views(backend, user, upd["value"])
    return message_html(f"Deleted collection {name!r}.", "ok"), upd, rows, docs_dd, summary, False


def upload(backend, request, files, name, progress=gr.Progress()):
    """Ingest the uploaded files as a background job and follow it to the end.

    Returns (message, results, docs, doc dropdown, summary, files): the last outputs of :func:`upload_live`.
    """
    out = None
    for out in upload_live(backend, request, files, name, progress=progress):
        pass
    return out


def upload_live(backend, request, files, name, progress=gr.Progress()):
    """:func:`upload` as the tab runs it: yields (message, results, docs, doc dropdown, summary, files) while the
    job runs (each file's state in the results table; the document list after each commit), then the outcome.
    If the page goes away, the job goes on."""
    skip6 = (gr.skip(),) * 5
    files = [f for f in (files or []) if f]
    lim = backend.settings.limits
    user = None
    try:
        user = user_of(backend, request)
        if not name:
            raise InvalidInput("Select or create a collection first.")
        backend.state.require_edit(user, name)
    except Exception as e:
        if user is not None and name:
            auth.audit(backend, user, "document.upload", collection=name, result=auth.outcome(e), detail=str(e))
        yield (message_html(user_message(e, "The upload"), "error"), *skip6)
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
            views_now = _doc_views(backend, user, name) if now != committed else (gr.skip(),) * 3
            committed = now
            yield (message_html(_live_message(job), "info"), state_rows(shown), *views_now, gr.skip())
    except Exception as e:
        auth.audit(backend, user, "document.upload", collection=name, result="failed", detail=str(e))
        msg = f"The upload failed and nothing was changed: {user_message(e, 'The upload')}"
        yield (message_html(msg, "error"), *skip6)
        return
    names = ", ".join(job.files)
    ok = sum(s.state == "committed" for s in job.file_states)
    auth.audit(backend, user, "document.upload", collection=name, document=names[:500],
               result={"done": "ok", "cancelled": "cancelled"}.get(job.state, "failed"),
               detail=f"job {job.id}: {ok} of {len(job.files)} files added" + (f"; {job.error}" if job.error else ""))
    yield _upload_outcome(backend, user, name, job)


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


def _upload_outcome(backend, user, name: str, job):
    """The upload handler's outputs for a finished job."""
    states = job.file_states
    kept = sum(s.state == "committed" for s in states)
    table = state_rows(states) or [[f, "cancelled", 0, "not ingested"] for f in job.files]
    if job.state == "failed":
        if not kept:
            msg = f"The upload failed and nothing was changed: {job.error}"
            return (message_html(msg, "error"), *(gr.skip(),) * 5)
        rows, docs_dd, summary = _doc_views(backend, user, name)
        msg = (f"The upload failed after {kept} file{'s' if kept != 1 else ''} had been added (they stay): "
               f"{job.error}")
        return message_html(msg, "error"), table, rows, docs_dd, summary, gr.skip()
    rows, docs_dd, summary = _doc_views(backend, user, name)
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


def cancel_uploads(backend, request, name) -> str:
    """Cancel every queued or running upload job of collection ``name`` (its owner, editors and admins)."""
    user = None
    try:
        user = user_of(backend, request)
        if not name:
            raise InvalidInput("Select the collection whose upload should stop first.")
        backend.state.require_edit(user, name)
        jobs = backend.jobs
        n = 0
        for job in jobs.list(collection=name, active=True):
            try:
                job = jobs.cancel(job.id)
            except KeyError:  # finished and forgotten meanwhile
                continue
            n += job.state in ("queued", "running", "cancelled")
    except Exception as e:
        if user is not None and name and not isinstance(e, InvalidInput):
            auth.audit(backend, user, "upload.cancel", collection=name, result=auth.outcome(e), detail=str(e))
        return message_html(user_message(e, "Cancelling the upload"), "error")
    if not n:
        return message_html(f"No upload into {name!r} is running or waiting: nothing to cancel.", "info")
    auth.audit(backend, user, "upload.cancel", collection=name, detail=f"{n} upload(s)")
    return message_html(f"Cancelled {n} upload{'s' if n != 1 else ''} into {name!r}: a running one stops at its "
                        "next step; the files it has already added stay, the rest are not added.", "ok")


def _busy_hint(backend, name, e: Exception) -> str:
    """A lock timeout while an upload into the collection runs: say which upload and what to do."""
    from rag.store import CollectionError

    if isinstance(e, CollectionError) and _active_jobs(backend, name):
        return (f" An upload into {name!r} is still running: wait until it finishes, or press "
                "Cancel upload, then try again.")
    return ""


def delete_document(backend, request, name, doc_id):
    user = None
    try:
        user = user_of(backend, request)
        if not name or not doc_id:
            raise InvalidInput("Select a collection and a document first.")
        backend.state.require_edit(user, name)
        n = backend.remove_documents(name, [doc_id])
        if not n:
            raise InvalidInput(f"{doc_id!r} is not in {name!r} (already deleted?).")
    except Exception as e:
        if user is not None and name and doc_id:
            auth.audit(backend, user, "document.delete", collection=name, document=str(doc_id)[:500],
                       result=auth.outcome(e), detail=str(e))
        msg = user_message(e, "Deleting the document") + _busy_hint(backend, name, e)
        return message_html(msg, "error"), *(gr.skip(),) * 4
    auth.audit(backend, user, "document.delete", collection=name, document=doc_id)
    rows, docs_dd, summary = _doc_views(backend, user, name)
    return message_html(f"Deleted {doc_id!r} from {name!r}.", "ok"), rows, docs_dd, summary, []


def preview(backend, request, name, doc_id):
    """The document's chunks, when the user may read the collection; else nothing."""
    if not name or not doc_id:
        return []
    try:
        user = user_of(backend, request)
        if not backend.state.can_read(user, name):
            return []
        return chunk_rows(backend.open(name).document_chunks(doc_id, limit=PREVIEW_LIMIT))
    except Exception as e:
        log.warning("preview failed: %s", e)
        return []


# ------------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------------

def build(backend) -> dict:
    """The tab. It is built once for everybody, with no collection in it: the page's load event fills the
    collection list with what the signed-in user may read (``load``)."""
    settings = backend.settings
    me = gr.HTML("", elem_id="docs-whoami", js_on_load=None)

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### Collections")
            collection = gr.Dropdown([], value=None, label="Collection", elem_id="docs-collection")
            summary = gr.HTML("", js_on_load=None, elem_id="docs-summary")
            with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                new_name = gr.Textbox(label="New collection", placeholder="letters, digits, _ - .", scale=2,
                                      elem_id="new-collection", max_length=64)
                create = gr.Button("Create", scale=1, elem_id="create-collection")
            with gr.Accordion("Delete this collection", open=False):
                confirm = gr.Checkbox(False, label="Yes, delete it and all its documents", elem_id="confirm-delete")
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
    docs_table = gr.Dataframe(value=None, headers=DOC_COLUMNS, interactive=False,
                              wrap=True, elem_id="docs-table", datatype="str", max_height=360)
    with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
        doc = gr.Dropdown([], value=None, label="Document", scale=3, elem_id="docs-doc")
        preview_btn = gr.Button("Preview chunks", scale=1, elem_id="preview")
        delete_doc = gr.Button("Delete document", variant="stop", scale=1, elem_id="delete-doc")
    chunks = gr.Dataframe(headers=CHUNK_COLUMNS, value=None, label="Chunks", interactive=False, wrap=True,
                          elem_id="chunks-table", datatype="str", max_height=420,
                          column_widths=["6%", "8%", "20%", "66%"])

    # every handler takes Gradio's request: the signed-in user, whose rights are checked on the server
    def _views_and_preview(n, request: gr.Request):
        rows, dd, summ = views(backend, request, n)
        return rows, dd, summ, preview(backend, request, n, dd["value"]) or None

    def _create(n, request: gr.Request):
        return create_collection(backend, request, n)

    def _delete_col(n, c, request: gr.Request):
        return delete_collection(backend, request, n, c)

    collection.change(_views_and_preview, collection, [docs_table, doc, summary, chunks], api_visibility="private")
    ev_create = create.click(_create, [new_name], [action_msg, collection, docs_table, doc, summary, new_name],
                             api_visibility="private")
    ev_delete = delete_col.click(_delete_col, [collection, confirm],
                                 [action_msg, collection, docs_table, doc, summary, confirm], api_visibility="private")

    def _upload(f, n, request: gr.Request, progress=gr.Progress()):
        yield from upload_live(backend, request, f, n, progress=progress)

    up = ingest_btn.click(_upload, [files, collection], [action_msg, results, docs_table, doc, summary, files],
                          concurrency_limit=1, concurrency_id="ingest", api_visibility="private")

    def _cancel(n, request: gr.Request):
        return cancel_uploads(backend, request, n)

    # not in the "ingest" concurrency group: it must run while the upload handler follows its job
    cancel_btn.click(_cancel, [collection], action_msg, api_visibility="private")

    def _preview(n, d, request: gr.Request):
        return preview(backend, request, n, d)

    preview_btn.click(_preview, [collection, doc], chunks, api_visibility="private")
    doc.change(_preview, [collection, doc], chunks, api_visibility="private")

    def _delete_doc(n, d, request: gr.Request):
        return delete_document(backend, request, n, d)

    delete_doc.click(_delete_doc, [collection, doc], [action_msg, docs_table, doc, summary, chunks],
                     concurrency_limit=1, concurrency_id="ingest", api_visibility="private")

    def _pick(evt: gr.SelectData, n, request: gr.Request):
        try:
            user = user_of(backend, request)
            if not backend.state.can_read(user, n):
                return gr.skip()
            row = evt.index[0]
            return _docs(backend, n)[row]["doc_id"]
        except Exception:
            return gr.skip()

    docs_table.select(_pick, [collection], doc, api_visibility="private")

    def _whoami(request: gr.Request):
        return whoami(backend, request)

    return {"collection": collection, "changed": [ev_create, ev_delete, up],
            "docs_views": (_views_and_preview, [docs_table, doc, summary, chunks]),
            "whoami": (_whoami, [me])}
