"""`hybrid-rag users ...`, `collections grant|revoke|public|rights`, `keys ...` and `audit`: the state database
from the command line. Every change is written to the audit log with the actor ``cli:<os user>``, whether it
succeeded or was refused, under the same action names and results as in the web app and the API (``rights.grant``,
``ok``/``denied``/``failed``)."""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import sys

from .errors import HybridRagError, InvalidInput

PASSWORD_ENV = "HYBRID_RAG_NEW_PASSWORD"


def actor() -> str:
    try:
        name = getpass.getuser()
    except Exception:   # no passwd entry in some containers
        name = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{name}"


def _state(args):
    from .config import load_settings
    from .state import open_state

    return open_state(load_settings(path=args.config, data_dir=args.data_dir))


def _audited(state, action, fn, *, collection=None, document=None, detail=""):
    """Run ``fn()``; audit it as ``ok``, or when refused as ``denied``/``failed`` (the web app's and the API's
    results, :func:`rag.state.audit.outcome`) with the reason, and re-raise."""
    from .state.audit import outcome

    try:
        out = fn()
    except HybridRagError as e:
        state.audit(actor(), action, collection=collection, document=document, result=outcome(e),
                    detail=f"{detail}: {e}" if detail else str(e))
        raise
    state.audit(actor(), action, collection=collection, document=document, detail=detail)
    return out


def read_new_password(environ=None, prompt=None) -> str:
    """The new password: ``$HYBRID_RAG_NEW_PASSWORD`` when set (scripts), else typed twice at a prompt."""
    environ = os.environ if environ is None else environ
    prompt = prompt or getpass.getpass
    value = environ.get(PASSWORD_ENV)
    if value:
        return value
    try:
        first = prompt("New password: ")
        second = prompt("Repeat it: ")
    except (EOFError, OSError):
        raise InvalidInput(f"No password given: type it at the prompt, or set {PASSWORD_ENV} for scripts.") from None
    if first != second:
        raise InvalidInput("The two passwords differ: run the command again and type the same password twice.")
    if not first:
        raise InvalidInput(f"No password given: type one at the prompt, or set {PASSWORD_ENV} for scripts.")
    return first


# -- users ----------------------------------------------------------------------------------------------------
def cmd_users(args) -> int:
    state = _state(args)
    c = args.users_command
    if c == "list":
        users = state.list_users()
        if args.json:
            print(json.dumps([{"id": u.id, "name": u.name, "role": u.role} for u in users]))
        elif not users:
            print("no users (add one with `hybrid-rag users add NAME --role admin`)")
        for u in users if not args.json else []:
            print(f"{u.name:<32} {u.role}")
        return 0
    if c == "add":
        password = read_new_password()
        user = _audited(state, "user.add", lambda: state.add_user(args.name, password, args.role),
                        detail=f"{args.name} ({args.role})")
        print(f"added {user.role} {user.name!r}")
    elif c == "set-role":
        user = _audited(state, "user.set_role", lambda: state.set_role(args.name, args.role),
                        detail=f"{args.name} -> {args.role}")
        print(f"{user.name!r} is now {user.role}")
    elif c == "reset-password":
        state.require_user(args.name)
        password = read_new_password()
        _audited(state, "user.reset_password", lambda: state.reset_password(args.name, password), detail=args.name)
        print(f"new password set for {args.name!r}; their sessions have ended")
    elif c == "remove":
        _audited(state, "user.remove", lambda: state.remove_user(args.name), detail=args.name)
        print(f"removed user {args.name!r} (their sessions, API keys, rights and conversations are gone)")
    return 0


def add_users_parser(sub) -> None:
    s = sub.add_parser("users", help="user accounts: add, list, set-role, reset-password, remove")
    us = s.add_subparsers(dest="users_command", required=True)
    u = us.add_parser("add", help=f"add a user (password from ${PASSWORD_ENV}, else typed twice)")
    u.add_argument("name")
    u.add_argument("--role", choices=["admin", "editor", "reader"], default="reader",
                   help="admin: everything; editor: manages the collections given to them; reader: reads them "
                   "(default)")
    u = us.add_parser("list", help="list users and their roles")
    u.add_argument("--json", action="store_true")
    u = us.add_parser("set-role", help="change a user's role (the last admin stays admin)")
    u.add_argument("name")
    u.add_argument("role", choices=["admin", "editor", "reader"])
    u = us.add_parser("reset-password", help=f"set a new password (from ${PASSWORD_ENV}, else typed twice); "
                      "ends the user's sessions")
    u.add_argument("name")
    u = us.add_parser("remove", help="remove a user with their sessions, keys, rights and conversations")
    u.add_argument("name")
    s.set_defaults(func=cmd_users)


# -- collections: rights --------------------------------------------------------------------------------------
def cmd_collection_rights(args) -> int:
    state = _state(args)
    c, col = args.collections_command, args.collection
    if c == "grant":
        _audited(state, "rights.grant", lambda: state.grant(col, args.user, as_=args.as_), collection=col,
                 detail=f"{args.user} as {args.as_}")
        print(f"{args.user!r} may now {'read and change' if args.as_ == 'editor' else 'read'} collection {col!r}")
    elif c == "revoke":
        had = _audited(state, "rights.revoke", lambda: state.revoke(col, args.user), collection=col,
                       detail=args.user)
        print(f"revoked the right of {args.user!r} on {col!r}" if had else
              f"{args.user!r} had no right granted on {col!r} (nothing changed)")
    elif c == "public":
        on = args.value == "on"
        _audited(state, "rights.public", lambda: state.set_public(col, on), collection=col,
                 detail="on" if on else "off")
        print(f"collection {col!r} is {'readable by every signed-in user' if on else 'no longer public'}")
    elif c == "owner":
        owner = None if args.user == "-" else args.user
        _audited(state, "rights.owner", lambda: state.set_owner(col, owner), collection=col,
                 detail=owner or "(nobody)")
        print(f"collection {col!r} is owned by {owner!r}" if owner else f"collection {col!r} has no owner now")
    elif c == "rights":
        r = state.collection_rights(col)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"owner:   {r['owner'] or '-'}\npublic:  {'yes' if r['public'] else 'no'}\n"
                  f"editors: {', '.join(r['editors']) or '-'}\nreaders: {', '.join(r['readers']) or '-'}")
    return 0


def add_collection_subcommands(s) -> None:
    """``collections grant|revoke|public|owner|rights`` beside the listing (``collections [--delete NAME]``)."""
    cs = s.add_subparsers(dest="collections_command", required=False, metavar="{grant,revoke,public,owner,rights}")
    g = cs.add_parser("grant", help="let a user read (or also change) a collection")
    g.add_argument("collection")
    g.add_argument("user")
    g.add_argument("--as", dest="as_", choices=["reader", "editor"], required=True)
    g.set_defaults(func=cmd_collection_rights)
    g = cs.add_parser("revoke", help="take a user's granted right on a collection away")
    g.add_argument("collection")
    g.add_argument("user")
    g.set_defaults(func=cmd_collection_rights)
    g = cs.add_parser("public", help="on: every signed-in user may read the collection")
    g.add_argument("collection")
    g.add_argument("value", choices=["on", "off"])
    g.set_defaults(func=cmd_collection_rights)
    g = cs.add_parser("owner", help="make a user the collection's owner ('-' for nobody)")
    g.add_argument("collection")
    g.add_argument("user")
    g.set_defaults(func=cmd_collection_rights)
    g = cs.add_parser("rights", help="show who may read and change a collection")
    g.add_argument("collection")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_collection_rights)


def forget_deleted_collection(args, name: str) -> None:
    """After ``collections --delete NAME``: its rights go, and the deletion is audited."""
    state = _state(args)
    state.forget_collection(name)
    state.audit(actor(), "collection.delete", collection=name)


# -- API keys -------------------------------------------------------------------------------------------------
def cmd_keys(args) -> int:
    """API keys: create (the key is the last line of the output, shown once), list, revoke."""
    state = _state(args)
    if args.keys_command == "create":
        key = _audited(state, "key.create", lambda: state.create_key(args.name, args.scope, args.user),
                       detail=f"{args.name} ({args.scope}) for {args.user}")
        print(f"Created {args.scope} key {args.name!r} acting as {args.user!r} (with their rights). It is shown once, "
              "below; send it as `Authorization: Bearer KEY`.")
        print(key)
    elif args.keys_command == "revoke":
        k = _audited(state, "key.revoke", lambda: state.revoke_key(args.name), detail=args.name)
        print(f"Revoked {k.scope} key {k.name!r}; a running server refuses it from its next request.")
    else:
        keys = state.list_keys()
        if args.json:
            print(json.dumps([k.public() for k in keys]))
        elif not keys:
            print("no API keys (create one with `hybrid-rag keys create --name NAME --scope read|admin --user USER`)")
        for k in keys if not args.json else []:
            when = dt.datetime.fromtimestamp(k.created_at).strftime("%Y-%m-%d %H:%M")
            owner = k.user.name if k.user else "(no user: re-create it with --user)"
            print(f"{k.name:<24} {k.scope:<6} {k.prefix}…  {owner:<24} created {when}")
    return 0


def add_keys_parser(sub) -> None:
    s = sub.add_parser("keys", help="API keys for the HTTP API (each acts as a user): create, list, revoke")
    ks = s.add_subparsers(dest="keys_command", required=True)
    k = ks.add_parser("create", help="create a key; it is printed once, as the last line")
    k.add_argument("--name", required=True, help="a name to tell keys apart (and to revoke it by)")
    k.add_argument("--scope", required=True, choices=["read", "admin"],
                   help="read: models, chat, search, list collections and documents; admin: also changes and jobs "
                   "(admins and editors only); always within the user's rights")
    k.add_argument("--user", required=True, help="the user the key acts as (`hybrid-rag users list`)")
    k = ks.add_parser("list", help="list keys (names, scopes, users, first characters; never the keys)")
    k.add_argument("--json", action="store_true")
    k = ks.add_parser("revoke", help="revoke a key by name")
    k.add_argument("name")
    s.set_defaults(func=cmd_keys)


# -- audit ----------------------------------------------------------------------------------------------------
def cmd_audit(args) -> int:
    state = _state(args)
    filters = {"actor": args.actor, "action": args.action, "collection": args.collection}
    if args.csv:
        sys.stdout.write(state.audit_csv(limit=args.limit, **filters))
        return 0
    rows = state.audit_log(limit=args.limit, **filters)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no audit entries" + (" match" if any(filters.values()) else ""))
    for r in rows:
        where = " ".join(x for x in (r["collection"] and f"[{r['collection']}]", r["document"] and repr(r["document"]))
                         if x)
        print(f"{r['time']}  {r['actor']:<20} {r['action']:<22} {r['result']:<8} {where} {r['detail']}".rstrip())
    return 0


def add_audit_parser(sub) -> None:
    s = sub.add_parser("audit", help="the audit log of admin and editor actions, newest first")
    s.add_argument("--limit", type=int, default=200)
    s.add_argument("--actor", help="only this actor (a user name, or cli:NAME)")
    s.add_argument("--action", help="only this action (e.g. user.add), or a prefix ending in '.' (user.)")
    s.add_argument("--collection", help="only this collection")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--csv", action="store_true", help="CSV on standard output")
    g.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_audit)


__all__ = ["add_users_parser", "add_collection_subcommands", "add_keys_parser", "add_audit_parser",
           "read_new_password", "forget_deleted_collection", "actor", "PASSWORD_ENV"]
