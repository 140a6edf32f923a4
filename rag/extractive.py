"""Sentences of retrieved passages, scored against a question: what the small offline model is sent, and
what it is replaced by when its answer is unusable.

- :func:`units` splits a passage (Markdown or plain text) into sentences, list items, table rows and code
  blocks, with wrapped lines joined.
- :func:`trim` keeps a passage's best-matching units within a token budget, in their original order: the
  135M model gets a few short, relevant passages instead of 1,800 tokens it cannot use.
- :func:`extract` is the extractive answer: the best-matching sentences of the passages sent, each with its
  ``[n]``, under :data:`EXTRACTED_LABEL`.
- :func:`attribute` finds the passages that an uncited answer's words come from; :func:`support` says how
  much of an answer's wording the passages hold at all.

Scoring is BM25 over the units of the passages at hand (the question's words, stemmed, less stopwords and
question words), with a small bonus for higher-ranked passages. No model call: microseconds per passage.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from .sparse import Tokenizer
from .types import Hit

EXTRACTED_LABEL = "Extracted from the sources (the offline model's answer {why}):"
# words of questions that say nothing about the topic
QUESTION_WORDS = frozenset(
    "how what which why when where who whom whose do does did doing done can could should would may might must "
    "shall i me my we our you your please tell explain describe happen happens happened get use using used".split())
# words that say little about where a sentence comes from (beside bm25s' 33 stopwords and QUESTION_WORDS)
FUNCTION_WORDS = frozenset(
    "all also any been being both each every from has have having her here him his its just more most much "
    "no nor not now off once one only other our out over own same she so some than them those through too "
    "under until up very were which while who will within without yet".split())
K1, B = 1.2, 0.75             # BM25 over the units of a few passages
RANK_BONUS = 0.05             # per rank above the last passage: ties go to the better passage
MAX_UNIT_CHARS = 600          # a longer paragraph without sentence ends is cut (words kept whole)

_TOKENIZE = Tokenizer("en", "english")
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9`\"'(\[*_])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_CHARS = frozenset('{}[]"=|<>/\\$#')


@dataclass
class Unit:
    """One sentence, list item, table row or code block of a passage; ``index`` is its position."""

    text: str
    index: int
    kind: str = "sentence"      # sentence | item | row | code | heading

    @property
    def fragment(self) -> bool:
        """Starts mid-sentence (a chunk's overlap with the previous one)."""
        return self.kind == "sentence" and self.index == 0 and self.text[:1].islower()

    @property
    def prose(self) -> bool:
        """Reads as a sentence, not as JSON, a path or a command line."""
        return self.kind in ("sentence", "item") and sum(c in _CODE_CHARS for c in self.text) <= 0.03 * len(self.text)


def _split_sentences(text: str) -> list[str]:
    out = []
    for s in _SENT_END.split(text):
        s = s.strip()
        while len(s) > MAX_UNIT_CHARS:
            cut = s.rfind(" ", 0, MAX_UNIT_CHARS)
            cut = cut if cut > MAX_UNIT_CHARS // 2 else MAX_UNIT_CHARS
            out.append(s[:cut].strip())
            s = s[cut:].strip()
        if s:
            out.append(s)
    return out


def units(text: str) -> list[Unit]:
    """``text`` as units, in order: sentences of paragraphs (wrapped lines joined), list items (their
    continuation lines joined), table rows, fenced code blocks and headings."""
    blocks: list[tuple[str, str]] = []   # (kind, text)
    para: list[str] = []
    kind = "sentence"
    code: list[str] | None = None

    def flush():
        nonlocal para
        if para:
            blocks.append((kind, " ".join(p.strip() for p in para)))
        para = []

    lines = (text or "").splitlines()
    fences = [ln.strip() for ln in lines if _FENCE.match(ln)]
    if len(fences) % 2 and fences[0] in ("```", "~~~"):
        code = []   # the passage starts inside a code block: its first fence (bare) closes it
    for line in lines:
        if code is not None:
            if _FENCE.match(line):
                blocks.append(("code", "\n".join(code).strip()))
                code = None
            else:
                code.append(line)
            continue
        if _FENCE.match(line):
            flush()
            code = []
            continue
        stripped = line.strip()
        if not stripped:
            flush()
            kind = "sentence"
        elif stripped.startswith("#"):
            flush()
            blocks.append(("heading", stripped.lstrip("#").strip()))
            kind = "sentence"
        elif stripped.startswith("|"):
            flush()
            if not re.fullmatch(r"\|[\s|:-]*\|?", stripped):   # not the |---|---| separator
                blocks.append(("row", stripped))
            kind = "sentence"
        elif _LIST_ITEM.match(line):
            flush()
            kind = "item"
            para = [_LIST_ITEM.sub("", line, count=1)]
        else:
            para.append(stripped)
    flush()
    if code:
        blocks.append(("code", "\n".join(code).strip()))
    out: list[Unit] = []
    for kind, body in blocks:
        if not body:
            continue
        pieces = _split_sentences(body) if kind in ("sentence", "item") else [body]
        for i, piece in enumerate(pieces):
            out.append(Unit(piece, len(out), kind if (kind != "item" or i == 0) else "sentence"))
    return out


def query_terms(question: str) -> list[str]:
    """The question's search terms: stemmed words, less stopwords and question words."""
    words = [w for w in re.findall(r"(?u)\b\w\w+\b", question.lower()) if w not in QUESTION_WORDS]
    return list(dict.fromkeys(_TOKENIZE(" ".join(words))))


class Scorer:
    """BM25 of units against the question, with the units of all the given passages as the collection."""

    def __init__(self, question: str, passages: list[list[Unit]]):
        self.terms = query_terms(question)
        self.tokens = [[_TOKENIZE(u.text) for u in us] for us in passages]
        flat = [t for ts in self.tokens for t in ts]
        n = max(1, len(flat))
        self.avg = sum(len(t) for t in flat) / n or 1.0
        df = {q: sum(q in set(t) for t in flat) for q in self.terms}
        self.idf = {q: math.log(1 + (n - d + 0.5) / (d + 0.5)) for q, d in df.items()}

    def score(self, p: int, i: int) -> float:
        toks = self.tokens[p][i]
        if not toks:
            return 0.0
        s = 0.0
        for q in self.terms:
            tf = toks.count(q)
            if tf:
                s += self.idf[q] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(toks) / self.avg))
        return s


def _cut_words(text: str, max_tokens: int, count: Callable[[str], int]) -> str:
    words = text.split()
    lo, hi = 1, len(words)
    while lo < hi:                                  # the most words that fit
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid]) + " …") <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + " …"


def trim(question: str, hits: list[Hit], max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """Each hit's text cut to its units that match the question, best first, within ``max_tokens`` (by
    ``count``), put back in their original order and joined by spaces (``…`` where units were left out).
    Headings are dropped; a passage with no matching unit keeps its first units."""
    per = [units(h.chunk.text) for h in hits]
    scorer = Scorer(question, per)
    out = []
    for p, us in enumerate(per):
        cands = [u for u in us if u.kind != "heading"] or us
        if not cands:
            out.append("")
            continue
        score = {u.index: scorer.score(p, u.index) * (0.7 if u.fragment else 1.0) for u in cands}
        ranked = sorted(cands, key=lambda u: (-score[u.index], u.index))
        if score[ranked[0].index] > 0:
            ranked = [u for u in ranked if score[u.index] > 0]   # only what matches: a shorter prompt
        chosen, used = [], 0
        for u in ranked:
            c = count(u.text) + 1
            if used + c > max_tokens:
                if not chosen:                       # the best unit alone is too long: its first words
                    chosen.append(Unit(_cut_words(u.text, max_tokens, count), u.index, u.kind))
                    break
                continue
            chosen.append(u)
            used += c
        chosen.sort(key=lambda u: u.index)
        text, prev = "", None
        for u in chosen:
            sep = "" if prev is None else (" " if u.index == prev + 1 else " … ")
            text += sep + (u.text if u.kind != "code" else u.text.replace("\n", " ; "))
            prev = u.index
        out.append(text.strip())
    return out


def attribute(text: str, question: str, hits: list[Hit], min_share: float = 0.6, min_words: int = 3) -> list[int]:
    """The sources (``[n]`` numbers, best first) that support ``text``: those holding at least ``min_share`` of
    its words (stemmed, less stopwords, function words, numbers and the question's own words), and at least
    ``min_words`` different ones. For an offline answer that says what a passage says without citing it; []
    when none does."""
    qs = set(_TOKENIZE(question)) | set(_TOKENIZE(" ".join(QUESTION_WORDS | FUNCTION_WORDS)))
    words = [w for w in _TOKENIZE(re.sub(r"\[\d+\]", " ", text)) if w not in qs and not w.isdigit()]
    if len(set(words)) < min_words:
        return []
    found = []
    for n, h in enumerate(hits, 1):
        vocab = set(_TOKENIZE(h.chunk.text))
        inside = [w for w in words if w in vocab]
        share = len(inside) / len(words)
        if share >= min_share and len(set(inside)) >= min_words:
            found.append((share, -n))
    return [-n for _, n in sorted(found, reverse=True)]


def support(text: str, question: str, hits: list[Hit], min_words: int = 4) -> float:
    """The share of ``text``'s words (stemmed, less stopwords, function words and numbers) that occur in the
    question or in any of ``hits``: low for an answer made up rather than read. 1.0 for a text of fewer than
    ``min_words`` such words (too short to judge)."""
    stop = set(_TOKENIZE(" ".join(QUESTION_WORDS | FUNCTION_WORDS)))
    words = [w for w in _TOKENIZE(re.sub(r"\[\d+\]", " ", text)) if w not in stop and not w.isdigit()]
    if len(words) < min_words:
        return 1.0
    vocab = set(_TOKENIZE(question)).union(*(set(_TOKENIZE(h.chunk.text)) for h in hits))
    return sum(w in vocab for w in words) / len(words)


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def extract(question: str, hits: list[Hit], why: str, max_units: int = 3, per_passage: int = 2) -> str:
    """The extractive answer: up to ``max_units`` best-matching sentences of ``hits`` (at most
    ``per_passage`` from one passage, no code blocks or fragments unless nothing else matches), each as a
    list item ending in the ``[n]`` of its passage (``hits[n - 1]``), under :data:`EXTRACTED_LABEL` with
    ``why`` (e.g. "was unusable: it repeated itself"). Ordered by passage, then position."""
    per = [units(h.chunk.text) for h in hits]
    scorer = Scorer(question, per)
    cands = []
    for p, us in enumerate(per):
        bonus = RANK_BONUS * (len(per) - p)
        for u in us:
            if u.kind == "heading" or len(u.text) < 12:
                continue
            s = scorer.score(p, u.index)
            penalty = (not u.prose) + u.fragment
            cands.append((s > 0, -penalty, s + bonus if s > 0 else bonus, p, u))
    cands.sort(key=lambda c: (c[0], c[1], c[2]), reverse=True)
    chosen, seen, count = [], set(), {}
    for matched, pen, _s, p, u in cands:
        key = _norm(u.text)
        if key in seen or count.get(p, 0) >= per_passage:
            continue
        if chosen and (not matched or pen < 0):
            break                    # once one is chosen: only matching sentences that read as prose
        chosen.append((p, u))
        seen.add(key)
        count[p] = count.get(p, 0) + 1
        if len(chosen) >= max_units:
            break
    chosen.sort(key=lambda c: (c[0], c[1].index))
    lines = []
    for p, u in chosen:
        body = u.text if u.kind != "code" else "`" + " ; ".join(u.text.splitlines())[:200] + "`"
        lines.append(f"- {body.rstrip()} [{p + 1}]")
    return EXTRACTED_LABEL.format(why=why) + ("\n" + "\n".join(lines) if lines else " no passage was sent.")


__all__ = ["units", "trim", "extract", "attribute", "support", "query_terms", "Unit", "EXTRACTED_LABEL"]
