"""Who is on the other end of a request: the client address (for sign-in throttling and the audit log), whether
the browser used https (the cookie's Secure flag) and the single sign-on user, believing proxy headers
(``X-Forwarded-For``, ``X-Forwarded-Proto``, ``auth.sso_header``) only from ``auth.trusted_proxies``.

The peer address these functions start from must be the TCP peer: uvicorn must not replace it from
``X-Forwarded-For`` itself (it does by default for 127.0.0.1), so every place that serves the app passes
``proxy_headers=False`` (``ui/serve.py``, ``rag/testing/server.py``)."""
from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=64)
def _networks(proxies: tuple[str, ...]):
    out = []
    for p in proxies:
        try:
            out.append(ipaddress.ip_network(p.strip(), strict=False))
        except ValueError:
            continue
    return tuple(out)


def _auth(settings):
    return getattr(settings, "auth", settings)


def is_trusted(address, settings) -> bool:
    """Whether ``address`` is one of ``auth.trusted_proxies`` (addresses or CIDR networks)."""
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return any(ip in net for net in _networks(tuple(_auth(settings).trusted_proxies or ())))


def _peer(request) -> str:
    client = getattr(request, "client", None)
    host = getattr(client, "host", None) if client is not None else None
    return str(host) if host else "-"


def _header(request, name: str) -> str | None:
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, dict):   # plain dicts are case-sensitive
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def client_address(request, settings) -> str:
    """The peer's address; when the peer is a trusted proxy, the right-most ``X-Forwarded-For`` entry that is not
    itself a trusted proxy (the left-most when all are). Anything a client could forge is ignored."""
    peer = _peer(request)
    if not is_trusted(peer, settings):
        return peer
    forwarded = _header(request, "x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip() for h in str(forwarded).split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, settings):
            return _valid(hop) or peer
    return _valid(hops[0]) or peer if hops else peer


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def is_https(request, settings) -> bool:
    """Whether the browser reached us over https: the request's own scheme, or, only when the peer is a trusted
    proxy, the (left-most) ``X-Forwarded-Proto`` it sends. The server itself never rewrites the scheme or the peer
    from these headers (``serve`` runs uvicorn with ``proxy_headers=False``), so this is the one place they count."""
    url = getattr(request, "url", None)
    if str(getattr(url, "scheme", "") or "").lower() == "https":
        return True
    if not is_trusted(_peer(request), settings):
        return False
    proto = _header(request, "x-forwarded-proto")
    return bool(proto) and str(proto).split(",")[0].strip().lower() == "https"


def sso_user_name(request, settings) -> str | None:
    """The user name in the single sign-on header (``auth.sso_header``), only when it is set and the request
    comes straight from a trusted proxy; None otherwise."""
    header = _auth(settings).sso_header
    if not header or not is_trusted(_peer(request), settings):
        return None
    value = _header(request, header)
    value = value.strip() if isinstance(value, str) else ""
    return value or None


__all__ = ["client_address", "sso_user_name", "is_trusted", "is_https"]
