"""gzip-compressed uploads (a BEIR ``corpus.jsonl.gz``): decompressed with a cap against bombs."""
from __future__ import annotations

import logging
import zlib

from .common import LoadError
from .sniff import GZIP_MAGIC

log = logging.getLogger(__name__)

MAX_GUNZIP_BYTES = 1 << 30  # a .gz upload never expands past 1 GiB ...
MAX_GUNZIP_RATIO = 200.0    # ... nor past 200x its compressed size (text compresses 3-10x)


def gunzip(data: bytes, shown: str) -> bytes:
    """All gzip members of ``data``, decompressed; ``LoadError`` if damaged, truncated or too large."""
    cap = int(min(MAX_GUNZIP_BYTES, max(1 << 20, MAX_GUNZIP_RATIO * len(data))))
    out = bytearray()
    rest = data
    try:
        while rest.startswith(GZIP_MAGIC):  # concatenated gzip members are one stream
            d = zlib.decompressobj(wbits=31)
            piece = rest
            while piece:
                out += d.decompress(piece, cap + 1 - len(out))
                if len(out) > cap:
                    raise LoadError(f"{shown}: expands to more than {cap >> 20} MiB "
                                    f"({MAX_GUNZIP_RATIO:.0f}x its size at most); it may be a decompression bomb. "
                                    "Split the corpus into smaller files, or decompress it and upload the file.")
                piece = d.unconsumed_tail
            if not d.eof:
                raise LoadError(f"{shown}: the gzip data is truncated. Download or compress it again.")
            rest = d.unused_data
    except zlib.error as e:
        log.debug("%s: gzip data rejected by zlib: %s", shown, e)
        raise LoadError(f"{shown}: the gzip data is damaged (it fails the format's checks). "
                        "Download or compress it again.") from None
    return bytes(out)
