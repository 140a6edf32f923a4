"""What the bytes are: magic numbers of the formats that are refused, PDF, and zip-based files."""
from __future__ import annotations

import io
import zipfile

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAX_ENTRIES = 100_000
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
              RuntimeError, KeyError)  # what zipfile raises on a damaged or hostile archive

_PROGRAM = "Upload the document itself, not a program."
_IMAGE_OCR = "Images are not indexed; upload a PDF with a text layer (run OCR first)."
_REPACK = "Repack it as a .zip and upload that."
_DECOMPRESS = "Decompress it (or repack it as .zip) and upload that."
_RESAVE = "Save it in a current format (.docx, .xlsx, .pptx) or as PDF and upload that."

# (magic, offset, what it is, what to do)
_BINARY_MAGIC: list[tuple[bytes, int, str, str]] = [
    (b"\x7fELF", 0, "an ELF executable", _PROGRAM),
    (b"\xfe\xed\xfa\xce", 0, "a Mach-O executable", _PROGRAM),
    (b"\xfe\xed\xfa\xcf", 0, "a Mach-O executable", _PROGRAM),
    (b"\xce\xfa\xed\xfe", 0, "a Mach-O executable", _PROGRAM),
    (b"\xcf\xfa\xed\xfe", 0, "a Mach-O executable", _PROGRAM),
    (b"\xca\xfe\xba\xbe", 0, "a Java class or Mach-O binary", _PROGRAM),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "an old Microsoft Office file (.doc/.xls/.ppt)", _RESAVE),
    (b"{\\rtf", 0, "an RTF document", _RESAVE),
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image", _IMAGE_OCR),
    (b"\xff\xd8\xff", 0, "a JPEG image", _IMAGE_OCR),
    (b"GIF87a", 0, "a GIF image", "Images are not indexed; upload a document with text."),
    (b"GIF89a", 0, "a GIF image", "Images are not indexed; upload a document with text."),
    (b"II*\x00", 0, "a TIFF image", "Images are not indexed; run OCR on it first (e.g. ocrmypdf)."),
    (b"MM\x00*", 0, "a TIFF image", "Images are not indexed; run OCR on it first (e.g. ocrmypdf)."),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive", _REPACK),
    (b"Rar!\x1a\x07", 0, "a RAR archive", _REPACK),
    (b"BZh", 0, "a bzip2 archive", _DECOMPRESS),
    (b"\xfd7zXZ\x00", 0, "an xz archive", _DECOMPRESS),
    (b"\x28\xb5\x2f\xfd", 0, "a zstd archive", _DECOMPRESS),
    (b"ustar", 257, "a tar archive", _REPACK),
    (b"SQLite format 3\x00", 0, "an SQLite database", "Export the text you need and upload that."),
    (b"\x00asm", 0, "a WebAssembly binary", _PROGRAM),
    (b"PXR-USDC", 0, "a binary USD crate file (.usdc)",
     "Convert it to text with `usdcat in.usd -o out.usda` and upload the .usda file."),
]
CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: old Office files, encrypted new ones
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")


def binary_kind(data: bytes) -> tuple[str, str] | None:
    """(what it is, what to do) for a known non-document binary format, else None."""
    for magic, off, what, fix in _BINARY_MAGIC:
        if data[off:off + len(magic)] == magic:
            return what, fix
    if data[:2] == b"MZ" and len(data) >= 0x40:  # DOS/Windows executable: MZ header pointing at "PE\0\0"
        pe = int.from_bytes(data[0x3C:0x40], "little")
        if data[pe:pe + 4] == b"PE\x00\x00" or b"This program cannot be run in DOS mode" in data[:512]:
            return "a Windows executable", _PROGRAM
    return None


def is_encrypted_office(data: bytes) -> bool:
    """A password-protected .docx/.xlsx/.pptx: an OLE compound file holding an ``EncryptedPackage`` stream."""
    return data.startswith(CFB_MAGIC) and _ENCRYPTED_PACKAGE in data


def is_pdf(data: bytes, suffix: str = "") -> bool:
    """``%PDF-`` at the start; readers accept junk before it (up to 1 KiB) only when the name says .pdf."""
    at = data.find(b"%PDF-", 0, 1024)
    return at >= 0 and (not data[:at].strip() or suffix == "pdf")


def zip_entry_count(data: bytes) -> int | None:
    """Entries declared by the end-of-central-directory record (read before zipfile builds them all)."""
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if eocd < 0 or eocd + 22 > len(data):
        return None
    n = int.from_bytes(data[eocd + 10:eocd + 12], "little")
    loc = eocd - 20
    if n == 0xFFFF and loc >= 0 and data[loc:loc + 4] == b"PK\x06\x07":  # zip64
        off = int.from_bytes(data[loc + 8:loc + 16], "little")
        if data[off:off + 4] == b"PK\x06\x06":
            n = int.from_bytes(data[off + 32:off + 40], "little")
    return n


def zip_kind(data: bytes) -> str | None:
    """'docx', 'pptx', 'xlsx', 'odt', 'epub', 'office' (another zip-based document format, not supported),
    'zip', 'broken' or None (not a zip)."""
    if not data.startswith(ZIP_MAGIC):
        return None
    if (zip_entry_count(data) or 0) > ZIP_MAX_ENTRIES:
        return "zip"  # no document has that many parts; iter_archive refuses it without parsing it
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            mimetype = zf.read("mimetype")[:100] if "mimetype" in names else b""
    except ZIP_ERRORS:
        return "broken"
    if "word/document.xml" in names:
        return "docx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    mimetype = mimetype.strip()
    if mimetype == b"application/vnd.oasis.opendocument.text":
        return "odt"
    if mimetype == b"application/epub+zip" or (
            not mimetype and "META-INF/container.xml" in names and any(n.endswith(".opf") for n in names)):
        return "epub"
    if "[Content_Types].xml" in names or mimetype.startswith(b"application/") or "META-INF/MANIFEST.MF" in names:
        return "office"
    return "zip"
