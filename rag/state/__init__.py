"""The state database: users, roles and sign-in, web sessions, rights on collections, API keys, saved
conversations, arena votes and the audit log, through SQLAlchemy (SQLite in the data directory by default,
PostgreSQL by ``HYBRID_RAG_DATABASE_URL``), with Alembic migrations run on open.

    state = open_state(settings)
    alice = state.add_user("alice", "correct horse", "reader")
    state.grant("handbook", "alice", as_="reader")
    state.require_read(alice, "handbook")
"""
from .clients import client_address, sso_user_name
from .conversations import ConversationNotFound
from .errors import AccessDenied, AuthError, StateError, StateUnavailable
from .keys import ApiKeyRecord
from .state import State, close_all, open_state, open_state_at
from .users import ROLES, User

__all__ = ["State", "open_state", "open_state_at", "close_all", "User", "ROLES", "ApiKeyRecord", "AccessDenied",
           "AuthError", "StateError", "StateUnavailable", "ConversationNotFound", "client_address", "sso_user_name"]
