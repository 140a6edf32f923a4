"""File names that are safe to show and to store: ``safe_name`` and ``unique_name``."""
from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_NAME_CHARS", "safe_name", "unique_name"]

MAX_NAME_CHARS = 150  # leaves room for prefixes (archive member paths, "(2)") under the 255-byte limit
_MAX_EXT_CHARS = 16
_UNSAFE_CHARS = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                     *(f"lpt{i}" for i in range(10))}


def safe_name(name: str) -> str:
    """A file name that is safe to show and to use as a file name.

    Keeps only the last path component (``../``, absolute paths, drive letters and backslashes go),
    removes control and format characters (NUL, bidi overrides), replaces characters Windows forbids,
    strips leading dots and trailing dots/spaces, limits the length to ``MAX_NAME_CHARS`` while
    keeping the extension, and never returns an empty string (``"unnamed"``).
    """
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\t\n\r\v\f]+", " ", name)
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():  # "C:file.txt"
        name = name[2:]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn")
                   and c not in "\u2028\u2029")
    name = _UNSAFE_CHARS.sub("_", name)
    name = " ".join(name.split())  # no tabs/newlines/odd spaces; single spaces
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return "unnamed"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > _MAX_EXT_CHARS or " " in ext:
        stem, dot, ext = name, "", ""
    if stem.lower() in _WINDOWS_RESERVED:
        stem = "_" + stem
    if len(stem) + len(dot) + len(ext) > MAX_NAME_CHARS:
        stem = stem[: MAX_NAME_CHARS - len(dot) - len(ext)].rstrip(". ") or "unnamed"
    return f"{stem}{dot}{ext}"


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``... (before the extension) if taken; adds the result to ``used``."""
    if name not in used:
        used.add(name)
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    i = 2
    while True:
        cand = f"{stem} ({i}){dot}{ext}"
        if cand not in used:
            used.add(cand)
            return cand
        i += 1
