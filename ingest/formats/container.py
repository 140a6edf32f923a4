"""Zip-based documents (.pptx, .xlsx, .odt, .epub): checked before a library opens them.

The libraries trust the zip: they read whole parts into memory. ``open_container`` refuses, before any
part is decompressed, a file whose parts declare more than ``MAX_EXPANDED_BYTES`` (or more than
``MAX_RATIO`` times the file's size), too many parts, or password-protected parts. ``zipfile`` never
returns more bytes than a part declares, so the declared sizes bound what the library can expand.
The limits are the ones the .docx loader has always used.
"""
from __future__ import annotations

import io
import logging
import zipfile

from .common import LoadError
from .sniff import ZIP_ERRORS, zip_entry_count

log = logging.getLogger(__name__)

MAX_EXPANDED_BYTES = 256 << 20   # all parts together, uncompressed
MAX_RATIO = 200                  # ... nor more than 200x the file (floor: 64 KiB)
MAX_PARTS = 10_000               # a real document has tens to a few thousand parts


def open_container(data: bytes, shown: str, what: str, resave: str) -> zipfile.ZipFile:
    """The checked zip of a ``what`` (".pptx presentation"...); ``resave`` says how to save it again."""
    n = zip_entry_count(data)
    if n is not None and n > MAX_PARTS:
        raise LoadError(f"{shown}: the {what} declares {n} parts, more than the {MAX_PARTS} a document has; "
                        f"it is damaged or malicious. {resave}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except ZIP_ERRORS as e:
        log.debug("%s: zipfile cannot open the %s: %s: %s", shown, what, type(e).__name__, e)
        raise LoadError(f"{shown}: the {what} is damaged (its zip structure cannot be read). {resave}") from None
    if len(infos) > MAX_PARTS:
        raise LoadError(f"{shown}: the {what} has {len(infos)} parts, more than the {MAX_PARTS} a document has; "
                        f"it is damaged or malicious. {resave}")
    if any(i.flag_bits & 0x1 for i in infos):
        raise LoadError(f"{shown}: the {what} is protected by a password. Open it, remove the password, "
                        "save it, and upload the new file.")
    total = sum(i.file_size for i in infos)
    if total > MAX_EXPANDED_BYTES or total > MAX_RATIO * max(len(data), 1 << 16):
        raise LoadError(f"{shown}: the {what} expands to {total >> 20} MiB, which looks like a decompression "
                        f"bomb. {resave}")
    return zf


def read_part(zf: zipfile.ZipFile, name: str, shown: str, what: str, resave: str) -> bytes | None:
    """One part's bytes (None when absent); a damaged part is a ``LoadError``."""
    try:
        return zf.read(name)
    except KeyError:
        return None
    except ZIP_ERRORS as e:
        log.debug("%s: part %s cannot be read: %s: %s", shown, name, type(e).__name__, e)
        raise LoadError(f"{shown}: the {what} is damaged (a part inside it cannot be read). {resave}") from None
