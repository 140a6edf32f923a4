"""Local NIMs found by what they serve: ``GET /v1/models`` on each local endpoint, matched to the catalog.

A local server is used for every catalog model whose id, alias or served name it lists, not only for the
models with a ``serves.local`` line; models it offers that the catalog lacks become extra catalog entries
(so they appear in the Chat model list, Compare and ``GET /v1/models``). The probe is the health probe,
cached for ``health.ttl_s``; the derived catalog is rebuilt only when what the servers list changes.
"""
from __future__ import annotations

import threading

from ..catalog import Catalog, ModelSpec
from .health import HealthCache, probe

EXTRA_CONTEXT = 4096   # context assumed for a model only the local server knows (its card is not in the catalog)

_LOCK = threading.Lock()


def discover(catalog: Catalog, health: HealthCache) -> Catalog:
    """``catalog`` with what its local endpoints serve (``catalog`` itself when they serve nothing new).

    The result has ``found``: ``{(model id, endpoint): served id}`` for serve lines added by discovery, and
    ``extra``: the ids of models that only a local server offers.
    """
    served: dict[str, frozenset] = {}
    for name in catalog.fallback_order:
        ep = catalog.endpoint(name)
        if ep.kind != "local_nim":
            continue
        ok, _why, ids = probe(ep, catalog, health)
        if ok and ids:
            served[name] = ids
    if not served:
        return catalog
    key = tuple(sorted((k, tuple(sorted(v))) for k, v in served.items()))
    with _LOCK:
        cached = getattr(catalog, "_discovered", None)
        if cached is not None and cached[0] == key:
            return cached[1]
    derived = _derive(catalog, served)
    with _LOCK:
        catalog._discovered = (key, derived)
    return derived


def _derive(catalog: Catalog, served: dict[str, frozenset]) -> Catalog:
    found: dict[tuple[str, str], str] = {}
    used: dict[str, set[str]] = {ep: set() for ep in served}
    models = []
    for m in catalog.spec.models:
        serves = dict(m.serves)
        for ep, ids in served.items():
            lower = {i.lower(): i for i in ids}
            if ep in serves:
                used[ep].add(serves[ep])
                continue
            if m.embedded:
                continue
            for name in (m.id, *m.aliases, *m.serves.values()):
                sid = lower.get(name.lower())
                if sid is not None:
                    serves[ep] = sid
                    found[(m.id, ep)] = sid
                    used[ep].add(sid)
                    break
        models.append(m.model_copy(update={"serves": serves}) if serves != m.serves else m)
    taken = {n.lower() for m in models for n in (m.id, *m.aliases)}
    extra = []
    for ep, ids in served.items():
        for sid in sorted(ids):
            if sid in used[ep] or sid.lower() in taken:
                continue
            taken.add(sid.lower())
            extra.append(ModelSpec(id=sid, name=f"{sid} (on {ep})", context=EXTRA_CONTEXT, serves={ep: sid}))
    derived = Catalog(catalog.spec.model_copy(update={"models": models + extra}), catalog.source, catalog.environ)
    derived.found = found
    derived.extra = [m.id for m in extra]
    return derived


def found_note(catalog: Catalog, model_id: str, endpoint: str) -> str | None:
    """A line for the answer's reason when ``endpoint`` serves ``model_id`` because discovery found it."""
    sid = getattr(catalog, "found", {}).get((model_id, endpoint))
    if sid is not None:
        return f"{endpoint} serves it as {sid} (found by GET /v1/models)"
    if model_id in getattr(catalog, "extra", ()):
        return f"{model_id} is offered by {endpoint} (found by GET /v1/models; not in the catalog)"
    return None


__all__ = ["discover", "found_note", "EXTRA_CONTEXT"]
