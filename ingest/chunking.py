"""Document → token-aware, overlapping chunks whose text is an exact slice of the document.

Sizes are measured in the embedder's Hugging Face *fast* tokenizer (it must return offsets).
The document is tokenized in bounded character windows cut at whitespace, so a 50 MB text never
becomes one giant encoding, and only a window's worth of token offsets is held at a time.

How a chunk ends: it takes at most ``chunk_tokens`` tokens from its start, and prefers to end, within
the last ~20% of that window, at a paragraph break, else at a sentence end, else at a line break;
failing those, at the last space, else at the last word boundary. The next chunk starts up to
``overlap_tokens`` tokens earlier, at a sentence start when the overlap holds one, else at a word start.

Guarantees (property-tested): ``chunk.text == doc.text[chunk.start:chunk.end]``; starts and ends
strictly increase; every non-whitespace character of the document is in some chunk (characters the
tokenizer ignores, such as control characters, go with the chunk before them); chunks never begin or
end with whitespace; ``len(tokenizer(chunk.text))`` (no special tokens) <= ``chunk_tokens``, i.e. the
limit holds for the chunk text as the embedder will see it. To make sure, a chunk is re-tokenized on
its own and shortened if needed, except where that provably cannot differ: a WordPiece tokenizer
behind a whitespace/punctuation pre-tokenizer (MiniLM, BERT), with both cuts between two words (checked
on the first chunks anyway). The one exception to the limit: a single "token" that alone re-tokenizes
to more than ``chunk_tokens`` tokens is kept whole rather than cut (not seen with chunk_tokens >= 16).

Text the tokenizer turns into one token however long it is (WordPiece maps any word over 100
characters to ``[UNK]``) is cut into pieces of at most ``MAX_TOKEN_CHARS`` characters that count
as one token each, which bounds a chunk's length in characters too.
"""
from __future__ import annotations

import bisect
import re

from rag.types import Chunk, Document

__all__ = ["chunk_document"]

WINDOW_CHARS = 16384    # characters per tokenizer window (cut at a space when there is one)
WINDOWS_PER_CALL = 4
MAX_TOKEN_CHARS = 100   # longer token spans count as several tokens
TAIL_FRACTION = 0.2     # look for a paragraph/sentence end in this last part of a full chunk
MIN_CHUNK_TOKENS = 16

_SENT_END = set(".!?;\u3002\uff01\uff1f\u2026\u061f\u0964")   # . ! ? ; 。 ！ ？ … ؟ ।
_CJK_SENT_END = set("\u3002\uff01\uff1f")                      # no space needed after these
_CLOSERS = set("\"')]}\u201d\u2019\u00bb\u300d\u300f\uff09")   # closing quotes/brackets after a sentence end
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")

_PARA, _SENT, _LINE = 3, 2, 1


class _Tokens:
    """Token spans of ``text`` (global char offsets), produced window by window, trimmed from the front."""

    def __init__(self, text: str, tokenizer):
        self.text, self.tok = text, tokenizer
        self.s: list[int] = []
        self.e: list[int] = []
        self.w: list[int] = []
        self.base = 0          # global index of self.s[0]
        self.pos = 0           # characters tokenized so far
        self.next_word = 0
        self.unsafe: set[int] = set()      # token indices where a cut may change how the text tokenizes

    @property
    def done(self) -> bool:
        return self.pos >= len(self.text)

    @property
    def known(self) -> int:
        return self.base + len(self.s)

    def ensure(self, n: int) -> None:
        """Tokenize until at least ``n`` tokens are known or the text is exhausted."""
        while self.known < n and not self.done:
            self._window()

    def trim(self, keep_from: int) -> None:
        k = keep_from - self.base
        if k > 4096:
            del self.s[:k], self.e[:k], self.w[:k]
            self.base = keep_from
            self.unsafe = {i for i in self.unsafe if i >= keep_from}

    def _window(self) -> None:
        """Tokenize the next ``WINDOWS_PER_CALL`` windows (one batched call: the Rust side may use threads)."""
        text = self.text
        bounds = []
        start = self.pos
        while start < len(text) and len(bounds) < WINDOWS_PER_CALL:
            end = min(len(text), start + WINDOW_CHARS)
            hard = False
            if end < len(text):
                lo = start + WINDOW_CHARS // 2
                cut = max(text.rfind(c, lo, end) for c in ("\n", " ", "\t", "\u3000", "\u3002"))
                if cut >= lo:
                    end = cut + 1
                else:
                    hard = True  # no space in sight: this cut may fall inside a word
            bounds.append((start, end, hard))
            start = end
        self.pos = start
        enc = self.tok([_encodable(text[a:b]) for a, b, _ in bounds], add_special_tokens=False,
                       return_offsets_mapping=True, verbose=False)
        for j, (start, end, hard) in enumerate(bounds):
            try:
                words = enc.word_ids(j)
            except (ValueError, AttributeError):
                words = None
            self._add(start, enc["offset_mapping"][j], words)
            if hard:
                self.unsafe.add(self.known)  # the first token of the next window

    def _add(self, start: int, offsets, words) -> None:
        if words is None:
            words = [None] * len(offsets)
        base_word = self.next_word
        s_, e_, w_ = self.s, self.e, self.w
        if None not in words and all(0 < b - a <= MAX_TOKEN_CHARS for a, b in offsets):  # the usual case
            s_.extend(a + start for a, _ in offsets)
            e_.extend(b + start for _, b in offsets)
            w_.extend(w + base_word for w in words)
            last_word = max(words, default=-1)
        else:
            last_word = -1
            for (a, b), wid in zip(offsets, words):
                if b <= a:
                    continue
                if wid is None:
                    wid = last_word + 1
                last_word = max(last_word, wid)
                a += start
                b += start
                word = base_word + wid
                while b - a > MAX_TOKEN_CHARS:  # see module docstring
                    s_.append(a), e_.append(a + MAX_TOKEN_CHARS), w_.append(word)
                    a += MAX_TOKEN_CHARS
                    self.unsafe.add(len(s_) + self.base)
                s_.append(a), e_.append(b), w_.append(word)
        self.next_word = base_word + last_word + 2  # windows never share a word

    def clean_cut(self, i: int) -> bool:
        """True when cutting before token ``i`` splits between two words the tokenizer sees separately."""
        if i <= 0 or i >= self.known:
            return True
        k = i - self.base
        return self.w[k] != self.w[k - 1] and self.s[k] >= self.e[k - 1] and i not in self.unsafe


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    """Lone surrogates (possible from JSON escapes) cannot reach the Rust tokenizer; same length keeps offsets."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(_encodable(text), add_special_tokens=False, verbose=False)["input_ids"])


def chunk_document(doc: Document, tokenizer, *, chunk_tokens: int = 200, overlap_tokens: int = 40) -> list[Chunk]:
    """Split ``doc.text`` into chunks of at most ``chunk_tokens`` tokens overlapping by up to ``overlap_tokens``.

    ``tokenizer`` is a Hugging Face fast tokenizer (``embedder.tokenizer``). Returns ``[]`` for a
    document without visible text.
    """
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < MIN_CHUNK_TOKENS:
        raise ValueError(f"chunk_tokens must be an integer >= {MIN_CHUNK_TOKENS}, got {chunk_tokens!r}")
    if (isinstance(overlap_tokens, bool) or not isinstance(overlap_tokens, int)
            or not 0 <= overlap_tokens < chunk_tokens):
        raise ValueError(f"overlap_tokens must be an integer from 0 to chunk_tokens - 1 "
                         f"(0..{chunk_tokens - 1}), got {overlap_tokens!r}")
    if not getattr(tokenizer, "is_fast", True):
        raise ValueError("chunk_document needs a Hugging Face *fast* tokenizer (one that returns offsets); "
                         "load it with AutoTokenizer.from_pretrained(..., use_fast=True).")
    text = doc.text
    if not text or text.isspace():
        return []
    spans = list(_spans(text, tokenizer, chunk_tokens, overlap_tokens))
    return _make_chunks(doc, spans)


def _spans(text: str, tokenizer, T: int, O: int):
    """Yield (start, end) character spans of the chunks, already stripped of whitespace."""
    toks = _Tokens(text, tokenizer)
    toks.ensure(T + 1)
    if toks.known == 0:  # nothing the tokenizer counts (e.g. only control characters)
        span = _strip(text, 0, len(text))
        if span:
            yield span
        return
    # For WordPiece behind a whitespace/punctuation pre-tokenizer, a chunk cut between two words
    # re-tokenizes to exactly its tokens, so it needs no re-check (still confirmed on the first chunks).
    trust_words = _separable(tokenizer)
    checked = 0
    a, prev_c = 0, 0
    last_end = -1
    while True:
        toks.ensure(a + T + 1)
        toks.trim(a - 1)
        n = toks.known
        start = 0 if a == 0 else toks.s[a - toks.base]
        if toks.done and a + T >= n:
            c = n
        else:
            c = _cut(toks, text, a, max(a, prev_c) + 1, a + T)
        while True:  # check the chunk as the embedder will see it, shorten if needed
            last = c == n and toks.done
            end = len(text) if last else toks.s[c - toks.base]
            span = _strip(text, start, end)
            if span is None:
                break
            if trust_words and checked >= 3 and toks.clean_cut(a) and (last or toks.clean_cut(c)):
                break
            count = _count(tokenizer, text[span[0]:span[1]])
            if checked < 3:
                checked += 1
                trust_words = trust_words and count == c - a
            lo = max(a, prev_c) + 1
            if count <= T or c <= lo:
                break
            c = _cut(toks, text, a, lo, max(lo, c - max(1, count - T)), tail_only=False)
        if span is not None and span[1] > last_end:
            yield span
            last_end = span[1]
        if c >= n and toks.done:
            return
        a, prev_c = _overlap_start(toks, text, a, c, O), c


def _separable(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = type(getattr(backend, "model", None)).__name__
    pre = type(getattr(backend, "pre_tokenizer", None)).__name__
    return model == "WordPiece" and pre in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit")


_NON_SPACE = re.compile(r"\S")


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    m = _NON_SPACE.search(text, start, end)
    if m is None:
        return None
    start = m.start()
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _break_before(toks: _Tokens, text: str, i: int) -> int:
    """How good a place to cut is just before token ``i``: 3 paragraph, 2 sentence, 1 line, 0 other, -1 never."""
    k = i - toks.base
    e_prev, s_next = toks.e[k - 1], toks.s[k]
    if s_next < e_prev:
        return -1  # the two tokens share a character
    gap = text[e_prev:s_next]
    if gap:
        if "\n" in gap:
            return _PARA if _BLANK_LINE.search(gap) else _LINE
    last = text[e_prev - 1]
    j = e_prev - 1
    while last in _CLOSERS and j > 0 and e_prev - j < 4:  # `."` or `.)` ends a sentence too
        j -= 1
        last = text[j]
    if last in _SENT_END and (gap or last in _CJK_SENT_END):
        return _SENT
    return 0


def _cut(toks: _Tokens, text: str, a: int, lo: int, b: int, tail_only: bool = True) -> int:
    """Where to end a chunk starting at token ``a``: a token index in ``[lo, b]`` (cut before it)."""
    if b <= lo:
        return max(lo, b)
    tail = max(lo, b - max(1, int((b - a) * TAIL_FRACTION))) if tail_only else lo
    best, best_score = -1, 0
    for i in range(b, tail - 1, -1):
        sc = _break_before(toks, text, i)
        if sc > best_score:
            best, best_score = i, sc
            if sc == _PARA:
                break
    if best >= 0:
        return best
    half = max(lo, a + (b - a) // 2)
    for i in range(b, half - 1, -1):  # the last space in the second half
        k = i - toks.base
        if toks.s[k] > toks.e[k - 1]:
            return i
    word_boundary = any_boundary = -1
    for i in range(b, lo - 1, -1):
        k = i - toks.base
        if toks.s[k] >= toks.e[k - 1]:
            if toks.w[k] != toks.w[k - 1]:
                word_boundary = i
                break
            if any_boundary < 0:
                any_boundary = i
    if word_boundary >= 0:
        return word_boundary
    return any_boundary if any_boundary >= 0 else b


def _overlap_start(toks: _Tokens, text: str, a: int, c: int, O: int) -> int:
    """The first token of the next chunk: up to ``O`` tokens before ``c``, at a sentence or word start."""
    if O <= 0:
        return c
    first = max(a + 1, c - O)
    word = -1
    for i in range(first, c):
        sc = _break_before(toks, text, i)
        if sc >= _SENT or sc == _LINE:
            return i
        if word < 0 and sc == 0 and toks.w[i - toks.base] != toks.w[i - 1 - toks.base]:
            word = i
    return word if word >= 0 else c


def _make_chunks(doc: Document, spans: list[tuple[int, int]]) -> list[Chunk]:
    sections = sorted(doc.sections, key=lambda s: s.start)
    starts = [s.start for s in sections]
    chunks = []
    for i, (s, e) in enumerate(spans):
        k = bisect.bisect_right(starts, s) - 1
        sec = sections[k] if k >= 0 else None
        chunks.append(Chunk(
            id=f"{doc.doc_id}#{i}", doc_id=doc.doc_id, source=doc.source, text=doc.text[s:e],
            start=s, end=e, page=sec.page if sec else None, heading=sec.heading if sec else None,
            title=doc.title,
        ))
    return chunks
