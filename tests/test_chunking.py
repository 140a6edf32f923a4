"""ingest.chunking: exact offsets, coverage, token limits and boundaries, in the embedder's tokenizer."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.chunking import chunk_document
from rag.types import Document, Section

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from rag.embed import packaged_minilm_path

    return AutoTokenizer.from_pretrained(str(packaged_minilm_path()), local_files_only=True)


def ntok(tok, text: str) -> int:
    text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)  # Rust strings have no surrogates
    return len(tok(text, add_special_tokens=False)["input_ids"])


def check(doc: Document, chunks, tok, chunk_tokens: int):
    """The invariants every chunking must satisfy."""
    text = doc.text
    prev_start = prev_end = -1
    for i, c in enumerate(chunks):
        assert c.id == f"{doc.doc_id}#{i}" and c.doc_id == doc.doc_id and c.source == doc.source
        assert c.title == doc.title
        assert 0 <= c.start < c.end <= len(text)
        assert c.text == text[c.start:c.end]
        assert c.text == c.text.strip(), "chunks never begin or end with whitespace"
        assert c.start > prev_start and c.end > prev_end, "offsets strictly increase"
        prev_start, prev_end = c.start, c.end
        assert ntok(tok, c.text) <= chunk_tokens, (i, ntok(tok, c.text))
    # coverage: every non-whitespace character lies in some chunk
    covered = 0  # everything before this offset is covered (or whitespace)
    for c in chunks:
        gap = text[covered:c.start]
        assert gap.strip() == "" or c.start <= covered, f"lost text: {gap!r}"
        covered = max(covered, c.end)
    assert text[covered:].strip() == "", f"lost tail: {text[covered:]!r}"


def sentences(n: int, start: int = 0) -> str:
    return " ".join(f"Sentence number {i} talks about retrieval and chunking." for i in range(start, start + n))


# --- arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("ct, ov", [(15, 0), (0, 0), (200, 200), (200, -1), (200, 500), (True, 0), (64.0, 4)])
def test_invalid_arguments_say_the_valid_range(tok, ct, ov):
    doc = Document("d", "d.txt", "text")
    with pytest.raises(ValueError, match=r">= 16|0\.\.|chunk_tokens - 1"):
        chunk_document(doc, tok, chunk_tokens=ct, overlap_tokens=ov)


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t "])
def test_empty_document_has_no_chunks(tok, text):
    assert chunk_document(Document("d", "d.txt", text), tok) == []


def test_short_document_is_one_stripped_chunk(tok):
    doc = Document("d", "d.txt", "\n  Just one short line.  \n", title="T")
    (c,) = chunk_document(doc, tok)
    assert c.text == "Just one short line." and (c.start, c.end) == (3, 23)
    assert c.id == "d#0" and c.title == "T" and c.page is None and c.heading is None


# --- sizes, overlap, boundaries ---------------------------------------------------------------

def test_sizes_and_overlap(tok):
    doc = Document("d", "d.txt", sentences(60))
    chunks = chunk_document(doc, tok, chunk_tokens=64, overlap_tokens=16)
    check(doc, chunks, tok, 64)
    assert len(chunks) > 5
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end, "consecutive chunks overlap"
        shared = doc.text[b.start:a.end]
        assert 0 < ntok(tok, shared) <= 16
    assert all(ntok(tok, c.text) >= 40 for c in chunks[:-1]), "chunks are not needlessly short"


def test_no_overlap(tok):
    doc = Document("d", "d.txt", sentences(40))
    chunks = chunk_document(doc, tok, chunk_tokens=50, overlap_tokens=0)
    check(doc, chunks, tok, 50)
    assert all(b.start >= a.end for a, b in zip(chunks, chunks[1:]))


def test_prefers_sentence_ends(tok):
    doc = Document("d", "d.txt", sentences(50))
    chunks = chunk_document(doc, tok, chunk_tokens=64, overlap_tokens=10)
    assert all(c.text.endswith(".") for c in chunks)
    assert all(c.text.startswith("Sentence") for c in chunks), "overlap starts at a sentence"


def test_prefers_paragraph_ends(tok):
    # paragraphs of ~60 tokens: with 64-token chunks the paragraph break lies in the last 20%
    paras = [sentences(6, 6 * i) for i in range(8)]
    assert all(52 <= ntok(tok, p) <= 63 for p in paras)
    doc = Document("d", "d.txt", "\n\n".join(paras))
    chunks = chunk_document(doc, tok, chunk_tokens=64, overlap_tokens=0)
    check(doc, chunks, tok, 64)
    assert [c.text for c in chunks] == paras


def test_sections_give_page_and_heading(tok):
    p1, p2 = sentences(30), sentences(30, 100)
    text = p1 + "\n\n" + p2
    doc = Document("r.pdf", "r.pdf", text, title="Report", sections=[
        Section(0, len(p1), page=1), Section(len(p1) + 2, len(text), page=2, heading="Results")])
    chunks = chunk_document(doc, tok, chunk_tokens=64, overlap_tokens=8)
    check(doc, chunks, tok, 64)
    for c in chunks:
        expect = (1, None) if c.start < len(p1) + 2 else (2, "Results")
        assert (c.page, c.heading) == expect
        assert c.title == "Report"
    assert {c.page for c in chunks} == {1, 2}


def test_text_before_first_section_has_no_heading(tok):
    pre, body = sentences(3), sentences(3, 10)
    text = f"{pre}\n\n# H\n\n{body}"
    doc = Document("d", "d.md", text, sections=[Section(len(pre) + 2, len(text), heading="H")])
    chunks = chunk_document(doc, tok, chunk_tokens=24, overlap_tokens=0)
    check(doc, chunks, tok, 24)
    assert chunks[0].heading is None and chunks[-1].heading == "H"


# --- awkward text -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "a" * 5000,                                               # one [UNK] word, far longer than any token
    "supercalifragilistic" * 300,                             # one long word of many word pieces
    "日本語の文章です。" * 400,                                  # CJK without spaces
    "https://example.com/" + "path/" * 800,                   # a huge URL
    "\x01\x02\x03 \u200b\u200b",                              # characters the tokenizer ignores
    "word\x00word " * 300,
    "🙂" * 700 + " done",
    "e\u0301" * 2000,                                         # combining marks
])
def test_awkward_texts(tok, text):
    doc = Document("d", "d.txt", text)
    chunks = chunk_document(doc, tok, chunk_tokens=32, overlap_tokens=8)
    check(doc, chunks, tok, 32)
    assert chunks
    assert max(len(c.text) for c in chunks) <= 32 * 100 + 100, "characters per chunk stay bounded"


def test_lone_surrogates_do_not_crash(tok):
    doc = Document("d", "d.txt", "before \ud800 after " * 50)
    check(doc, chunk_document(doc, tok, chunk_tokens=16, overlap_tokens=4), tok, 16)


class CountingTokenizer:
    """Wraps a tokenizer and counts the characters it is asked to tokenise (work, not wall-clock time)."""

    def __init__(self, tok):
        self.tok, self.chars, self.is_fast = tok, 0, True

    def __call__(self, text, *args, **kwargs):
        self.chars += len(text) if isinstance(text, str) else sum(len(t) for t in text)
        return self.tok(text, *args, **kwargs)


def test_long_text_is_windowed_and_linear(tok):
    # ~1.2 MB on one line: crosses many tokenizer windows; the tokenizer sees each character a bounded
    # number of times (windows, overlaps and cut checks), so the work grows linearly with the text
    text = sentences(20000)
    doc = Document("big", "big.txt", text)
    counting = CountingTokenizer(tok)
    chunks = chunk_document(doc, counting, chunk_tokens=200, overlap_tokens=40)
    assert chunks[-1].end == len(text) and chunks[0].start == 0
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))
    sample = chunks[::50]
    assert all(ntok(tok, c.text) <= 200 for c in sample)
    assert counting.chars <= 4 * len(text), counting.chars / len(text)


# --- properties -------------------------------------------------------------------------------

_words = st.sampled_from(["retrieval", "the", "chunk", "Überfluß", "naïve", "token", "x", "A.B.C", "3.14",
                          "don't", "日本", "🙂", "supercalifragilisticexpialidocious", "-", "(", ")"])
_seps = st.sampled_from([" ", " ", " ", "\n", "\n\n", ". ", "! ", "? ", "。", "\t", "  \n  \n"])
_piece = st.one_of(_words, _seps, st.text(max_size=6))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_piece, max_size=400), chunk_tokens=st.integers(16, 48), data=st.data())
def test_chunk_properties(tok, pieces, chunk_tokens, data):
    overlap = data.draw(st.integers(0, chunk_tokens - 1), label="overlap")
    text = "".join(pieces)
    doc = Document("p", "p.txt", text)
    chunks = chunk_document(doc, tok, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    check(doc, chunks, tok, chunk_tokens)
    assert bool(chunks) == bool(text.strip())


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=400))
def test_arbitrary_unicode(tok, text):
    doc = Document("u", "u.txt", text)
    check(doc, chunk_document(doc, tok, chunk_tokens=16, overlap_tokens=5), tok, 16)
