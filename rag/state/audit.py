"""The audit log: admin and editor actions (who, when, what, on which collection or document, result).

Append-only: there is no method to change or delete an entry. Readable by admins in the app and exportable as
CSV (cells that a spreadsheet would run as a formula are quoted with a leading apostrophe).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import unicodedata

from sqlalchemy import insert, select

from . import models as m
from .users import User

CSV_COLUMNS = ["id", "time", "actor", "action", "collection", "document", "result", "detail"]
MAX_DETAIL = 4000
log = logging.getLogger(__name__)
RESULTS = ("ok", "denied", "failed")   # the only results an entry may have, from every path (web, API, CLI)


def outcome(exc: BaseException | None) -> str:
    """The audit ``result`` of an action that raised ``exc``: ``ok`` (None: it worked), ``denied`` (a right was
    missing: :class:`PermissionError`, e.g. AccessDenied) or ``failed`` (anything else, e.g. a bad name or the
    last admin)."""
    if exc is None:
        return "ok"
    return "denied" if isinstance(exc, PermissionError) else "failed"


def _clean(value, limit: int) -> str:
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(value))
    return text[:limit]


class AuditMixin:
    def audit(self, actor, action, *, collection=None, document=None, result="ok", detail="") -> int:
        """Append one entry; ``actor`` is a :class:`User` or a label such as ``"cli:alice"`` or ``"system"``;
        ``result`` one of :data:`RESULTS` (:func:`outcome` maps an exception to it)."""
        if result not in RESULTS:
            raise ValueError(f"audit result {result!r}: use one of {', '.join(RESULTS)}")
        name = actor.name if isinstance(actor, User) else str(actor or "-")
        with self._tx(write=True) as c:
            return int(c.execute(insert(m.audit).values(
                ts=self.clock(), actor=_clean(name, 128), action=_clean(action, 64),
                collection=_clean(collection, 64) if collection else None,
                document=_clean(document, 512) if document else None,
                result=result, detail=str(detail or "")[:MAX_DETAIL])).inserted_primary_key[0])

    def try_audit(self, actor, action, **entry) -> None:
        """:meth:`audit` for the web app and the API: a failure to write the log is logged, never the failure of
        the action being recorded."""
        try:
            self.audit(actor, action, **entry)
        except Exception:  # noqa: BLE001
            log.exception("cannot write the audit log (%s by %s)", action, getattr(actor, "name", actor))

    def audit_log(self, limit: int = 200, offset: int = 0, actor=None, action=None, collection=None) -> list[dict]:
        """Entries newest first: id, ts, time (UTC, ISO), actor, action, collection, document, result, detail.
        ``action`` ending in ``.`` or ``*`` matches a prefix (``"user."`` or ``"user*"``)."""
        q = select(m.audit).order_by(m.audit.c.id.desc())
        if actor:
            q = q.where(m.audit.c.actor == (actor.name if isinstance(actor, User) else str(actor)))
        if action:
            action = str(action)
            if action.endswith(("*", ".")):
                prefix = action.rstrip("*")
                q = q.where(m.audit.c.action.startswith(prefix, autoescape=True))
            else:
                q = q.where(m.audit.c.action == action)
        if collection:
            q = q.where(m.audit.c.collection == str(collection))
        q = q.limit(max(1, min(int(limit), 100_000))).offset(max(0, int(offset)))
        with self._tx() as c:
            return [{"id": int(r.id), "ts": r.ts, "time": _iso(r.ts), "actor": r.actor, "action": r.action,
                     "collection": r.collection, "document": r.document, "result": r.result, "detail": r.detail}
                    for r in c.execute(q)]

    def audit_csv(self, limit: int = 100_000, offset: int = 0, actor=None, action=None, collection=None) -> str:
        rows = self.audit_log(limit=limit, offset=offset, actor=actor, action=action, collection=collection)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in CSV_COLUMNS})
        return buf.getvalue()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


__all__ = ["AuditMixin", "CSV_COLUMNS", "RESULTS", "outcome"]
