"""The one strict base model of every settings file (default.yaml, models.yaml, router.yaml)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from .errors import HybridRagError


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a settings file is reported, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(HybridRagError, ValueError):
    """A settings file or variable is missing or invalid; the message says which and how to fix it."""


def _split_csv(v):
    """``"a, b"`` (as an environment variable gives it) -> ``["a", "b"]``; lists pass through."""
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


CsvList = Annotated[list[str], BeforeValidator(_split_csv)]

__all__ = ["Strict", "ConfigError", "CsvList"]
