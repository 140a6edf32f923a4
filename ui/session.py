"""Who is asking, in a Gradio handler: the signed-in user behind ``gr.Request``.

Gradio is mounted with an ``auth_dependency`` (``ui.signin``) that turns the session cookie (or a trusted
proxy's single-sign-on header) into a user name; Gradio passes it to every event as ``request.username``.
Handlers never trust anything the page sends about the user: they call :func:`user_of` and check rights
through :class:`rag.state.State` on the server.
"""
from __future__ import annotations

from rag.state import AuthError


def user_of(backend, request):
    """The :class:`rag.state.User` making this request; :class:`rag.state.AuthError` when there is none
    (no session, expired, or the account was removed)."""
    name = getattr(request, "username", None) if request is not None else None
    user = backend.state.get_user(name) if name else None
    if user is None:
        raise AuthError("You are not signed in (or your session expired): reload the page and sign in again.")
    return user


def readable_names(backend, user) -> list[str]:
    """The collections ``user`` may read, in the store's order."""
    return backend.state.readable(user, backend.collection_names())


__all__ = ["user_of", "readable_names"]
