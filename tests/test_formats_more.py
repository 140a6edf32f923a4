"""The formats people bring: .pptx, .xlsx, .csv/.tsv, .odt, .epub, .rst and source/scene text. Each one's
sections, its hostile inputs (bombs, damage, passwords, DRM, include/raw, huge lines, binary renamed) and the
tables' header in every chunk. Files are generated in tests/filegen.py; nothing binary is committed."""
from __future__ import annotations

import datetime
import io
import re
import zipfile

import filegen as g
import pytest
from reliability_kit import FakeEmbedder, minilm_tokenizer
from test_loaders import assert_clear, error_of, load_one

from ingest.formats import SUFFIXES, LoadError, chunk_table, load, token_fit
from ingest.formats.code import LANGUAGES
from ingest.formats.container import MAX_PARTS
from ingest.formats.delimited import sniff_delimiter
from ingest.formats.rst import MAX_NESTING, MAX_RST_BYTES
from ingest.formats.table import TableFit

# --- PowerPoint -------------------------------------------------------------------------------------

def test_pptx_slides_become_sections_with_titles_tables_groups_and_notes():
    data = g.make_pptx([
        {"title": "Quarterly results", "body": ["Revenue grew 12%", "Costs fell"], "notes": "Thank the team."},
        {},  # a slide without text: left out, the numbers stay the deck's
        {"body": ["Untitled slide text"], "table": [["Region", "Sales"], ["North", "10"]], "group": "grouped words"},
    ], title="Deck title")
    d = load_one(data, "deck.pptx")
    assert d.metadata["format"] == "pptx" and d.metadata["slides"] == 3 and d.title == "Deck title"
    assert [s.heading for s in d.sections] == ["Slide 1: Quarterly results", "Slide 3"]
    one, three = (d.text[s.start:s.end] for s in d.sections)
    assert one.startswith("Quarterly results\n\nRevenue grew 12%\nCosts fell") and "Notes: Thank the team." in one
    assert "Untitled slide text" in three and "Region | Sales\nNorth | 10" in three and "grouped words" in three


def test_pptx_title_falls_back_to_the_first_slide_title():
    d = load_one(g.make_pptx([{"body": ["intro"]}, {"title": "Agenda", "body": ["x"]}]), "t.pptx")
    assert d.title == "Agenda"


def test_pptx_without_text_suggests_ocr():
    assert "OCR" in error_of(g.make_pptx([{}, {}]), "pictures.pptx")


# --- Excel and CSV: tables kept as tables -----------------------------------------------------------

def test_xlsx_sheets_are_tables_with_header_and_row_numbers():
    data = g.make_xlsx({
        "Budget": [["Item", "Cost", "Paid", "Due"], ["Rent", 1200.0, True, datetime.date(2024, 1, 5)], [None],
                   ["Food | drink", 300.5, False, None]],
        "Empty": [],
        "Notes": [[None, None], [None, "only cell"]],
    }, title="Money")
    d = load_one(data, "money.xlsx")
    assert d.metadata["format"] == "xlsx" and d.metadata["table"] and d.metadata["sheets"] == 3
    assert d.title == "Money"
    assert [s.heading for s in d.sections] == ["Sheet Budget, rows 2-4", "Sheet Notes, row 2"]
    budget = d.text[d.sections[0].start:d.sections[0].end]
    assert budget.startswith("| Item | Cost | Paid | Due |\n| - | - | - | - |\n")
    assert "| Rent | 1200 | TRUE | 2024-01-05 |" in budget
    assert "| Food \\| drink | 300.5 | FALSE |  |" in budget  # pipes escaped, empty cells kept in place
    assert d.text[d.sections[1].start:].startswith("|  | only cell |")


def test_xlsx_formulas_give_the_saved_value_not_the_formula():
    d = load_one(g.make_xlsx({"S": [["a", "b"], [1, "=A2*2"]]}), "f.xlsx")
    assert "=A2" not in d.text  # openpyxl wrote no cached value: the cell is empty, not code


def test_xlsx_lying_dimensions_do_not_pad_rows():
    data = _with_sheet(g.make_xlsx({"S": [["h"], ["v"]]}),
                       lambda x: re.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:XFD1048576"/>', x))
    assert b"XFD1048576" in zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml")
    d = load_one(data, "lying.xlsx")
    assert d.text == "| h |\n| - |\n| v |"


def test_csv_is_a_table_in_blocks_that_repeat_the_header():
    data = g.budget_csv(60)
    d = load_one(data, "budget.csv")
    assert d.metadata["format"] == "csv" and d.metadata["rows"] == 60 and d.metadata["delimiter"] == "comma"
    header = "| Region | Quarter | Item | Amount (USD) | Owner |\n| - | - | - | - | - |\n"
    blocks = [d.text[s.start:s.end] for s in d.sections]
    assert len(blocks) > 1 and all(b.startswith(header) for b in blocks)
    assert d.sections[0].heading == "Rows 2-" + d.sections[0].heading.split("-")[1]
    assert "| North | Q1 | item number 0 | 1000.00 | owner-0 |" in blocks[0]
    assert d.text.count("item number ") == 60  # every row once


@pytest.mark.parametrize("delimiter, name", [(";", "a.csv"), ("\t", "a.tsv"), ("|", "a.csv"), ("\t", "a.csv")])
def test_csv_delimiters(delimiter, name):
    data = g.make_csv([["name", "value"], ["alpha", "1,5"], ["beta", "2"]], delimiter=delimiter)
    d = load_one(data, name)
    assert d.text.startswith("| name | value |") and "| alpha | 1,5 |" in d.text


def test_csv_quotes_newlines_and_legacy_encoding():
    data = g.make_csv([["Stadt", "Notiz"], ["Köln", "zwei\nZeilen"], ["Zürich", 'sagt "hallo"']], encoding="cp1252")
    d = load_one(data, "städte.csv")
    assert d.metadata["encoding"] == "cp1252"
    assert "| Köln | zwei Zeilen |" in d.text and '| Zürich | sagt "hallo" |' in d.text


def test_sniff_delimiter_prefers_consistent_splits():
    assert sniff_delimiter("a;b;c\n1;2,5;3\n4;5;6\n") == ";"
    assert sniff_delimiter('a,b\n"x;y",2\n') == ","
    assert sniff_delimiter("just words\nmore words\n") == ","


def test_every_chunk_of_a_500_row_csv_carries_the_header(settings):
    """Through the real pipeline: the loader sizes row blocks in the embedder's tokenizer, one per chunk."""
    from ingest.pipeline import ingest
    from rag.store import open_collection

    emb = FakeEmbedder()
    (r,) = ingest("tables", [("budget.csv", g.budget_csv(500))], settings=settings, embedder=emb)
    assert r.status == "added", r
    chunks = open_collection("tables", settings).document_chunks("budget.csv")
    assert len(chunks) == r.chunks > 20
    header = "| Region | Quarter | Item | Amount (USD) | Owner |\n| - | - | - | - | - |"
    limit = settings.chunking.chunk_tokens
    for c in chunks:
        assert c.text.startswith(header), c.text[:200]
        assert len(emb.tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= limit
        assert c.heading and c.heading.startswith(("Rows ", "Row "))
    rows = [line for c in chunks for line in c.text.split("\n")[2:]]
    assert len(rows) == len(set(rows)) == 500, "every row in exactly one chunk"


@pytest.mark.parametrize("chunk_tokens", [32, 64, 200])
def test_chunk_table_gives_one_chunk_per_block(chunk_tokens):
    tok = minilm_tokenizer()
    data = g.make_xlsx({"Budget": [["Item", "Cost"]] + [[f"thing {i}", i * 1.5] for i in range(120)],
                        "Second": [["Name"], ["x"], ["y"]]})
    (doc,) = load(data, "b.xlsx", table_fit=token_fit(tok, chunk_tokens))
    chunks = chunk_table(doc, tok, chunk_tokens=chunk_tokens, overlap_tokens=chunk_tokens // 5)
    assert len(chunks) == len(doc.sections)
    for c, s in zip(chunks, doc.sections):
        assert c.text == doc.text[c.start:c.end] and c.start == s.start and c.heading == s.heading
        assert c.text.startswith(("| Item | Cost |\n| - | - |\n", "| Name |\n| - |\n"))
    assert [c.id for c in chunks] == [f"b.xlsx#{i}" for i in range(len(chunks))]


def test_a_row_longer_than_a_chunk_is_cut_but_not_lost():
    tok = minilm_tokenizer()
    data = g.make_csv([["h"], ["word " * 300], ["short"]])
    (doc,) = load(data, "wide.csv", table_fit=token_fit(tok, 64))
    chunks = chunk_table(doc, tok, chunk_tokens=64, overlap_tokens=8)
    assert len(chunks) > 2 and chunks[-1].text.endswith("| short |")
    assert sum(c.text.count("word") for c in chunks) >= 300


def test_table_fit_defaults_to_an_estimate():
    (doc,) = load(g.budget_csv(100), "b.csv")
    small = load(g.budget_csv(100), "b.csv", table_fit=TableFit(limit=60))[0]
    assert 1 < len(doc.sections) < len(small.sections)


# --- OpenDocument text ---------------------------------------------------------------------------------

ODT_BODY = (
    '<text:h text:outline-level="1">Introduction</text:h>'
    '<text:p>Hello<text:s text:c="3"/>world<text:tab/>tab<text:line-break/>next line</text:p>'
    '<text:tracked-changes><text:changed-region><text:deletion><text:p>DELETED_TEXT</text:p></text:deletion>'
    '</text:changed-region></text:tracked-changes>'
    '<text:list><text:list-item><text:p>item one</text:p></text:list-item></text:list>'
    '<table:table><table:table-header-rows><table:table-row><table:table-cell><text:p>k</text:p></table:table-cell>'
    '<table:table-cell><text:p>v</text:p></table:table-cell></table:table-row></table:table-header-rows>'
    '<table:table-row><table:table-cell><text:p>a</text:p></table:table-cell><table:covered-table-cell/>'
    '<table:table-cell><text:p>b</text:p></table:table-cell></table:table-row></table:table>'
    '<text:section><text:h text:outline-level="2">Details</text:h>'
    '<text:p>After <text:span>a span</text:span> and a note<text:note><text:note-citation>1</text:note-citation>'
    '<text:note-body><text:p>the note</text:p></text:note-body></text:note>.</text:p></text:section>'
)


def test_odt_headings_lists_tables_and_spaces():
    d = load_one(g.make_odt(ODT_BODY, title="ODT title"), "doc.odt")
    assert d.metadata["format"] == "odt" and d.title == "ODT title"
    assert [s.heading for s in d.sections] == ["Introduction", "Details"]
    assert "Hello   world\ttab\nnext line" in d.text
    assert "item one" in d.text and "k | v\n\na | b" in d.text
    assert "After a span and a note" in d.text and "the note" in d.text
    assert "DELETED_TEXT" not in d.text


def test_odt_space_runs_are_capped():
    d = load_one(g.make_odt('<text:p>a<text:s text:c="1000000000"/>b</text:p>'), "spaces.odt")
    assert len(d.text) < 200


def test_odt_with_a_password_and_other_opendocument_kinds():
    enc = g.make_odt("<text:p>x</text:p>", manifest_extra="<manifest:encryption-data/>")
    assert "password" in error_of(enc, "locked.odt")
    sheet = g.make_odt("<text:p>x</text:p>", mimetype=b"application/vnd.oasis.opendocument.spreadsheet")
    assert "not supported" in error_of(sheet, "sheet.ods")
    assert "damaged" in error_of(g.make_odt("<text:p>unclosed"), "bad.odt")


# --- EPUB --------------------------------------------------------------------------------------------

def test_epub_chapters_in_order_with_visible_text_only():
    data = g.make_epub([
        ("Chapter One", "<h1>One</h1><p>First chapter text.</p><script>steal('SCRIPT_TEXT')</script>"
                        "<img src=x onerror=\"alert('ONERROR_TEXT')\"><div hidden>HIDDEN_TEXT</div>"),
        ("Chapter Two", "<p>No heading <a href=\"javascript:evil('HREF_TEXT')\">here</a>.</p>"),
    ], title="A Small Book")
    d = load_one(data, "book.epub")
    assert d.metadata["format"] == "epub" and d.metadata["chapters"] == 2 and d.title == "A Small Book"
    assert d.text.index("First chapter text.") < d.text.index("No heading here.")
    assert [s.heading for s in d.sections] == ["One", "Chapter Two"]  # no heading: its table-of-contents entry
    for marker in ("SCRIPT_TEXT", "ONERROR_TEXT", "HIDDEN_TEXT", "HREF_TEXT", "<", "steal"):
        assert marker not in d.text


ENCRYPTION = ('<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
              'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
              '<enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData></encryption>')


def test_epub_with_drm_is_refused_but_obfuscated_fonts_are_fine():
    drm = g.make_epub([("C", "<p>x</p>")], encryption_xml=ENCRYPTION.format(uri="EPUB/chap_1.xhtml"))
    assert "DRM" in error_of(drm, "drm.epub")
    fonts = g.make_epub([("C", "<p>visible</p>")], encryption_xml=ENCRYPTION.format(uri="EPUB/fonts/a.otf"))
    assert "visible" in load_one(fonts, "fonts.epub").text


# --- reStructuredText --------------------------------------------------------------------------------

def test_rst_sections_roles_and_sphinx_directives():
    d = load_one(g.RST.encode(), "primer.rst")
    assert d.metadata["format"] == "rst" and d.title == "OpenUSD primer"
    assert [s.heading for s in d.sections] == ["OpenUSD primer", "Layers", "Payloads"]
    assert "See the layer guide and UsdStage." in d.text  # unknown roles keep their visible text
    assert 'def Xform "World" {}' in d.text and "Sublayers are weaker" in d.text
    assert "New in version 23.11: Variant fallbacks." in d.text
    assert "payload | deferred" in d.text
    assert "toctree" not in d.text and "intro" not in d.text and ":ref:" not in d.text


def test_rst_never_reads_files_nor_passes_raw_html(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET_LINE\n")
    # a docutils.conf in the working directory must not turn file insertion back on
    (tmp_path / "docutils.conf").write_text("[general]\nfile_insertion_enabled: true\nraw_enabled: true\n")
    monkeypatch.chdir(tmp_path)
    src = f"""Title
=====

.. include:: {secret}

.. include:: {secret}
   :literal:

.. include:: /etc/passwd

.. raw:: html

   <script>alert('RAW_HTML')</script>

.. raw:: html
   :file: {secret}

.. csv-table:: Data
   :file: {secret}

.. figure:: {secret}
   :figwidth: image

   Caption stays.

.. role:: raw-html(raw)
   :format: html

Visible text :raw-html:`<script>ROLE_HTML</script>` and :unknown:`kept text`.
"""
    d = load_one(src.encode(), "evil.rst")
    assert "Visible text" in d.text and "Caption stays." in d.text and "kept text" in d.text
    for marker in ("TOPSECRET", "root:", "RAW_HTML", "ROLE_HTML", "<script", "include::", "raw::"):
        assert marker not in d.text, marker


def test_rst_bombs_and_limits():
    n = 100
    bomb = (".. |a| replace:: " + "|b| " * n + "\n.. |b| replace:: " + "|c| " * n + "\n.. |c| replace:: "
            + "|d| " * n + "\n.. |d| replace:: xxxxxxxxxx\n\n|a|\n")
    assert "substitutions" in error_of(bomb.encode(), "amplify.rst")
    deep = "".join(("   " * i) + "quote\n\n" for i in range(MAX_NESTING + 5))
    assert "levels deep" in error_of(deep.encode(), "deep.rst")
    big = b"Some words in a paragraph.\n\n" * (MAX_RST_BYTES // 28 + 1)
    assert "rename it to .txt" in error_of(big, "big.rst")
    assert "no text" in error_of(b".. include:: /etc/passwd\n\n.. toctree::\n\n   a\n", "only-directives.rst")


def test_rst_long_lines_and_broken_markup_keep_their_text():
    d = load_one(b"Title\n=====\n\n" + b"word " * 20_000 + b"\n\n*unclosed emphasis and `tick\n", "long.rst")
    assert d.text.count("word") == 20_000 and "unclosed emphasis" in d.text


# --- source and scene-description text -----------------------------------------------------------------

def test_python_and_usda_outline_sections():
    py = load_one(b"import os\n\nclass Stage:\n    pass\n\n\nasync def open_stage():\n    return 1\n", "stage.py")
    assert py.metadata["format"] == "code" and py.metadata["language"] == "Python"
    assert [s.heading for s in py.sections] == [None, "class Stage", "async def open_stage"]
    usda = b'#usda 1.0\n(\n    defaultPrim = "World"\n)\n\ndef Xform "World"\n{\n    def Sphere "Ball" {}\n}\n\nover "Extra" {}\n'
    d = load_one(usda, "scene.usda")
    assert d.text == usda.decode() and d.metadata["language"] == "USD"
    assert [s.heading for s in d.sections] == [None, 'def Xform "World"', 'over "Extra"']


@pytest.mark.parametrize("name, data", [
    ("data.json", b'{"_id": "1", "text": "a record"}\n'),        # not taken for a BEIR corpus
    ("page.xml", b"<?xml version='1.0'?><html><body>x</body></html>"),  # kept as written, not as HTML
    ("cfg.yaml", b"# Not a heading\nkey: value\n"),              # not Markdown
    ("layer.usd", b'#usda 1.0\ndef "X" {}\n'),                  # a text .usd
])
def test_code_is_kept_as_written(name, data):
    d = load_one(data, name)
    assert d.metadata["format"] == "code" and d.text == data.decode()


def test_binary_renamed_as_source_is_refused():
    assert "binary" in error_of(g.make_binary_garbage(5000, 9), "data.json")
    assert "ELF" in error_of(g.make_elf(), "tool.py")
    assert "usdcat" in error_of(g.make_usdc(), "scene.usd")
    assert "binary" in error_of(b"\x00\x01" * 100, "prog.c")


def test_every_allowed_type_has_a_loader_and_every_loader_is_allowed():
    from rag.config import LimitSettings

    allowed = set(LimitSettings().allowed_types)
    assert allowed <= set(SUFFIXES) | {"zip"}
    assert set(LANGUAGES) | {"pptx", "xlsx", "odt", "epub", "csv", "tsv", "rst"} <= allowed


# --- zip-based documents: bombs, damage, passwords ------------------------------------------------------

@pytest.mark.parametrize("kind", ["pptx", "xlsx", "odt", "epub"])
def test_container_bomb_is_refused_before_parsing(kind):
    msg = error_of(g.make_container_bomb(kind, 20 << 20), f"bomb.{kind}")
    assert "decompression bomb" in msg


GOOD = {"pptx": lambda: g.make_pptx([{"title": "T", "body": ["b"]}]),
        "xlsx": lambda: g.make_xlsx({"S": [["a"], ["1"]]}),
        "odt": lambda: g.make_odt("<text:p>x</text:p>"),
        "epub": lambda: g.make_epub([("C", "<p>x</p>")])}


@pytest.mark.parametrize("kind", list(GOOD))
def test_damaged_and_mislabelled_containers(kind):
    data = GOOD[kind]()
    assert "damaged" in error_of(data[: len(data) // 2], f"cut.{kind}")
    assert "is not a" in error_of(b"plain text, renamed", f"text.{kind}")
    assert "PNG" in error_of(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, f"image.{kind}")


@pytest.mark.parametrize("kind", list(GOOD))
def test_container_with_damaged_parts(kind):
    """Every part present but its XML garbage: the library's own error never reaches the user."""
    data = GOOD[kind]()
    src = zipfile.ZipFile(io.BytesIO(data))
    parts = {i.filename: (b"<<garbage" if i.filename.endswith((".xml", ".xhtml", ".opf", ".rels")) and
                          i.filename != "mimetype" else src.read(i.filename)) for i in src.infolist()}
    try:
        docs = load(g.make_zip(parts, compression=zipfile.ZIP_STORED), f"garbled.{kind}")
    except LoadError as e:
        assert_clear(str(e), f"garbled.{kind}")
    else:
        assert all(d.text.strip() for d in docs)


@pytest.mark.parametrize("kind", list(GOOD))
def test_container_with_an_encrypted_part(kind):
    assert "password" in error_of(g.set_encrypted_flag(GOOD[kind]()), f"locked.{kind}")


def test_encrypted_office_file_says_password():
    for name in ("locked.xlsx", "locked.pptx", "locked.docx"):
        assert "password" in error_of(g.make_encrypted_office(), name)


def test_container_declaring_too_many_parts():
    data = bytearray(GOOD["pptx"]())
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 8:eocd + 12] = (MAX_PARTS + 1).to_bytes(2, "little") * 2
    msg = error_of(bytes(data), "many.pptx")
    assert "parts" in msg or "damaged" in msg


def test_unsupported_office_kind_names_the_supported_ones():
    msg = error_of(g.make_zip({"[Content_Types].xml": b"<T/>", "xl/workbook.bin": b"x"}), "book.xlsb")
    assert ".pptx" in msg and ".xlsx" in msg and ".epub" in msg


def _with_sheet(data: bytes, edit) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    parts = {i.filename: src.read(i.filename) for i in src.infolist()}
    sheet = next(n for n in parts if n.startswith("xl/worksheets/sheet"))
    parts[sheet] = edit(parts[sheet])
    return g.make_zip(parts)


def test_xlsx_past_excel_limits_is_refused(monkeypatch):
    far = _with_sheet(g.make_xlsx({"S": [["h"], ["v"]]}),
                      lambda x: x.replace(b'<row r="2"', b'<row r="999999999"').replace(b'r="A2"', b'r="A999999999"'))
    assert "more than Excel allows" in error_of(far, "rows.xlsx")
    import ingest.formats.xlsx as xlsx

    monkeypatch.setattr(xlsx, "MAX_CELLS", 50)
    msg = error_of(g.make_xlsx({"S": [[f"c{i}" for i in range(10)]] * 10}), "cells.xlsx")
    assert "cells" in msg and "CSV" in msg


def test_blocks_are_measured_whole_when_sizes_do_not_add_up():
    """A tokenizer whose block count exceeds the sum of its lines: blocks are halved until each fits."""
    def count(texts):
        return [10 * (t.count("\n") + 1) + (40 if t.count("\n") > 4 else 0) for t in texts]

    fit = TableFit(count, limit=100)
    (doc,) = load(g.budget_csv(50), "b.csv", table_fit=fit)
    blocks = [doc.text[s.start:s.end].strip() for s in doc.sections]
    assert all(count([b])[0] <= 100 for b in blocks)
    assert sum(b.count("item number") for b in blocks) == 50
    assert all(b.startswith("| Region |") for b in blocks)


def test_each_new_format_is_accepted_and_cited_by_its_sections(settings):
    """Through ingest() with the default settings: every new type is allowed, and chunks carry slide, sheet,
    chapter or section headings for citations."""
    from ingest.pipeline import ingest
    from rag.store import open_collection

    files = {
        "deck.pptx": (g.make_pptx([{"title": "Roadmap", "body": ["Ship offline mode"]}]), "Slide 1: Roadmap"),
        "money.xlsx": (g.make_xlsx({"Budget": [["Item", "Cost"], ["Rent", 1200]]}), "Sheet Budget, row 2"),
        "rates.csv": (g.make_csv([["From", "To", "Rate"], ["USD", "EUR", "0.92"]]), "Row 2"),
        "notes.odt": (g.make_odt('<text:h text:outline-level="1">Minutes</text:h><text:p>Agreed.</text:p>'), "Minutes"),
        "book.epub": (g.make_epub([("Opening", "<h1>Prologue</h1><p>It began.</p>")]), "Prologue"),
        "primer.rst": (g.RST.encode(), "OpenUSD primer"),
        "stage.py": (b"class Stage:\n    pass\n", "class Stage"),
        "scene.usda": (b'#usda 1.0\ndef Xform "World" {}\n', None),
    }
    results = ingest("formats", [(n, d) for n, (d, _) in files.items()], settings=settings, embedder=FakeEmbedder())
    assert {r.name: r.status for r in results} == {n: "added" for n in files}, results
    col = open_collection("formats", settings)
    for name, (_, heading) in files.items():
        chunks = col.document_chunks(name)
        assert chunks, name
        if heading:
            assert chunks[0].heading == heading, (name, chunks[0].heading)
