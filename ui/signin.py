"""Sign-in for the web app: the ``/login`` page, ``/logout``, the session cookie, and the check Gradio runs on
every request.

- ``GET /login`` is a plain HTML form served by FastAPI (no script, no external assets; everything it echoes is
  escaped). When no admin account exists yet it says how to create one.
- ``POST /login`` checks the name and password with :meth:`rag.state.State.authenticate` (wrong passwords are
  throttled per account and per client address; behind a reverse proxy listed in ``auth.trusted_proxies`` the
  real client address is used), then sets the ``hr_session`` cookie (HttpOnly, SameSite=Lax, Secure over
  https, or when a trusted proxy says ``X-Forwarded-Proto: https``) holding a random token of :meth:`State.create_session`.
- ``POST /logout`` ends the session (:meth:`State.end_session`) and clears the cookie.
- :func:`current_user` turns a request into a user name: the session cookie, else (only when
  ``auth.sso_header`` is set and the peer is a trusted proxy) the single-sign-on header; a user first seen
  through single sign-on is created with ``auth.sso_role``. Gradio is mounted with it as ``auth_dependency``,
  so every Gradio route refuses a request without a user (401) and each event carries ``request.username``.
- :class:`SignInRedirect` sends an unauthenticated browser that opens the page (``GET /``) to ``/login``.

Both form posts are refused when the browser says they come from another site (``Origin``/``Referer``), and the
cookie is SameSite=Lax, so another site cannot sign a visitor in or out.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

log = logging.getLogger(__name__)  # (Request is imported at module level: FastAPI resolves annotations here)

COOKIE = "hr_session"
CACHE_S = 2.0            # a session looked up in the database is believed this long without asking again
_CACHE_MAX = 10_000
PAGE_PATHS = ("/",)      # what a browser opens: redirected to /login when not signed in


# -- who is asking -------------------------------------------------------------------------------------------

class _SessionCache:
    """token -> (user name, believed until): spares the state database a lookup on each of the several requests
    a Gradio event makes. Entries live ``CACHE_S``; sign-out drops its own at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str, float]] = {}

    def get(self, token: str) -> str | None:
        with self._lock:
            hit = self._items.get(token)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        return None

    def put(self, token: str, name: str) -> None:
        with self._lock:
            self._items[token] = (name, time.monotonic() + CACHE_S)
            if len(self._items) > _CACHE_MAX:
                now = time.monotonic()
                self._items = {k: v for k, v in self._items.items() if v[1] > now}

    def drop(self, token: str) -> None:
        with self._lock:
            self._items.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHE = _SessionCache()


def client_address(request, settings) -> str:
    """The client's address for throttling: the peer, or the forwarded address when the peer is a trusted proxy
    (:func:`rag.state.clients.client_address`)."""
    from rag.state.clients import client_address as _addr

    return _addr(request, settings)


def _sso_user(state, settings, request) -> str | None:
    from rag.state import StateError, sso_user_name

    name = sso_user_name(request, settings)   # None unless auth.sso_header is set and the peer is a trusted proxy
    if not name:
        return None
    header = settings.auth.sso_header
    try:  # first seen: created with auth.sso_role and no password (audited by the state)
        user = state.sso_user(name)
    except StateError as e:
        log.warning("single sign-on: cannot use %r from %s: %s", name[:80], header, e)
        return None
    return user.name


def _lookup(backend, request) -> str | None:
    """The signed-in user's name for ``request`` (blocking: run it in a thread from async code)."""
    state = backend.state
    token = request.cookies.get(COOKIE)
    if token:
        name = _CACHE.get(token)
        if name is not None:
            return name
        user = state.session_user(token)
        if user is not None:
            _CACHE.put(token, user.name)
            return user.name
    return _sso_user(state, backend.settings, request)


def auth_dependency(backend):
    """The ``auth_dependency`` for :func:`gradio.mount_gradio_app`: request -> user name or None."""

    async def current_user(request) -> str | None:
        try:
            return await run_in_threadpool(_lookup, backend, request)
        except Exception:  # the state database unreachable: nobody is signed in, the log says why
            log.exception("cannot check the session")
            return None

    return current_user


# -- the page ----------------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:ui-sans-serif,system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;background:#f6f7f9;
color:#1f2328;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{background:#fff;border:1px solid #d8dee4;border-radius:12px;padding:1.6rem 1.8rem;width:100%;max-width:360px;
box-shadow:0 1px 3px rgba(0,0,0,.06)}
h1{font-size:1.4rem;margin:0 0 .2rem}p.sub{margin:0 0 1.2rem;color:#57606a;font-size:.9rem}
label{display:block;font-size:.85rem;font-weight:600;margin:.8rem 0 .3rem}
input[type=text],input[type=password]{box-sizing:border-box;width:100%;padding:.55rem .6rem;font-size:1rem;
border:1px solid #d0d7de;border-radius:6px}
button{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem;font-weight:600;color:#fff;background:#4a7a00;
border:0;border-radius:6px;cursor:pointer}button:hover{background:#3d6600}
.msg{border-radius:6px;padding:.5rem .65rem;margin:.4rem 0;font-size:.9rem;overflow-wrap:anywhere}
.error{background:#fdecec;color:#8a1c1c;border:1px solid #f1a7a7}.note{background:#fff4e5;color:#7a4100;
border:1px solid #f5c27a}.ok{background:#ecf8ee;color:#1d5e2a;border:1px solid #9fd8aa}
code{background:#f0f2f4;padding:0 .25rem;border-radius:4px;font-size:.85em}
"""


def first_admin_hint(settings) -> str:
    var = settings.admin.password_env or "HYBRID_RAG_ADMIN_PASSWORD"
    return (f"No admin account exists yet. Create one with <code>hybrid-rag users add NAME --role admin</code>, "
            f"or restart the server with <code>{html.escape(var)}</code> set: the first admin, "
            f"<code>{html.escape(settings.admin.username)}</code>, gets that password.")


def login_page(*, error: str = "", info: str = "", name: str = "", next_url: str = "/", no_admin_hint: str = "") -> str:
    """The sign-in form. ``error``, ``info`` and ``name`` are text (escaped here); ``no_admin_hint`` is trusted
    HTML made by :func:`first_admin_hint`."""
    e = html.escape
    parts = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             "<title>Sign in · hybrid-rag</title>", f"<style>{_STYLE}</style></head><body><main>",
             "<h1>hybrid-rag</h1><p class=\"sub\">Sign in to ask questions about your documents.</p>"]
    if error:
        parts.append(f'<div class="msg error" id="login-error" role="alert">{e(error)}</div>')
    if info:
        parts.append(f'<div class="msg ok" id="login-info">{e(info)}</div>')
    if no_admin_hint:
        parts.append(f'<div class="msg note" id="login-note">{no_admin_hint}</div>')
    parts.append('<form method="post" action="login" autocomplete="on">'
                 f'<input type="hidden" name="next" value="{e(next_url)}">'
                 '<label for="login-user">User name</label>'
                 f'<input type="text" id="login-user" name="username" value="{e(name)}" autocomplete="username" '
                 'autocapitalize="none" spellcheck="false" maxlength="200" required autofocus>'
                 '<label for="login-password">Password</label>'
                 '<input type="password" id="login-password" name="password" autocomplete="current-password" '
                 'maxlength="1000" required>'
                 '<button type="submit" id="login-submit">Sign in</button></form></main></body></html>')
    return "".join(parts)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no scheme, no host, no ``//``)."""
    v = (value or "").strip()
    if not v.startswith("/") or v.startswith("//") or "\\" in v or any(ord(c) < 32 for c in v):
        return "/"
    parts = urlsplit(v)
    if parts.scheme or parts.netloc:
        return "/"
    return v[:2000]


def same_origin(request) -> bool:
    """False when the browser says the form was posted from another site (``Origin``, else ``Referer``).
    Requests that carry neither (scripts, old browsers) pass: the SameSite=Lax cookie still protects them."""
    host = (request.headers.get("host") or "").lower()
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value:
            if value == "null":
                return False
            return urlsplit(value).netloc.lower() == host
    return False if request.headers.get("sec-fetch-site") == "cross-site" else True


def install(app, settings, backend):
    """Add ``/login``, ``/logout`` and the redirect middleware to ``app`` (before Gradio is mounted at ``/``);
    return the ``auth_dependency`` to mount Gradio with."""
    from fastapi.responses import HTMLResponse, RedirectResponse

    from rag.state import AuthError
    from rag.state.clients import is_https

    state_of = lambda: backend.state  # noqa: E731 - opened on first use, as the handlers do

    def _hint() -> str:
        try:
            return "" if state_of().has_admin() else first_admin_hint(settings)
        except Exception:  # noqa: BLE001 - the page still shows; signing in will report the database error
            log.exception("cannot read the state database")
            return ""

    def _page(status: int = 200, **kw) -> HTMLResponse:
        return HTMLResponse(login_page(no_admin_hint=_hint(), **kw), status_code=status,
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                "form-action 'self'; frame-ancestors 'none'"})

    @app.get("/login", include_in_schema=False)
    async def login_form(request: Request, next: str = "/"):  # noqa: A002 - the query parameter's name
        if await run_in_threadpool(_lookup, backend, request):
            return RedirectResponse(safe_next(next), status_code=303)
        info = "You are signed out." if request.query_params.get("signed_out") else ""
        return await run_in_threadpool(lambda: _page(info=info, next_url=safe_next(next)))

    @app.post("/login", include_in_schema=False)
    async def login_submit(request: Request):
        if not same_origin(request):
            return _page(403, error="This sign-in came from another site and was refused. Open this page and "
                                    "sign in here.")
        form = await request.form()
        name = str(form.get("username") or "").strip()[:200]
        password = str(form.get("password") or "")[:1000]
        nxt = safe_next(str(form.get("next") or "/"))
        if not name or not password:
            return _page(400, error="Type your user name and password.", name=name, next_url=nxt)
        client = client_address(request, settings)

        def check():
            state = state_of()
            user = state.authenticate(name, password, client=client)
            return user, state.create_session(user)

        try:
            user, token = await run_in_threadpool(check)
        except AuthError as e:
            log.info("sign-in refused for %r from %s: %s", name[:80], client, e)
            message = str(e)
            return await run_in_threadpool(lambda: _page(401, error=message, name=name, next_url=nxt))
        except Exception as e:  # the state database unreachable, say: a reference to the log, not a traceback
            from rag.errors import user_message
            from rag.state import StateUnavailable

            if isinstance(e, StateUnavailable):   # names the database server: for the log, not the page
                e = RuntimeError(str(e))
            message = user_message(e, "Signing in")
            return _page(503, error=message, name=name, next_url=nxt)
        log.info("signed in: %s from %s", user.name, client)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, token, max_age=int(settings.auth.session_max_s), path="/", httponly=True,
                        samesite="lax",
                        secure=is_https(request, settings))  # https, or a trusted proxy says so
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request):
        if not same_origin(request):
            return _page(403, error="This sign-out came from another site and was refused.")
        token = request.cookies.get(COOKIE)
        if token:
            _CACHE.drop(token)
            await run_in_threadpool(lambda: state_of().end_session(token))
        resp = RedirectResponse("login?signed_out=1", status_code=303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=is_https(request, settings))
        return resp

    app.add_middleware(SignInRedirect, backend=backend)
    return auth_dependency(backend)


class SignInRedirect:
    """Pure ASGI middleware: a browser opening the page (``GET /``) without a session is sent to ``/login``.
    Everything else passes untouched (Gradio's own routes answer 401 without a user)."""

    def __init__(self, app, *, backend):
        self.app, self.backend = app, backend

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD")
                or scope.get("path") not in PAGE_PATHS):
            return await self.app(scope, receive, send)
        request = Request(scope)
        try:
            name = await run_in_threadpool(_lookup, self.backend, request)
        except Exception:  # noqa: BLE001
            log.exception("cannot check the session")
            name = None
        if name:
            return await self.app(scope, receive, send)
        root = scope.get("root_path", "") or ""
        location = f"{root}/login"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode("latin-1", "replace")), (b"content-length", b"0"),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})


def clear_cache() -> None:
    """For tests: forget the sessions believed without asking the database."""
    _CACHE.clear()


__all__ = ["install", "auth_dependency", "login_page", "safe_next", "same_origin", "client_address", "COOKIE",
           "SignInRedirect", "first_admin_hint"]
