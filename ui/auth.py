"""Rights in the web app: the one place a tab asks whether the signed-in user may do something.

Every Documents, Evaluate and Admin handler starts with :func:`ui.session.user_of` (the account behind the
request's session) and then calls one of these, on the server, for every action; hiding a button in the page is
cosmetic. The rules live in :class:`rag.state.State` (``require_read``/``require_edit``/``access``):

- admins may do everything;
- editors may create collections (they become the owner) and upload to, delete documents from and cancel
  uploads into collections they own or were made editors of; an owner may also delete the collection;
- readers read the collections granted to them and the public ones.

Each change is written to the audit log (:func:`audit`) with its result, refusals included. There is no shared
admin password any more: accounts are made with ``hybrid-rag users add`` or in the Admin tab.
"""
from __future__ import annotations

CREATORS = ("admin", "editor")


def rights_note(state, user, collection: str | None) -> str:
    """One line for the Documents tab: what this user may do with ``collection``."""
    what = {"admin": "you may change everything (admin)", "owner": "you own it: upload, delete documents, delete it",
            "editor": "you may upload and delete documents (editor)", "reader": "you may read it"}
    if not collection:
        return ""
    return what.get(state.access(user, collection) or "", "you may not read it")


def audit(backend, user, action: str, *, collection=None, document=None, result: str = "ok",
          detail: str = "") -> None:
    """Append to the audit log (:meth:`rag.state.State.try_audit`: a failure to write it is logged, never shown
    as the action's failure)."""
    backend.state.try_audit(user, action, collection=collection, document=document, result=result,
                            detail=str(detail)[:2000])


def outcome(e: BaseException | None) -> str:
    """The audit ``result`` of an action that raised ``e`` (None: it worked): :func:`rag.state.audit.outcome`."""
    from rag.state.audit import outcome as _outcome

    return _outcome(e)


__all__ = ["CREATORS", "rights_note", "audit", "outcome"]
