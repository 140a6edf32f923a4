"""What the caller's user may do with a collection, asked of the state database (:mod:`rag.state`) on every
request, so a right granted, revoked or a role changed counts from the next request.

Reading (search, chat retrieval, a collection, its documents) needs the read right; changing (upload, delete a
document, jobs) the edit right; deleting a collection its owner or an admin; creating one an editor or admin
(who becomes its owner). The key's scope is checked before any of this (:mod:`api.security`): a read key
never writes, whoever its user is.

A collection the user may not read answers exactly as a missing one does (404, the same message), so a
key cannot learn which collections exist; one they may read but not change answers 403 with what is missing.
The one exception is creating a collection whose name is taken (409): names are shared by everyone.

Changes and refused changes go to the audit log (actor: the key's user; detail: the key's name).
"""
from __future__ import annotations

from rag.store import CollectionNotFound, validate_name

from .security import Caller


def not_found(name: str) -> CollectionNotFound:
    """The error for a missing collection, and for one the caller may not read (the same, on purpose)."""
    return CollectionNotFound(f"No collection named {name!r}: list them with GET /v1/collections, or create it "
                              "with POST /v1/collections.", name=name)


def audit(svc, caller: Caller, action: str, *, collection: str | None = None, document: str | None = None,
          result: str = "ok", detail: str = "") -> None:
    """Append to the audit log (the same action names as the web app's); a failure to write it is logged,
    never the action's failure."""
    svc.state.try_audit(caller.user, action, collection=collection, document=document, result=result,
                        detail=(f"API key {caller.name!r}" + (f"; {detail}" if detail else ""))[:2000])


def check_read(svc, caller: Caller, name: str) -> None:
    """Return if the caller may read ``name``; else the 404 of a missing collection (422 for a bad name)."""
    validate_name(name)  # a hostile name gets the naming rule, whatever the rights
    if not svc.state.can_read(caller.user, name):
        raise not_found(name)


def check_edit(svc, caller: Caller, name: str, action: str, *, document: str | None = None) -> None:
    """Return if the caller may change ``name`` (upload, delete documents, its jobs); else 404 when they may
    not even read it, 403 (:class:`rag.state.AccessDenied`) when they may only read it. Refusals are audited."""
    from rag.state import AccessDenied

    try:
        check_read(svc, caller, name)
        svc.state.require_edit(caller.user, name)
    except (CollectionNotFound, AccessDenied) as e:
        audit(svc, caller, action, collection=name, document=document, result="denied", detail=str(e))
        raise


def check_delete(svc, caller: Caller, name: str) -> None:
    """The owner of ``name`` or an admin may delete it; 404 for those who may not read it, else 403."""
    from rag.state import AccessDenied

    try:
        check_read(svc, caller, name)
        svc.state.require_delete_collection(caller.user, name)
    except (CollectionNotFound, AccessDenied) as e:
        audit(svc, caller, "collection.delete", collection=name, result="denied", detail=str(e))
        raise


def check_create(svc, caller: Caller, name: str) -> None:
    """Editors and admins may create collections; readers get 403."""
    from rag.state import AccessDenied

    try:
        svc.state.require_create(caller.user)
    except AccessDenied as e:
        audit(svc, caller, "collection.create", collection=name, result="denied", detail=str(e))
        raise


def editable_filter(svc, caller: Caller):
    """A predicate on collection names: whether the caller may change it (one state query per name)."""
    seen: dict[str, bool] = {}

    def ok(name: str) -> bool:
        if name not in seen:
            seen[name] = bool(svc.state.can_edit(caller.user, name))
        return seen[name]

    return ok


__all__ = ["check_read", "check_edit", "check_delete", "check_create", "editable_filter", "audit", "not_found"]
