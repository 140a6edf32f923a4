"""Zip uploads, expanded safely: ``is_archive`` and ``iter_archive``.

Sizes are checked while decompressing (headers are never trusted), nesting is bounded, member names
are flattened and made safe; a bad member becomes a ``LoadError`` for that member only.
"""
from __future__ import annotations

import io
import logging
import stat
import zipfile
import zlib
from typing import Iterator

from .formats.common import LoadError, suffix
from .formats.sniff import (
    ZIP_ERRORS,
    ZIP_MAGIC,
    ZIP_MAX_ENTRIES,
    zip_entry_count,
    zip_kind,
)
from .names import safe_name, unique_name

__all__ = ["is_archive", "iter_archive"]

log = logging.getLogger(__name__)

_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".git", ".svn"}
_READ_BLOCK = 1 << 16
RATIO_MIN_BYTES = 1 << 16  # members smaller than this are never refused for their ratio alone


def is_archive(data: bytes, name: str) -> bool:
    """True for a zip archive that should be expanded with ``iter_archive`` (not a .docx or similar).

    A damaged zip counts as an archive unless the name says .docx, so that the caller gets
    ``iter_archive``'s error for it.
    """
    kind = zip_kind(data)
    if kind == "broken":
        return suffix(name) not in ("docx", "xlsx", "pptx", "odt", "epub")
    return kind == "zip"


def iter_archive(data: bytes, name: str, *, max_files: int, max_total_bytes: int,
                 max_ratio: float = 100.0, max_depth: int = 1) -> Iterator[tuple[str, bytes | LoadError]]:
    """Expand a .zip safely into ``(member name, bytes or LoadError)`` pairs.

    - Member names are flattened and made safe: ``folder/sub/a.txt`` → ``folder__sub__a.txt``;
      members of a nested zip get the nested zip's name as a prefix; duplicates get `` (2)``.
    - Sizes are checked against the headers *and* while decompressing (the headers are never
      trusted): a member that expands past the remaining ``max_total_bytes``, past ``max_ratio``
      times its compressed size (members over 64 KiB), or past its declared size is refused.
    - Zips inside the zip are expanded up to ``max_depth`` levels (0: never); deeper ones are refused.
    - Directories, symlinks and macOS/Windows junk (``__MACOSX/``, ``._*``, ``.DS_Store``) are skipped.
    - A bad member yields ``(name, LoadError)``; only a damaged archive as a whole raises
      ``LoadError`` (immediately, when this function is called).
    - At most ``max_files`` members are yielded; if there are more, one final
      ``(archive name, LoadError)`` says how many were left out. An archive with no files at all
      also yields one ``(archive name, LoadError)``.
    """
    if max_files < 1 or max_total_bytes < 1 or max_ratio <= 1 or max_depth < 0:
        raise ValueError("iter_archive needs max_files >= 1, max_total_bytes >= 1, max_ratio > 1 and max_depth >= 0")
    shown = safe_name(name)
    # entries are counted before zipfile builds one object per entry (folders and junk count too)
    zf = _open_zip(bytes(data), shown, max(10 * max_files, 1000))
    budget = {"bytes": max_total_bytes, "files": max_files, "skipped": 0}
    used: set[str] = set()

    def gen() -> Iterator[tuple[str, bytes | LoadError]]:
        yield from _walk_zip(zf, "", 0, budget, used, max_ratio=max_ratio, max_depth=max_depth)
        if not used:
            yield shown, LoadError(f"{shown}: the archive holds no files (only folders or system files). "
                                   "Check that you zipped the right folder.")
        if budget["skipped"]:
            yield shown, LoadError(
                f"{shown}: the archive holds more than {max_files} files; {budget['skipped']} were not read. "
                "Split it into smaller archives and upload them one at a time.")

    return gen()


def _open_zip(data: bytes, shown: str, max_entries: int = ZIP_MAX_ENTRIES) -> zipfile.ZipFile:
    n = zip_entry_count(data)
    if n is not None and n > max_entries:
        raise LoadError(f"{shown}: the archive declares {n} entries, more than the {max_entries} allowed. "
                        "Split it into smaller archives and upload them one at a time.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        zf.infolist()
        return zf
    except ZIP_ERRORS as e:
        log.debug("%s: zipfile cannot open the archive: %s: %s", shown, type(e).__name__, e)
        raise LoadError(f"{shown}: the zip archive is damaged or truncated and cannot be opened. "
                        "Create the archive again and upload it.") from None


def _flat_name(member: str, prefix: str) -> str | None:
    """``a/b/c.txt`` → ``a__b__c.txt`` (made safe); None for junk entries."""
    parts = [p for p in member.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts or any(p in _JUNK_PARTS for p in parts) or parts[-1].startswith("._"):
        return None
    flat = "__".join(safe_name(p) for p in parts)
    return safe_name(f"{prefix}__{flat}" if prefix else flat)


def _walk_zip(zf: zipfile.ZipFile, prefix: str, depth: int, budget: dict, used: set[str],
              *, max_ratio: float, max_depth: int) -> Iterator[tuple[str, bytes | LoadError]]:
    with zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename.endswith(("/", "\\")):
                continue
            flat = _flat_name(info.filename, prefix)
            if flat is None:
                continue
            if budget["files"] <= 0:
                budget["skipped"] += 1
                continue
            label = unique_name(flat, used)
            budget["files"] -= 1
            mode = (info.external_attr >> 16) & 0xFFFF
            if info.create_system == 3 and stat.S_ISLNK(mode):
                yield label, LoadError(f"{label}: is a symbolic link inside the archive; links are not followed. "
                                       "Put the file itself into the archive.")
                continue
            if info.flag_bits & 0x1:
                yield label, LoadError(f"{label}: is password-protected inside the archive. "
                                       "Create the archive without a password and upload it again.")
                continue
            payload = _read_member(zf, info, label, budget, max_ratio)
            if isinstance(payload, LoadError):
                yield label, payload
                continue
            if payload.startswith(ZIP_MAGIC) and zip_kind(payload) in ("zip", "broken"):
                if depth + 1 > max_depth:
                    yield label, LoadError(
                        f"{label}: is a zip inside a zip nested deeper than {max_depth} level(s); it was not "
                        "expanded. Unpack the inner archive and upload its files (or the archive) directly.")
                    continue
                try:
                    inner = _open_zip(payload, label, max(10 * budget["files"], 1000))
                except LoadError as e:
                    yield label, e
                    continue
                inner_prefix = label[:-4] if label.lower().endswith(".zip") else label
                yield from _walk_zip(inner, inner_prefix, depth + 1, budget, used,
                                     max_ratio=max_ratio, max_depth=max_depth)
                continue
            yield label, payload


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, budget: dict,
                 max_ratio: float) -> bytes | LoadError:
    left = budget["bytes"]
    too_big = LoadError(f"{label}: the archive expands past its size limit ({_mib(left)} left of the "
                        "allowed total); it was not read. Split the archive and upload the parts separately.")
    ratio_cap = max(RATIO_MIN_BYTES, int(max_ratio * max(info.compress_size, 1)))
    bomb = LoadError(f"{label}: compresses more than {max_ratio:.0f}:1, which looks like a zip bomb; it was "
                     "not read. If it is a genuine file, upload it on its own rather than inside a zip.")
    if info.file_size > ratio_cap:
        return bomb
    if info.file_size > left:
        return too_big
    cap = min(left, ratio_cap, info.file_size)
    out = bytearray()
    try:
        with zf.open(info) as f:
            while True:
                block = f.read(_READ_BLOCK)
                if not block:
                    break
                out += block
                if len(out) > cap:
                    if len(out) > info.file_size:
                        return LoadError(f"{label}: expands to more than the size its header declares; the archive "
                                         "is damaged or malicious. Create it again and upload it.")
                    return bomb if len(out) > ratio_cap else too_big
    except NotImplementedError as e:
        log.debug("%s: unsupported zip member: %s", label, e)
        return LoadError(f"{label}: cannot be extracted: it is compressed with a method this server does not "
                         "support. Create the archive again with standard zip (deflate) compression and upload it.")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError) as e:
        log.debug("%s: zip member cannot be extracted: %s: %s", label, type(e).__name__, e)
        return LoadError(f"{label}: cannot be extracted: its data inside the archive is damaged (it fails the "
                         "zip format's checks or is cut short). Create the archive again and upload it.")
    budget["bytes"] -= len(out)
    return bytes(out)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
