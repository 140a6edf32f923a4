"""The state database's tables (SQLAlchemy Core). The schema itself is made by the Alembic migrations in
``migrations/versions``; these definitions are what the code queries and must match the newest migration
(``tests/test_state.py`` compares them)."""
from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("name_key", String(64), nullable=False, unique=True),   # lower-cased name: Bob and bob are one account
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=True),           # NULL: signs in only through single sign-on
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    sqlite_autoincrement=True,  # ids are never reused after a delete
)

sessions = Table(
    "sessions", metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

# failed sign-ins, per account ("user:<name_key>") and per client address ("client:<addr>")
throttle = Table(
    "auth_throttle", metadata,
    Column("subject", String(300), primary_key=True),
    Column("window_start", Float, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
)

collections = Table(
    "collections", metadata,
    Column("name", String(64), primary_key=True),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("public", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)

grants = Table(
    "collection_grants", metadata,
    Column("collection", String(64), ForeignKey("collections.name", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    Column("right", String(16), nullable=False),   # reader | editor
    Column("granted_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("scope", String(16), nullable=False),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True),
    sqlite_autoincrement=True,  # ids are never reused after a delete
)

conversations = Table(
    "conversations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("collection", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_conversations_user_updated", "user_id", "updated_at"),
    sqlite_autoincrement=True,  # ids are never reused after a delete
)

messages = Table(
    "messages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", Integer, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("sources", Text, nullable=False),   # JSON list of dicts
    Column("meta", Text, nullable=False),      # JSON object
    Column("ts", Float, nullable=False),
    sqlite_autoincrement=True,  # ids are never reused after a delete
)

audit = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("actor", String(128), nullable=False, index=True),
    Column("action", String(64), nullable=False, index=True),
    Column("collection", String(64), nullable=True, index=True),
    Column("document", String(512), nullable=True),
    Column("result", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    sqlite_autoincrement=True,  # ids are never reused after a delete
)

votes = Table(
    "votes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("models", Text, nullable=False),        # JSON list of catalog ids, in column order A, B, ...
    Column("outcome", String(8), nullable=False),  # A | B | C | D | tie | bad
    Column("blind", Boolean, nullable=False),
    Column("question", Text, nullable=False),
    Column("collection", String(200), nullable=False, index=True),
    Column("meta", Text, nullable=False),
    Column("voter", String(64), nullable=True, index=True),   # the user's name; NULL for imported/anonymous votes
    sqlite_autoincrement=True,  # ids are never reused after a delete
)

# one-time imports (arena.sqlite, api_keys.json) and other facts about the database
meta_kv = Table(
    "state_meta", metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

__all__ = ["metadata", "users", "sessions", "throttle", "collections", "grants", "api_keys", "conversations",
           "messages", "audit", "votes", "meta_kv"]
