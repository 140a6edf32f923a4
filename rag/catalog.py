"""The model catalog (``configs/models.yaml``): models, endpoints, routes, fallback order, sampling params.

Everything here is data and validation; nothing makes a network call. The catalog is read once per
process from the settings (``Catalog.from_settings``; ``settings.models`` is ``configs/models.yaml``) and is
read-only afterwards, so threads can share it.

Endpoint kinds:

- ``nvidia_hosted``: the NVIDIA API catalog (``https://integrate.api.nvidia.com/v1``), key from ``NVIDIA_API_KEY``;
- ``local_nim``: a NIM container (``http://localhost:8000/v1``), usually no key;
- ``openai_compatible``: any other OpenAI-compatible base URL with its own key variable;
- ``embedded``: SmolLM2-135M-Instruct run in-process by llama-cpp-python (offline, weak, always last).
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .errors import HybridRagError, InvalidInput
from .schema import CsvList, Strict

ROUTES = ("speed", "quality", "openusd")
ENDPOINT_KINDS = ("local_nim", "nvidia_hosted", "openai_compatible", "embedded")


class CatalogError(HybridRagError, ValueError):
    """The catalog file is missing or invalid."""


class UnknownModelError(CatalogError):
    """A model id (or alias) that the catalog does not list."""


class ParamsError(InvalidInput):
    """A sampling parameter is unknown or out of range; ``param`` names the (first) field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class SamplingParams(Strict):
    """Sampling parameters of the OpenAI-compatible chat API (ranges from the model cards)."""

    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy, up to 2")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling mass, (0, 1]")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="tokens to generate at most")
    stop: list[str] | None = Field(None, max_length=16, description="up to 16 stop sequences")
    seed: int | None = Field(None, ge=0, lt=2**63, description="random seed; determinism not guaranteed")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v):
        return [v] if isinstance(v, str) else v

    def merged(self, other: "SamplingParams | None") -> "SamplingParams":
        """These values, overridden by the values set in ``other``."""
        if other is None:
            return self
        merged = {**self.model_dump(exclude_none=True), **other.model_dump(exclude_none=True)}
        if self.stop and other.stop:  # the model's own stop sequences (end-of-turn markers) stay
            merged["stop"] = list(dict.fromkeys([*self.stop, *other.stop]))[:16]
        return SamplingParams(**merged)

    def request_fields(self) -> dict:
        """The fields to send (unset ones are left to the server)."""
        return self.model_dump(exclude_none=True)


def validate_params(params: dict | SamplingParams | None) -> SamplingParams:
    """Validate user sampling parameters; raise :class:`ParamsError` naming the field and its range."""
    if params is None:
        return SamplingParams()
    if isinstance(params, SamplingParams):
        return params
    try:
        return SamplingParams.model_validate(dict(params))
    except ValidationError as e:
        problems, fields = [], []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "params"
            fields.append(str(err["loc"][0]) if err["loc"] else "params")
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(SamplingParams.model_fields)
                problems.append(f"unknown sampling parameter {field!r} (allowed: {allowed})")
            else:
                problems.append(f"{field}={err.get('input')!r}: {err['msg']}")
        raise ParamsError("Invalid sampling parameters: " + "; ".join(problems), fields[0] if fields else None) from None


class EndpointSpec(Strict):
    kind: Literal["local_nim", "nvidia_hosted", "openai_compatible", "embedded"]
    base_url: str | None = None
    base_url_env: str | None = None   # environment variable that overrides base_url
    api_key_env: str | None = None    # environment variable holding the key (never the key itself)
    name: str = ""                     # filled in from the mapping key

    @model_validator(mode="after")
    def _check(self):
        if self.kind != "embedded" and not (self.base_url or self.base_url_env):
            raise ValueError(f"endpoint kind {self.kind} needs a base_url")
        if self.kind == "nvidia_hosted" and not self.api_key_env:
            raise ValueError("the hosted NVIDIA endpoint needs api_key_env (usually NVIDIA_API_KEY)")
        return self

    def resolved_base_url(self, environ=None) -> str | None:
        environ = os.environ if environ is None else environ
        if self.base_url_env and environ.get(self.base_url_env):
            return environ[self.base_url_env].rstrip("/")
        return self.base_url.rstrip("/") if self.base_url else None

    def describe(self, environ=None) -> dict:
        """Name, kind and base URL (never a key) for answer metadata."""
        return {"name": self.name, "kind": self.kind, "base_url": self.resolved_base_url(environ)}


class ModelSpec(Strict):
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    context: int = Field(..., ge=256, description="context window in tokens (prompt + answer)")
    max_output: int | None = Field(None, ge=1)
    params: SamplingParams = Field(default_factory=SamplingParams)
    serves: dict[str, str] = Field(..., min_length=1, description="endpoint name -> the model name it expects")
    embedded: bool = False


class HealthSpec(Strict):
    ttl_s: float = Field(30.0, ge=0)
    probe_timeout_s: float = Field(1.0, gt=0, le=30)


class TimeoutSpec(Strict):
    connect_s: float = Field(5.0, gt=0, le=120)
    read_s: float = Field(60.0, gt=0, le=3600)


class RetrySpec(Strict):
    attempts: int = Field(3, ge=1, le=10)
    backoff_s: float = Field(0.5, ge=0, le=60)
    backoff_max_s: float = Field(4.0, ge=0, le=300)


class CatalogSpec(Strict):
    version: int = 1
    fallback_order: CsvList
    routes: dict[Literal["speed", "quality", "openusd"], str]
    health: HealthSpec = Field(default_factory=HealthSpec)
    timeouts: TimeoutSpec = Field(default_factory=TimeoutSpec)
    retries: RetrySpec = Field(default_factory=RetrySpec)
    telemetry: bool = False  # langchain-nvidia-ai-endpoints' usage telemetry for hosted calls (off by default)
    endpoints: dict[str, EndpointSpec]
    models: list[ModelSpec]

    @model_validator(mode="after")
    def _cross_check(self):
        for name, ep in self.endpoints.items():
            ep.name = name
        names: dict[str, str] = {}
        for m in self.models:
            for n in [m.id, *m.aliases]:
                if n in names:
                    raise ValueError(f"model name {n!r} is used twice ({names[n]} and {m.id})")
                names[n] = m.id
            for ep in m.serves:
                if ep not in self.endpoints:
                    raise ValueError(f"model {m.id} is served by unknown endpoint {ep!r}")
            kinds = {self.endpoints[ep].kind for ep in m.serves}
            if m.embedded != (kinds == {"embedded"}):
                raise ValueError(f"model {m.id}: `embedded: true` exactly when all its endpoints are embedded")
        if sum(m.embedded for m in self.models) != 1:
            raise ValueError("the catalog needs exactly one embedded model (the offline last resort)")
        for route, mid in self.routes.items():
            if mid not in names:
                raise ValueError(f"route {route} names unknown model {mid!r}")
        missing = [r for r in ROUTES if r not in self.routes]
        if missing:
            raise ValueError(f"routes missing: {missing}")
        for ep in self.fallback_order:
            if ep not in self.endpoints:
                raise ValueError(f"fallback_order names unknown endpoint {ep!r}")
        return self


class Catalog:
    """A validated, read-only catalog. Build with :meth:`load` or :meth:`from_dict`."""

    def __init__(self, spec: CatalogSpec, source: str = "<dict>", environ=None):
        self.spec = spec
        self.source = source
        self.environ = os.environ if environ is None else environ
        self._by_name = {n: m for m in spec.models for n in (m.id, *m.aliases)}
        self._by_name.update({n.lower(): m for n, m in list(self._by_name.items())})
        self.fallback_order = list(spec.fallback_order)

    # construction ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>", environ=None) -> "Catalog":
        try:
            spec = CatalogSpec.model_validate(raw)
        except ValidationError as e:
            raise CatalogError(f"Invalid model catalog {source}:\n{e}") from None
        return cls(spec, source, environ)

    @classmethod
    def from_settings(cls, settings, environ=None) -> "Catalog":
        """The catalog of loaded settings (``settings.models``, validated with them)."""
        return cls(settings.models, str(settings.models_file), environ)

    @classmethod
    def load(cls, config=None, environ=None) -> "Catalog":
        """Load the settings (``config`` file, environment overrides) and return their catalog."""
        from .config import load_settings

        return cls.from_settings(load_settings(config, environ=environ), environ)

    # lookups -----------------------------------------------------------------------------------
    @property
    def models(self) -> list[ModelSpec]:
        return list(self.spec.models)

    @property
    def endpoints(self) -> dict[str, EndpointSpec]:
        return dict(self.spec.endpoints)

    def get_model(self, name: str) -> ModelSpec:
        m = self._by_name.get(name) or self._by_name.get(name.lower())
        if m is None:
            known = ", ".join(x.id for x in self.spec.models)
            raise UnknownModelError(f"Unknown model {name!r}. Known models: {known}")
        return m

    def model_for_route(self, route: str) -> ModelSpec:
        if route not in self.spec.routes:
            raise CatalogError(f"Unknown route {route!r}: use one of {', '.join(ROUTES)}")
        return self.get_model(self.spec.routes[route])

    def route_of(self, model_id: str) -> str | None:
        for route, mid in self.spec.routes.items():
            if self.get_model(mid).id == model_id:
                return route
        return None

    def embedded_model(self) -> ModelSpec:
        return next(m for m in self.spec.models if m.embedded)

    def endpoint(self, name: str) -> EndpointSpec:
        try:
            return self.spec.endpoints[name]
        except KeyError:
            raise CatalogError(f"Unknown endpoint {name!r}; known: {', '.join(self.spec.endpoints)}") from None

    def api_key(self, endpoint: EndpointSpec) -> str | None:
        return self.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None

    def key_missing(self, endpoint: EndpointSpec) -> str | None:
        """The variable to set when an endpoint needs a key and none is set, else None."""
        if endpoint.kind in ("nvidia_hosted", "openai_compatible") and endpoint.api_key_env \
                and not self.api_key(endpoint):
            return endpoint.api_key_env
        return None

    def secrets(self) -> list[str]:
        """Every key value the catalog can see, for redaction of logs and errors."""
        out = []
        for ep in self.spec.endpoints.values():
            v = self.api_key(ep)
            if v and len(v) >= 4:
                out.append(v)
        return out

    def endpoints_for(self, model: ModelSpec) -> list[str]:
        """The endpoints serving ``model``, in fallback order; endpoints left out of the order are off."""
        return [e for e in self.fallback_order if e in model.serves]

    def default_params(self, model: ModelSpec) -> SamplingParams:
        return model.params

    def summary(self) -> list[dict]:
        """One row per model for UIs: id, name, context, endpoints, routes."""
        routes = {}
        for r, mid in self.spec.routes.items():
            routes.setdefault(self.get_model(mid).id, []).append(r)
        return [{"id": m.id, "name": m.name, "context": m.context, "embedded": m.embedded,
                 "endpoints": list(m.serves), "routes": routes.get(m.id, [])} for m in self.spec.models]


__all__ = ["Catalog", "CatalogSpec", "ModelSpec", "EndpointSpec", "SamplingParams", "validate_params",
           "CatalogError", "UnknownModelError", "ParamsError", "ROUTES", "ENDPOINT_KINDS"]
