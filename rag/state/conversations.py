"""Saved conversations, per user: list (newest first), resume, rename, delete, export as Markdown.

A user sees only their own conversations: another user's id reads as "not found", so ids tell nothing.
"""
from __future__ import annotations

import datetime as dt
import json
import unicodedata

from sqlalchemy import delete, func, insert, select, update

from . import models as m
from .errors import StateError
from .users import User

ROLES = ("user", "assistant", "system")
MAX_TITLE = 200
MAX_CONTENT = 1_000_000
DEFAULT_TITLE = "New conversation"


class ConversationNotFound(StateError, LookupError):
    """No such conversation among the user's own."""


def clean_title(title) -> str:
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(title or ""))
    text = " ".join(text.split())[:MAX_TITLE]
    return text or DEFAULT_TITLE


def _json(value, default):
    try:
        return json.loads(value) if value else default
    except ValueError:
        return default


class ConversationsMixin:
    def _owned(self, c, user: User, conv_id) -> object:
        try:
            conv_id = int(conv_id)
        except (TypeError, ValueError):
            conv_id = -1
        row = c.execute(select(m.conversations).where(m.conversations.c.id == conv_id,
                                                      m.conversations.c.user_id == user.id)).first()
        if row is None:
            raise ConversationNotFound(f"No conversation #{conv_id} among yours: it was deleted, or belongs to "
                                       "someone else. Pick one from your list, or start a new one.")
        return row

    def create_conversation(self, user: User, title=DEFAULT_TITLE, collection=None) -> int:
        now = self.clock()
        with self._tx(write=True) as c:
            return int(c.execute(insert(m.conversations).values(
                user_id=user.id, title=clean_title(title), collection=(str(collection)[:64] if collection else None),
                created_at=now, updated_at=now)).inserted_primary_key[0])

    def list_conversations(self, user: User) -> list[dict]:
        """Newest first: id, title, collection, created_at, updated_at, n_messages."""
        n = (select(m.messages.c.conversation_id, func.count().label("n")).group_by(m.messages.c.conversation_id)
             .subquery())
        q = (select(m.conversations, func.coalesce(n.c.n, 0).label("n_messages"))
             .select_from(m.conversations.outerjoin(n, n.c.conversation_id == m.conversations.c.id))
             .where(m.conversations.c.user_id == user.id)
             .order_by(m.conversations.c.updated_at.desc(), m.conversations.c.id.desc()))
        with self._tx() as c:
            return [{"id": int(r.id), "title": r.title, "collection": r.collection, "created_at": r.created_at,
                     "updated_at": r.updated_at, "n_messages": int(r.n_messages)} for r in c.execute(q)]

    def get_conversation(self, user: User, conv_id) -> dict:
        """The conversation with its messages (oldest first): role, content, sources, meta, ts."""
        with self._tx() as c:
            row = self._owned(c, user, conv_id)
            msgs = c.execute(select(m.messages).where(m.messages.c.conversation_id == row.id)
                             .order_by(m.messages.c.id)).all()
        return {"id": int(row.id), "title": row.title, "collection": row.collection, "created_at": row.created_at,
                "updated_at": row.updated_at, "n_messages": len(msgs),
                "messages": [{"role": x.role, "content": x.content, "sources": _json(x.sources, []),
                              "meta": _json(x.meta, {}), "ts": x.ts} for x in msgs]}

    def append_message(self, user: User, conv_id, role, content, sources=None, meta=None) -> int:
        if role not in ROLES:
            raise StateError(f"Unknown message role {str(role)[:20]!r}: use user, assistant or system.")
        content = str(content or "")
        if len(content) > MAX_CONTENT:
            raise StateError(f"The message is too long to save ({len(content)} characters; at most {MAX_CONTENT}).")
        now = self.clock()
        with self._tx(write=True) as c:
            row = self._owned(c, user, conv_id)
            mid = c.execute(insert(m.messages).values(
                conversation_id=row.id, role=role, content=content, ts=now,
                sources=json.dumps(list(sources or []), default=str, ensure_ascii=False),
                meta=json.dumps(dict(meta or {}), default=str, ensure_ascii=False))).inserted_primary_key[0]
            c.execute(update(m.conversations).where(m.conversations.c.id == row.id).values(updated_at=now))
        return int(mid)

    def rename_conversation(self, user: User, conv_id, title) -> str:
        """Rename; returns the title as stored (control characters and extra spaces removed, at most 200)."""
        title = clean_title(title)
        with self._tx(write=True) as c:
            row = self._owned(c, user, conv_id)
            c.execute(update(m.conversations).where(m.conversations.c.id == row.id).values(title=title))
        return title

    def delete_conversation(self, user: User, conv_id) -> None:
        with self._tx(write=True) as c:
            row = self._owned(c, user, conv_id)
            c.execute(delete(m.messages).where(m.messages.c.conversation_id == row.id))
            c.execute(delete(m.conversations).where(m.conversations.c.id == row.id))

    def export_markdown(self, user: User, conv_id) -> str:
        """The conversation as Markdown: title, each turn, and each answer's numbered sources."""
        conv = self.get_conversation(user, conv_id)
        when = dt.datetime.fromtimestamp(conv["updated_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"# {conv['title']}", ""]
        about = [f"Collection: {conv['collection']}"] if conv["collection"] else []
        lines += [" · ".join(about + [f"last message {when}", f"exported by {user.name}"]), ""]
        for msg in conv["messages"]:
            who = {"user": "You", "assistant": "Assistant", "system": "System"}[msg["role"]]
            model = msg["meta"].get("model") if isinstance(msg["meta"], dict) else None
            lines += [f"## {who}" + (f" ({model})" if model and msg["role"] == "assistant" else ""), "",
                      msg["content"].strip(), ""]
            if msg["sources"]:
                lines += ["Sources:", ""]
                for i, s in enumerate(msg["sources"], 1):
                    lines.append(_source_line(i, s))
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def _source_line(i: int, s) -> str:
    if not isinstance(s, dict):
        return f"{i}. {s}"
    n = s.get("n") or s.get("index") or i
    doc = s.get("document") or s.get("source") or s.get("doc_id") or s.get("title") or "(unknown document)"
    where = []
    if s.get("page"):
        where.append(f"page {s['page']}")
    if s.get("heading"):
        where.append(f"§ {s['heading']}")
    chunk = s.get("chunk_id", s.get("chunk"))
    if chunk not in (None, ""):
        where.append(f"chunk {chunk}")
    line = f"{n}. **{doc}**" + (f" ({', '.join(map(str, where))})" if where else "")
    text = " ".join(str(s.get("text") or "").split())
    if text:
        line += "\n   > " + text
    return line


__all__ = ["ConversationsMixin", "ConversationNotFound", "clean_title"]
