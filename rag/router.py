"""Route each query to speed, quality or openusd, with a one-line reason.

Auto mode scores each route as ``embedding_weight * similarity + matched rule weights`` (``configs/router.yaml``):

- similarity: mean of the top-k cosines between the query vector that dense retrieval already computed and
  the route's exemplar questions. Exemplar vectors are embedded once per process (and cached on disk under
  the data directory, keyed by a hash of router.yaml and the embedder id), so routing a query costs one
  small matrix product and a few regular expressions, never a model call;
- rules: regular expressions for OpenUSD names (Usd, Sdf, UsdGeom, LIVRPS, .usda, prims ...), comparative
  and multi-step wording, long-form requests, short lookups; plus a length feature. A rule may have a negative
  weight: evidence *against* a route (money next to "USD", an exchange rate, "prim and proper");
- passages (optional): the retrieved chunks the answer will use. Each of the first ``passages.top_n`` is scored
  with the OpenUSD rules alone; one whose score reaches ``passages.min_score`` is about OpenUSD. The openusd
  score moves by ``passages.weight * (about - not_about) / n``: passages from OpenUSD docs support the route,
  business prose counts against it. The shift is bounded by the weight, and a planted chunk can move it by at
  most ``2 * weight / n``, only between openusd and the rest.

Without a query vector (sparse-only retrieval) or with one from another embedder (a different dimension),
only the rules (and passages) count, and the reason says so. Manual mode (a route or a model chosen by the
user) skips all of it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from .catalog import ROUTES, Catalog, CatalogError
from .schema import Strict

log = logging.getLogger(__name__)


class Rule(Strict):
    route: str
    weight: float
    label: str
    pattern: str


class LengthSpec(Strict):
    long_words: int = Field(22, ge=1)
    long_weight: float = 0.35
    short_words: int = Field(9, ge=0)
    short_weight: float = 0.15


class PassageSpec(Strict):
    weight: float = Field(0.5, ge=0, description="most the retrieved passages move the openusd score, either way")
    top_n: int = Field(5, ge=1, description="how many of the best hits are looked at")
    min_score: float = Field(1.0, description="OpenUSD rule score at which a passage counts as about OpenUSD")


class RouterSpec(Strict):
    version: int = 1
    default_route: str = "speed"
    embedding_weight: float = Field(1.0, ge=0)
    top_k: int = Field(3, ge=1)
    length: LengthSpec = Field(default_factory=LengthSpec)
    passages: PassageSpec = Field(default_factory=PassageSpec)
    rules: list[Rule] = Field(default_factory=list)
    exemplars: dict[str, list[str]]


@dataclass
class RouteDecision:
    """What the router chose: the route, the model id for it, and why (one line)."""

    route: str                       # speed | quality | openusd | manual (a model picked by id)
    model: str                       # catalog model id
    reason: str
    mode: str                        # auto | route | model
    scores: dict = field(default_factory=dict)


class Router:
    """Thread-safe; build once per process (``Router.from_settings``) and share.

    ``embedder`` embeds the exemplars (once; the vectors are cached on disk in ``cache_dir`` when given).
    """

    def __init__(self, spec: RouterSpec, source_hash: str = "", embedder=None,
                 exemplar_vectors: dict[str, np.ndarray] | None = None, cache_dir: Path | None = None):
        bad = [r for r in [*spec.exemplars, *(x.route for x in spec.rules), spec.default_route] if r not in ROUTES]
        if bad:
            raise CatalogError(f"router.yaml names unknown routes {sorted(set(bad))}: use {', '.join(ROUTES)}")
        self.spec = spec
        self.source_hash = source_hash
        self._embedder = embedder
        self._vectors = exemplar_vectors
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._rules = [(r, re.compile(r.pattern, re.IGNORECASE)) for r in spec.rules]
        self._usd_rules = [(r, rx) for r, rx in self._rules if r.route == "openusd"]

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "Router":
        """The router of loaded settings (``settings.router``); exemplar vectors cached under the data dir."""
        kwargs.setdefault("cache_dir", Path(settings.data_dir) / "cache")
        return cls(settings.router, _spec_hash(settings.router), **kwargs)

    @classmethod
    def load(cls, config=None, **kwargs) -> "Router":
        """Load the settings (``config`` file, environment overrides) and return their router (no disk cache
        unless ``cache_dir`` is given)."""
        from .config import load_settings

        kwargs.setdefault("cache_dir", None)
        return cls.from_settings(load_settings(config), **kwargs)

    # exemplar vectors -------------------------------------------------------------------------------
    def _cache_path(self, embedder_id: str) -> Path | None:
        if self._cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.source_hash}|{embedder_id}".encode()).hexdigest()[:16]
        return self._cache_dir / f"router-exemplars-{key}.npz"

    def exemplar_vectors(self) -> dict[str, np.ndarray]:
        """Route -> (n, d) L2-normalised exemplar vectors; embedded once (or read from the disk cache)."""
        if self._vectors is not None:
            return self._vectors
        with self._lock:
            if self._vectors is not None:
                return self._vectors
            if self._embedder is None:
                raise CatalogError("The auto router needs an embedder for its exemplars: build it with "
                                   "Router.from_settings(settings, embedder=...).")
            emb_id = getattr(self._embedder, "model_id", type(self._embedder).__name__)
            path = self._cache_path(emb_id)
            if path is not None and path.exists():
                try:
                    with np.load(path, allow_pickle=False) as z:
                        vecs = {r: z[r] for r in self.spec.exemplars}
                    self._vectors = vecs
                    return vecs
                except Exception:  # noqa: BLE001 - a bad cache file is rebuilt
                    log.warning("ignoring unreadable router cache %s", path)
            vecs = {r: np.asarray(self._embedder.encode_queries(list(qs)), dtype=np.float32)
                    for r, qs in self.spec.exemplars.items()}
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
                    np.savez(tmp, **vecs)
                    os.replace(tmp, path)
                except OSError as e:
                    log.warning("could not write router cache %s: %s", path, e)
            self._vectors = vecs
            return vecs

    def warm(self) -> None:
        """Embed the exemplars now (call at app start so the first query does not pay for it)."""
        self.exemplar_vectors()

    # scoring ----------------------------------------------------------------------------------------
    def similarities(self, query_vector: np.ndarray) -> dict[str, float] | None:
        vecs = self.exemplar_vectors()
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        dims = {v.shape[1] for v in vecs.values()}
        if dims != {q.shape[0]}:
            return None
        n = float(np.linalg.norm(q)) or 1.0
        q = q / n
        out = {}
        for route, m in vecs.items():
            s = np.sort(m @ q)[::-1][: self.spec.top_k]
            out[route] = float(s.mean())
        return out

    def passage_evidence(self, passages: list[str]) -> tuple[int, int]:
        """(how many of the first ``top_n`` passages are about OpenUSD, how many were looked at).

        A passage is about OpenUSD when the weights of the openusd rules it matches (negative ones included: an
        exchange rate in a budget report counts against) add up to ``min_score`` or more."""
        P = self.spec.passages
        looked = [p for p in passages[: P.top_n] if p and p.strip()]
        about = sum(sum(r.weight for r, rx in self._usd_rules if rx.search(p)) >= P.min_score for p in looked)
        return about, len(looked)

    def score(self, query: str, query_vector: np.ndarray | None = None, passages: list[str] | None = None
              ) -> tuple[dict[str, float], list[tuple[str, str]], str]:
        """Per-route scores, the matched (route, label) rules, and a note on the embedding part.

        A rule with a negative weight is listed as ``("not " + route, label)``."""
        scores = {r: 0.0 for r in ROUTES}
        matched: list[tuple[str, str]] = []
        note, sims = "", None
        if query_vector is not None:
            sims = self.similarities(query_vector)
            if sims is None:
                note = "rules only: the query vector is not from the router's embedder"
            else:
                for r, s in sims.items():
                    scores[r] += self.spec.embedding_weight * s
        else:
            note = "rules only: no query vector"
        for rule, rx in self._rules:
            if rx.search(query):
                scores[rule.route] += rule.weight
                matched.append((rule.route if rule.weight >= 0 else f"not {rule.route}", rule.label))
        words = len(query.split())
        L = self.spec.length
        if words >= L.long_words:
            scores["quality"] += L.long_weight
            matched.append(("quality", f"{words} words"))
        elif words <= L.short_words:
            scores["speed"] += L.short_weight
            matched.append(("speed", f"short ({words} words)"))
        if passages:
            about, n = self.passage_evidence(passages)
            if n:
                scores["openusd"] += self.spec.passages.weight * (2 * about - n) / n
                matched.append(("openusd" if 2 * about > n else "not openusd",
                                f"{about}/{n} passages about OpenUSD"))
        if sims:
            nearest = max(sims, key=sims.get)
            matched.append((nearest, f"closest to {nearest} examples"))
        return scores, matched, note

    def route(self, query: str, query_vector: np.ndarray | None = None, passages: list[str] | None = None
              ) -> tuple[str, str, dict]:
        """(route, one-line reason, scores) for one query; ``passages`` are the retrieved chunks' texts, best
        first (optional: evidence for or against the openusd route)."""
        scores, matched, note = self.score(query, query_vector, passages)
        best = max(scores.values())
        winners = [r for r in ROUTES if scores[r] == best]
        route = self.spec.default_route if len(winners) > 1 and self.spec.default_route in winners else winners[0]
        if best == 0.0:
            route = self.spec.default_route
        parts = [", ".join(dict.fromkeys(lab for r, lab in matched if r == route))]
        for other in ROUTES:  # evidence that kept another route out, e.g. "not openusd: currency"
            against = [lab for r, lab in matched if r == f"not {other}"]
            if against and other != route:
                parts.append(f"not {other}: " + ", ".join(dict.fromkeys(against)))
        reason = f"{route}: " + ("; ".join(p for p in parts if p) or "default route")
        if note:
            reason += f" ({note})"
        return route, reason, {r: round(s, 3) for r, s in scores.items()}

    def decide(self, query: str, *, catalog: Catalog, route: str = "auto", model: str | None = None,
               query_vector: np.ndarray | None = None, passages: list[str] | None = None) -> RouteDecision:
        return decide(query, catalog=catalog, route=route, model=model, query_vector=query_vector, router=self,
                      passages=passages)


def decide(query: str, *, catalog: Catalog, route: str = "auto", model: str | None = None,
           query_vector: np.ndarray | None = None, router: Router | None = None,
           passages: list[str] | None = None) -> RouteDecision:
    """Manual (``model`` or a named ``route``) or auto routing, resolved to a catalog model id.

    Manual choices never touch the router; auto needs ``router``. ``passages`` (the retrieved chunks' texts,
    best first) are optional evidence for or against the openusd route.
    """
    if model:
        spec = catalog.get_model(model)
        return RouteDecision(route=catalog.route_of(spec.id) or "manual", model=spec.id,
                             reason=f"model {spec.id} chosen by the user", mode="model")
    if route != "auto":
        if route not in ROUTES:
            raise CatalogError(f"Unknown route {route!r}: use auto, {', '.join(ROUTES)}")
        return RouteDecision(route=route, model=catalog.model_for_route(route).id,
                             reason=f"{route} route chosen by the user", mode="route")
    if router is None:
        raise CatalogError("Auto routing needs a router: pass router=Router.from_settings(settings, ...).")
    if passages is None:
        r, reason, scores = router.route(query, query_vector)
    else:
        r, reason, scores = router.route(query, query_vector, passages=passages)
    return RouteDecision(route=r, model=catalog.model_for_route(r).id, reason=reason, mode="auto", scores=scores)


def _spec_hash(spec: RouterSpec) -> str:
    """Keys the on-disk exemplar cache: changes whenever the router settings change."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


__all__ = ["Router", "RouterSpec", "RouteDecision", "decide"]
