"""Admin tab: accounts, rights on collections, and the audit log. For admins only.

The tab is built once for everybody; the page's load event hides it from users who are not admins, and every
handler refuses them on the server anyway (:meth:`rag.state.State.require_admin`), whatever the page sends. Each change
goes to the audit log (refused attempts too), which this tab shows (newest first, filterable) and exports as CSV.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import gradio as gr

from rag.errors import InvalidInput, user_message

from . import auth
from .render import message_html
from .session import user_of

log = logging.getLogger(__name__)

ROLES = ("admin", "editor", "reader")
USER_COLUMNS = ["User", "Role"]
RIGHTS_COLUMNS = ["Collection", "Owner", "Public", "Editors", "Readers"]
AUDIT_COLUMNS = ["When", "Who", "Action", "Collection", "Document", "Result", "Detail"]
AUDIT_LIMIT = 500


def _admin(backend, request, action: str):
    user = user_of(backend, request)
    try:
        backend.state.require_admin(user)
    except PermissionError as e:
        auth.audit(backend, user, "admin.refused", result="denied", detail=f"{action}: {e}")
        raise
    return user


# -- views ---------------------------------------------------------------------------------------------------------

def user_rows(state) -> list[list]:
    return [[u.name, u.role] for u in state.list_users()]


def rights_rows(backend) -> list[list]:
    state = backend.state
    out = []
    for name in backend.collection_names():
        r = state.collection_rights(name)
        out.append([name, r.get("owner") or "", "yes" if r.get("public") else "", ", ".join(r.get("editors") or []),
                    ", ".join(r.get("readers") or [])])
    return out


def _when(row: dict) -> str:
    ts = row.get("time") or row.get("ts") or ""
    if isinstance(ts, (int, float)):
        import datetime as dt

        return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    return str(ts)[:19].replace("T", " ")


def audit_rows(entries: list[dict]) -> list[list]:
    return [[_when(r), r.get("actor") or "", r.get("action") or "", r.get("collection") or "",
             r.get("document") or "", r.get("result") or "", r.get("detail") or ""] for r in entries]


def _filters(actor, action, collection) -> dict:
    return {k: (v or "").strip() or None for k, v in (("actor", actor), ("action", action),
                                                      ("collection", collection))}


def refresh(backend, request, actor="", action="", collection=""):
    """(message, users table, user dropdown, rights table, collection dropdown, audit table)."""
    try:
        _admin(backend, request, "see the Admin tab")
        state = backend.state
        users = user_rows(state)
        names = backend.collection_names()
        entries = state.audit_log(limit=AUDIT_LIMIT, **_filters(actor, action, collection))
    except Exception as e:
        return (message_html(user_message(e, "The Admin tab"), "error"), [], gr.update(choices=[], value=None), [],
                gr.update(choices=[], value=None), [])
    return (message_html(f"{len(users)} accounts, {len(names)} collections.", "info"), users,
            gr.update(choices=[u[0] for u in users], value=None), rights_rows(backend),
            gr.update(choices=names, value=names[0] if names else None), audit_rows(entries))


# -- users ---------------------------------------------------------------------------------------------------------

def _users_out(backend, msg, kind, select=None):
    state = backend.state
    users = user_rows(state)
    return (message_html(msg, kind), users, gr.update(choices=[u[0] for u in users], value=select),
            audit_rows(state.audit_log(limit=AUDIT_LIMIT)))


def _failed(backend, user, action_name, e, target=None):
    if user is not None:
        auth.audit(backend, user, action_name, result=auth.outcome(e), detail=f"{target or ''}: {e}"[:2000])
    return (message_html(user_message(e, "The change"), "error"), gr.skip(), gr.skip(), gr.skip())


def add_user(backend, request, name, role, password):
    """(message, users table, user dropdown, audit table)."""
    admin, name = None, (name or "").strip()
    try:
        admin = _admin(backend, request, "add users")
        if role not in ROLES:
            raise InvalidInput(f"Pick a role: {', '.join(ROLES)}.")
        new = backend.state.add_user(name, password or "", role)
    except Exception as e:
        return _failed(backend, admin, "user.add", e, name[:64])
    auth.audit(backend, admin, "user.add", detail=f"{new.name} ({new.role})")
    return _users_out(backend, f"Added {new.name} ({new.role}).", "ok", new.name)


def set_role(backend, request, name, role):
    admin = None
    try:
        admin = _admin(backend, request, "change roles")
        if not name:
            raise InvalidInput("Pick a user first.")
        if role not in ROLES:
            raise InvalidInput(f"Pick a role: {', '.join(ROLES)}.")
        old = backend.state.get_user(name)
        u = backend.state.set_role(name, role)
    except Exception as e:
        return _failed(backend, admin, "user.set_role", e, name)
    auth.audit(backend, admin, "user.set_role", detail=f"{u.name}: {old.role if old else '?'} -> {u.role}")
    return _users_out(backend, f"{u.name} is now {u.role}.", "ok", u.name)


def reset_password(backend, request, name, password):
    admin = None
    try:
        admin = _admin(backend, request, "reset passwords")
        if not name:
            raise InvalidInput("Pick a user first.")
        backend.state.reset_password(name, password or "")
    except Exception as e:
        return _failed(backend, admin, "user.reset_password", e, name)
    auth.audit(backend, admin, "user.reset_password", detail=f"{name} (their sessions were ended)")
    return _users_out(backend, f"New password set for {name}; their sessions were ended.", "ok", name)


def remove_user(backend, request, name, confirmed):
    admin = None
    try:
        admin = _admin(backend, request, "remove users")
        if not name:
            raise InvalidInput("Pick a user first.")
        if not confirmed:
            raise InvalidInput(f"Tick 'Yes, remove' to confirm removing {name!r} (their conversations, keys and "
                               "rights go too).")
        if name == admin.name:
            raise InvalidInput("You cannot remove your own account here; another admin can.")
        backend.state.remove_user(name)
    except Exception as e:
        return _failed(backend, admin, "user.remove", e, name)
    auth.audit(backend, admin, "user.remove", detail=name)
    return _users_out(backend, f"Removed {name}.", "ok")


# -- rights ----------------------------------------------------------------------------------------------------------

def _rights_out(backend, msg, kind):
    return (message_html(msg, kind), rights_rows(backend), audit_rows(backend.state.audit_log(limit=AUDIT_LIMIT)))


def _rights_failed(backend, admin, action, e, collection):
    if admin is not None:
        auth.audit(backend, admin, action, collection=collection or None, result=auth.outcome(e), detail=str(e))
    return message_html(user_message(e, "The change"), "error"), gr.skip(), gr.skip()


def _known(backend, collection):
    if not collection:
        raise InvalidInput("Pick a collection first.")
    if collection not in backend.collection_names():
        raise InvalidInput(f"No collection named {collection!r}.")


def grant(backend, request, collection, name, as_):
    """(message, rights table, audit table)."""
    admin = None
    try:
        admin = _admin(backend, request, "grant rights")
        _known(backend, collection)
        if not name:
            raise InvalidInput("Pick a user first.")
        if as_ not in ("reader", "editor"):
            raise InvalidInput("Grant as reader or editor.")
        backend.state.grant(collection, name, as_)
    except Exception as e:
        return _rights_failed(backend, admin, "rights.grant", e, collection)
    auth.audit(backend, admin, "rights.grant", collection=collection, detail=f"{name} as {as_}")
    return _rights_out(backend, f"{name} may now {'change' if as_ == 'editor' else 'read'} {collection!r} ({as_}).",
                       "ok")


def revoke(backend, request, collection, name):
    admin = None
    try:
        admin = _admin(backend, request, "revoke rights")
        _known(backend, collection)
        if not name:
            raise InvalidInput("Pick a user first.")
        backend.state.revoke(collection, name)
    except Exception as e:
        return _rights_failed(backend, admin, "rights.revoke", e, collection)
    auth.audit(backend, admin, "rights.revoke", collection=collection, detail=name)
    return _rights_out(backend, f"{name} no longer has rights on {collection!r} (public collections stay readable).",
                       "ok")


def set_public(backend, request, collection, public):
    admin = None
    try:
        admin = _admin(backend, request, "make collections public")
        _known(backend, collection)
        backend.state.set_public(collection, bool(public))
    except Exception as e:
        return _rights_failed(backend, admin, "rights.public", e, collection)
    auth.audit(backend, admin, "rights.public", collection=collection, detail="public" if public else "not public")
    return _rights_out(backend, f"{collection!r} is {'now readable by every signed-in user' if public else 'no longer public'}.",
                       "ok")


# -- audit -----------------------------------------------------------------------------------------------------------

def audit_view(backend, request, actor, action, collection):
    """(message, audit table, CSV file) with the filters applied."""
    try:
        _admin(backend, request, "read the audit log")
        f = _filters(actor, action, collection)
        rows = audit_rows(backend.state.audit_log(limit=AUDIT_LIMIT, **f))
        csv = backend.state.audit_csv(**f)
    except Exception as e:
        return message_html(user_message(e, "The audit log"), "error"), gr.skip(), None
    d = Path(tempfile.mkdtemp(prefix="hybrid-rag-audit-"))
    path = d / "audit-log.csv"
    path.write_text(csv, encoding="utf-8")
    shown = f"the newest {AUDIT_LIMIT}" if len(rows) >= AUDIT_LIMIT else f"{len(rows)}"
    return message_html(f"Audit log: {shown} entries shown; the CSV has every matching entry.", "info"), rows, str(path)


# -- layout ----------------------------------------------------------------------------------------------------------

def build(backend) -> dict:
    msg = gr.HTML("", elem_id="admin-msg", js_on_load=None)
    with gr.Accordion("Users", open=True, elem_id="admin-users-section"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                users = gr.Dataframe(headers=USER_COLUMNS, value=None, interactive=False, elem_id="admin-users",
                                     datatype="str", max_height=320)
            with gr.Column(scale=3, min_width=420):
                with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                    new_name = gr.Textbox(label="New user", max_length=64, elem_id="admin-new-user", scale=2)
                    new_role = gr.Dropdown(list(ROLES), value="reader", label="Role", elem_id="admin-new-role",
                                           scale=1)
                    new_pw = gr.Textbox(label="Password (8+ characters)", type="password", max_length=1000,
                                        elem_id="admin-new-password", scale=2)
                    add_btn = gr.Button("Add user", elem_id="admin-add-user", scale=1)
                with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                    who = gr.Dropdown([], value=None, label="User", elem_id="admin-user", scale=2)
                    role = gr.Dropdown(list(ROLES), value="reader", label="Role", elem_id="admin-role", scale=1)
                    role_btn = gr.Button("Set role", elem_id="admin-set-role", scale=1)
                with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                    reset_pw = gr.Textbox(label="New password", type="password", max_length=1000,
                                          elem_id="admin-reset-password", scale=3)
                    reset_btn = gr.Button("Reset password", elem_id="admin-reset", scale=1)
                with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
                    confirm = gr.Checkbox(False, label="Yes, remove this user", elem_id="admin-confirm-remove",
                                          scale=3)
                    remove_btn = gr.Button("Remove user", variant="stop", elem_id="admin-remove", scale=1)
    with gr.Accordion("Rights on collections", open=True, elem_id="admin-rights-section"):
        rights = gr.Dataframe(headers=RIGHTS_COLUMNS, value=None, interactive=False, elem_id="admin-rights",
                              datatype="str", max_height=320)
        with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
            col = gr.Dropdown([], value=None, label="Collection", elem_id="admin-collection", scale=2)
            grantee = gr.Textbox(label="User", max_length=64, elem_id="admin-grantee", scale=2)
            as_ = gr.Radio(["reader", "editor"], value="reader", label="As", elem_id="admin-as", scale=1)
            grant_btn = gr.Button("Grant", elem_id="admin-grant", scale=1)
            revoke_btn = gr.Button("Revoke", elem_id="admin-revoke", scale=1)
        with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
            public = gr.Checkbox(False, label="Public: every signed-in user may read it", elem_id="admin-public",
                                 scale=3)
            public_btn = gr.Button("Save public setting", elem_id="admin-set-public", scale=1)
    with gr.Accordion("Audit log", open=True, elem_id="admin-audit-section"):
        with gr.Row(equal_height=False, elem_classes=["hr-bar"]):
            f_actor = gr.Textbox(label="Who", max_length=200, elem_id="audit-actor", scale=1)
            f_action = gr.Textbox(label="Action", max_length=200, elem_id="audit-action", scale=1)
            f_col = gr.Textbox(label="Collection", max_length=200, elem_id="audit-collection", scale=1)
            audit_btn = gr.Button("Show / export CSV", elem_id="audit-refresh", scale=1)
        audit_msg = gr.HTML("", js_on_load=None, elem_id="audit-msg")
        audit_table = gr.Dataframe(headers=AUDIT_COLUMNS, value=None, interactive=False, elem_id="audit-table",
                                   datatype="str", wrap=True, max_height=420)
        audit_csv = gr.File(label="Audit log CSV", interactive=False, elem_id="audit-csv")

    user_outs = [msg, users, who, audit_table]
    rights_outs = [msg, rights, audit_table]

    def _add(n, r, p, request: gr.Request):
        return add_user(backend, request, n, r, p)

    def _role(n, r, request: gr.Request):
        return set_role(backend, request, n, r)

    def _reset(n, p, request: gr.Request):
        return reset_password(backend, request, n, p)

    def _remove(n, c, request: gr.Request):
        return remove_user(backend, request, n, c)

    def _grant(c, n, a, request: gr.Request):
        return grant(backend, request, c, n, a)

    def _revoke(c, n, request: gr.Request):
        return revoke(backend, request, c, n)

    def _public(c, p, request: gr.Request):
        return set_public(backend, request, c, p)

    def _audit(a, b, c, request: gr.Request):
        return audit_view(backend, request, a, b, c)

    def _col_public(c, request: gr.Request):
        try:
            _admin(backend, request, "see rights")
            return bool(backend.state.collection_rights(c).get("public")) if c else False
        except Exception:
            return gr.skip()

    pv = "private"
    add_btn.click(_add, [new_name, new_role, new_pw], user_outs, api_visibility=pv).then(
        lambda: ("", ""), None, [new_name, new_pw], api_visibility=pv)
    role_btn.click(_role, [who, role], user_outs, api_visibility=pv)
    reset_btn.click(_reset, [who, reset_pw], user_outs, api_visibility=pv).then(lambda: "", None, reset_pw,
                                                                                 api_visibility=pv)
    remove_btn.click(_remove, [who, confirm], user_outs, api_visibility=pv).then(lambda: False, None, confirm,
                                                                                   api_visibility=pv)
    grant_btn.click(_grant, [col, grantee, as_], rights_outs, api_visibility=pv)
    revoke_btn.click(_revoke, [col, grantee], rights_outs, api_visibility=pv)
    public_btn.click(_public, [col, public], rights_outs, api_visibility=pv)
    col.change(_col_public, col, public, api_visibility=pv)
    audit_btn.click(_audit, [f_actor, f_action, f_col], [audit_msg, audit_table, audit_csv], api_visibility=pv)

    def _load(request: gr.Request):
        return refresh(backend, request)

    return {"load": (_load, [msg, users, who, rights, col, audit_table])}


__all__ = ["build", "refresh", "add_user", "set_role", "reset_password", "remove_user", "grant", "revoke",
           "set_public", "audit_view", "ROLES"]
