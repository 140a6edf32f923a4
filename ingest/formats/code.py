"""Source code, configuration and scene-description text (.py, .usda, .json, .yaml...): kept as written.

``LANGUAGES`` is the one list of these suffixes (``configs/default.yaml`` ``limits.allowed_types`` accepts
them). The text is decoded like any text file (BOM, UTF-8, then charset-normalizer) and binary content is
refused, so a binary USD crate file or a program renamed ``.py`` gets a clear error. Python top-level
``def``/``class`` lines and USD top-level prims (``def Xform "World"``) become sections.
"""
from __future__ import annotations

import re

from rag.types import Document

from .common import heading_sections

# suffix -> language shown in metadata
LANGUAGES: dict[str, str] = {
    "py": "Python",
    "usda": "USD", "usd": "USD",
    "json": "JSON", "yaml": "YAML", "yml": "YAML", "toml": "TOML", "ini": "INI", "cfg": "INI", "xml": "XML",
    "js": "JavaScript", "ts": "TypeScript",
    "c": "C", "h": "C", "cpp": "C++", "hpp": "C++",
    "java": "Java", "go": "Go", "rs": "Rust", "sh": "Shell", "sql": "SQL",
}

_OUTLINE = {
    "Python": re.compile(r"^(?:async[ \t]+def|def|class)[ \t]+\w+", re.MULTILINE),
    "USD": re.compile(r'^(?:def|over|class)\b[^\n"]{0,200}"[^"\n]{1,200}"', re.MULTILINE),
}
_MAX_HEADING = 120


def load_code(text: str, shown: str, nbytes: int, encoding: str, suffix: str) -> Document:
    """Decoded, newline-normalised source text; top-level definitions (Python, USD) as sections."""
    language = LANGUAGES.get(suffix, "text")
    heads: list[tuple[int, str]] = []
    outline = _OUTLINE.get(language)
    if outline is not None:
        heads = [(m.start(), m.group(0)[:_MAX_HEADING]) for m in outline.finditer(text)]
    return Document(shown, shown, text, "", heading_sections(heads, len(text)),
                    {"format": "code", "language": language, "bytes": nbytes, "encoding": encoding})
