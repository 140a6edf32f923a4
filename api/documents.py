"""Search, collections, documents and ingest jobs under /v1.

Uploads (``POST /v1/collections/{name}/documents``, multipart, many files and .zip) are saved to a
private staging directory and handed to the same background job queue as the Documents tab; the
request returns ``202`` with the job at once, and the ingest goes on whatever the client does.

Every path checks the key's user's rights on the collection first (:mod:`api.rights`): a collection they may
not read is answered as a missing one; changes need the edit right and are audited; jobs are listed, shown
and cancelled only for collections the user may change.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from . import rights
from .errors import APIError
from .middleware import size_text
from .schemas import (
    CollectionCreate,
    CollectionInfo,
    CollectionList,
    Deleted,
    DocumentList,
    JobInfo,
    JobList,
    SearchRequest,
    SearchResponse,
)
from .security import Caller
from .service import Service, admin_key, read_key, service

router = APIRouter(prefix="/v1")
_COPY_CHUNK = 1 << 20


# --- search ---------------------------------------------------------------------------------------------
def hit_fields(h) -> dict:
    """What the API says of one hit: the chunk, where it is, and the ranks and scores that put it there
    (search hits and chat citations alike)."""
    c = h.chunk
    return {"document": c.source, "doc_id": c.doc_id, "title": c.title, "page": c.page, "heading": c.heading,
            "chunk_id": c.id, "text": c.text, "start": c.start, "end": c.end, "score": float(h.score),
            "fused_rank": h.fused_rank, "dense_rank": h.dense_rank,
            "dense_score": None if h.dense_score is None else float(h.dense_score), "sparse_rank": h.sparse_rank,
            "sparse_score": None if h.sparse_score is None else float(h.sparse_score),
            "rerank_rank": h.rerank_rank,
            "rerank_score": None if h.rerank_score is None else float(h.rerank_score)}


@router.post("/search", response_model=SearchResponse, tags=["search"],
             summary="Hybrid, dense or sparse search with each hit's ranks and scores")
def search(req: SearchRequest, svc: Service = Depends(service), caller: Caller = Depends(read_key)):
    collection = req.collection or svc.settings.api.default_collection
    if not collection:
        raise APIError(422, "No collection: send \"collection\", or set api.default_collection on the server.",
                       code="invalid_value", param="collection")
    rights.check_read(svc, caller, collection)
    r, rerank = svc.backend.engine.search_reranked(collection, req.query, mode=req.mode, k=req.k)
    out = {"collection": collection, "mode": r.mode, "retrieval_ms": round(r.retrieval_ms, 3),
           "timings": {k: round(float(v), 3) for k, v in (r.timings or {}).items()},
           "hits": [{"rank": i, **hit_fields(h)} for i, h in enumerate(r.hits, 1)]}
    out["rerank"] = rerank   # None when the stage is off; else applied, or the fused order kept and why
    return out


# --- collections ------------------------------------------------------------------------------------------
def _info(svc: Service, c: dict) -> dict:
    active = [j.id for j in svc.backend.jobs.list(collection=c["name"], active=True)]
    return {**{k: c[k] for k in ("name", "version", "documents", "chunks", "embedder", "updated")},
            "active_jobs": active}


def _find(svc: Service, name: str) -> dict:
    for c in svc.backend.collections():
        if c["name"] == name:
            return c
    from rag.store import validate_name

    validate_name(name)  # a hostile name gets the naming rule, not a path
    raise rights.not_found(name)


def _not_busy(svc: Service, name: str, action: str) -> None:
    active = svc.backend.jobs.list(collection=name, active=True)
    if active:
        raise APIError(409, f"An ingest job ({active[0].id}) is {active[0].state} on {name!r}: wait for it, or cancel it with "
                            f"DELETE /v1/jobs/{active[0].id}, then {action}.", code="busy")


@router.get("/collections", response_model=CollectionList, tags=["collections"])
def list_collections(svc: Service = Depends(service), caller: Caller = Depends(read_key)):
    """The collections the key's user may read."""
    found = svc.backend.collections()
    readable = set(svc.state.readable(caller.user, [c["name"] for c in found]))
    return {"data": [_info(svc, c) for c in found if c["name"] in readable]}


@router.post("/collections", response_model=CollectionInfo, status_code=201, tags=["collections"],
             summary="Create an empty collection (editors and admins; the creator becomes its owner)")
def create_collection(req: CollectionCreate, svc: Service = Depends(service), caller: Caller = Depends(admin_key)):
    from rag.store import validate_name

    validate_name(req.name)
    rights.check_create(svc, caller, req.name)
    svc.backend.create_collection(req.name)   # 409 when it exists, 422 for a bad name
    svc.state.forget_collection(req.name)     # rights left by an earlier collection of this name go
    svc.state.set_owner(req.name, caller.user)
    rights.audit(svc, caller, "collection.create", collection=req.name)
    return _info(svc, _find(svc, req.name))


@router.get("/collections/{name}", response_model=CollectionInfo, tags=["collections"])
def get_collection(name: str, svc: Service = Depends(service), caller: Caller = Depends(read_key)):
    rights.check_read(svc, caller, name)
    return _info(svc, _find(svc, name))


@router.delete("/collections/{name}", response_model=Deleted, tags=["collections"],
               summary="Delete a collection (its owner or an admin)")
def delete_collection(name: str, svc: Service = Depends(service), caller: Caller = Depends(admin_key)):
    from rag.store.layout import collection_path

    rights.check_delete(svc, caller, name)
    if not (collection_path(name, svc.settings.data_dir) / "CURRENT").exists():  # damaged ones can be deleted too
        _find(svc, name)
    _not_busy(svc, name, "delete the collection")
    svc.backend.delete_collection(name)
    svc.state.forget_collection(name)
    rights.audit(svc, caller, "collection.delete", collection=name)
    return {"id": name, "object": "collection"}


# --- documents --------------------------------------------------------------------------------------------
@router.get("/collections/{name}/documents", response_model=DocumentList, tags=["documents"])
def list_documents(name: str, svc: Service = Depends(service), caller: Caller = Depends(read_key)):
    rights.check_read(svc, caller, name)
    _find(svc, name)
    docs = svc.backend.open(name).documents()
    return {"collection": name, "data": [{k: v for k, v in d.items() if k != "sha256"} for d in docs]}


@router.delete("/collections/{name}/documents/{doc_id:path}", response_model=Deleted, tags=["documents"])
def delete_document(name: str, doc_id: str, svc: Service = Depends(service), caller: Caller = Depends(admin_key)):
    rights.check_edit(svc, caller, name, "document.delete", document=doc_id)
    _find(svc, name)
    _not_busy(svc, name, "delete the document")
    if not svc.backend.remove_documents(name, [doc_id]):
        raise APIError(404, f"No document {doc_id!r} in {name!r}: list them with GET /v1/collections/{name}/documents.",
                       type="not_found_error", code="not_found")
    rights.audit(svc, caller, "document.delete", collection=name, document=doc_id)
    return {"id": doc_id, "object": "document"}


def _too_many(n: int | None, limit: int) -> APIError:
    return APIError(422, f"{'More than ' + str(limit) if n is None else n} files; at most {limit} per upload "
                         "(limits.max_files_per_upload). Send them in smaller batches, or as a .zip.",
                    code="invalid_value", param="files")


async def _save(upload: UploadFile, dest: Path, max_bytes: int, label: str) -> None:
    """Copy one uploaded part to ``dest`` (file I/O in a worker thread, off the event loop)."""
    size = 0
    out = await run_in_threadpool(open, dest, "wb")
    try:
        while chunk := await upload.read(_COPY_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise APIError(413, f"{label} is over the {size_text(max_bytes)} limit per file (limits.max_file_bytes): "
                                    "split it, or ask the admin to raise the limit.", code="too_large", param="files")
            await run_in_threadpool(out.write, chunk)
    finally:
        await run_in_threadpool(out.close)


@router.post("/collections/{name}/documents", status_code=202, response_model=JobInfo, tags=["documents"],
             summary="Upload files (multipart field 'files', many; .zip too): returns the ingest job at once",
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["files"],
                 "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
async def upload(name: str, request: Request, svc: Service = Depends(service), caller: Caller = Depends(admin_key)):
    lim = svc.settings.limits
    await run_in_threadpool(rights.check_edit, svc, caller, name, "document.upload")
    await run_in_threadpool(_find, svc, name)
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise APIError(415, "Send the files as multipart/form-data in a field named 'files' "
                            "(curl -F files=@a.pdf -F files=@b.zip ...).", code="unsupported_media_type")
    try:
        form = await request.form(max_files=lim.max_files_per_upload, max_fields=lim.max_files_per_upload + 16)
    except HTTPException as e:  # Starlette's multipart errors
        if e.status_code == 413:
            raise
        if "too many files" in str(e.detail).lower():
            raise _too_many(None, lim.max_files_per_upload) from None
        raise APIError(422, f"The upload is not readable multipart/form-data ({e.detail}); send the files in a "
                            "field named 'files'.", code="invalid_value", param="files") from None
    try:
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not uploads:
            raise APIError(422, "No files: send them as multipart/form-data in a field named 'files'.",
                           code="invalid_value", param="files")
        if len(uploads) > lim.max_files_per_upload:
            raise _too_many(len(uploads), lim.max_files_per_upload)
        staging = await run_in_threadpool(svc.backend.jobs.staging_dir)
        try:
            files = []
            for i, up in enumerate(uploads):
                label = up.filename or f"file {i + 1}"
                dest = staging / f"{i:05d}"  # never the client's name on disk
                await _save(up, dest, lim.max_file_bytes, label)
                files.append((up.filename or f"upload-{i + 1}", dest))
            job = svc.backend.jobs.submit(name, files, owned_dir=staging)
            await run_in_threadpool(rights.audit, svc, caller, "document.upload", collection=name,
                                    document=", ".join(f for f, _ in files)[:500],
                                    detail=f"ingest job {job.id}, {len(files)} file(s)")
        except BaseException:
            await run_in_threadpool(shutil.rmtree, staging, True)
            raise
    finally:
        await form.close()
    return JSONResponse(JobInfo(**job.to_dict()).model_dump(), status_code=202,
                        headers={"Location": f"/v1/jobs/{job.id}"})


# --- jobs -----------------------------------------------------------------------------------------------
def _job(svc: Service, caller: Caller, job_id: str):
    """The job if the caller may change its collection; else the 404 of a missing job (the same message)."""
    from ingest.jobs import JobNotFound

    job = svc.backend.jobs.get(job_id)
    if not svc.state.can_edit(caller.user, job.collection):
        raise JobNotFound(f"No ingest job with id {job_id!r}: check the id. Finished jobs are forgotten once "
                          f"{svc.backend.jobs.keep} newer ones have finished (jobs.keep in the config), and when "
                          "the server restarts.")
    return job


@router.get("/jobs", response_model=JobList, tags=["jobs"],
            summary="Ingest jobs of the collections the key's user may change, newest first")
def list_jobs(collection: str | None = None, svc: Service = Depends(service), caller: Caller = Depends(admin_key)):
    may = rights.editable_filter(svc, caller)
    return {"data": [j.to_dict() for j in svc.backend.jobs.list(collection=collection) if may(j.collection)]}


@router.get("/jobs/{job_id}", response_model=JobInfo, tags=["jobs"])
def get_job(job_id: str, svc: Service = Depends(service), caller: Caller = Depends(admin_key)):
    return _job(svc, caller, job_id).to_dict()


@router.delete("/jobs/{job_id}", response_model=JobInfo, tags=["jobs"],
               summary="Cancel a job: the collection keeps its last committed version")
def cancel_job(job_id: str, svc: Service = Depends(service), caller: Caller = Depends(admin_key)):
    job = _job(svc, caller, job_id)
    was_finished = job.finished
    job = svc.backend.jobs.cancel(job_id)
    if not was_finished:
        rights.audit(svc, caller, "upload.cancel", collection=job.collection, detail=f"ingest job {job.id}")
    return JSONResponse(JobInfo(**job.to_dict()).model_dump(), status_code=200 if job.finished else 202)


__all__ = ["router", "hit_fields"]
