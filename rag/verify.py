"""Verified citations: does each sentence of an answer say what the passage it cites says?

After an answer has streamed, :func:`check` splits it into sentences (:func:`sentences`, with their offsets in
the answer, citation markers kept with the sentence they end) and looks at each:

- a sentence that cites ``[n]`` is compared with passage n: the cosine similarity of its embedding (citation
  markers removed) to the embedding of each sentence of the passage (:func:`rag.extractive.units`) and of each
  pair of neighbouring sentences; the best is its **support score** for that source. It is ``supported`` when,
  for at least one source it cites, the score reaches the threshold, every number it states appears in the
  sentence (or pair) that scored (embeddings hardly tell 0.76 s from 7.6 s), and at least
  :data:`MIN_COVERAGE` of its words (stemmed, less stopwords) are in the passage (a sentence that adds
  what the passage never mentions, "steroids reduced the infarctions", often scores high on topic alone);
  otherwise ``unsupported``;
- a sentence with no citation that states something (:func:`is_claim`: five words or more, not a question, a
  lead-in ending in ``:`` or a "the sources do not say" refusal) is ``uncited``; the passage that shares most
  of its words is named as a suggestion when it would support it.

The embedder is the app's (all-MiniLM-L6-v2 by default). The threshold (``verify.threshold``) was tuned on the
dev half of ``tests/data/citation_support.jsonl`` and measured on its held-out half:
``python -m rag.verify`` prints both (docs/citations.md has the figures).
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .answer import _CITE_RE, parse_citations
from .extractive import units
from .sparse import Tokenizer
from .types import Hit

DEFAULT_THRESHOLD = 0.54      # verify.threshold; tuned on the labelled set's dev half (python -m rag.verify)
MIN_COVERAGE = 0.45           # share of a sentence's words the passage must have; tuned with the threshold
MIN_CLAIM_WORDS = 5           # an uncited sentence shorter than this is not counted as a claim
MAX_PASSAGE_UNITS = 40        # sentences of one passage compared (a chunk has about ten)

_TOKENIZE = Tokenizer("en", "english")
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]*_]*\s+(?=[A-Z0-9`\"'(\[*_])")
_LEAD_CITES = re.compile(r"^(?:\s*\[\s*\d+(?:\s*[-–,]\s*\d+)*\s*\])+[.,;:]?")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "two three four five six seven eight nine ten eleven twelve".split(), start=2)}
_NUMBER_WORD = re.compile(r"\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.I)
_WORD = re.compile(r"[^\W\d_]{2,}|\d+")
_NOT_A_CLAIM = re.compile(
    r"\b(?:i|we)\s+(?:do not|don't|cannot|can't|could not|couldn't|am not|have no)\b"
    r"|\b(?:sources?|passages?|context|documents?|provided (?:text|information))\b[^.]{0,60}"
    r"\b(?:do not|does not|don't|doesn't|did not|no|not)\b"
    r"|\bnot (?:enough|sufficient) information\b|\blet me know\b|\bhope (?:this|that) helps\b"
    r"|^\s*extracted from the sources\b", re.I)


@dataclass
class Span:
    """One sentence of an answer: ``text`` is ``answer[start:end]`` with whitespace collapsed."""

    text: str
    start: int
    end: int


@dataclass
class Checked:
    """A sentence and its verdict: ``status`` is supported | unsupported | uncited; ``cites`` the valid [n] it
    cites; ``scores`` its support score per cited source; ``score`` the best of them (for an uncited sentence:
    its best over all sources, and ``closest`` that source when it would support the sentence);
    ``coverage`` the share of its words in that passage; ``missing_numbers`` the numbers it states that the
    best-scoring piece of that passage lacks; ``unknown`` the [n] it cites that name no source."""

    text: str
    start: int
    end: int
    status: str
    cites: list[int] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    score: float | None = None
    closest: int | None = None
    coverage: float | None = None
    missing_numbers: list[str] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)


# --- sentences ------------------------------------------------------------------------------------------
def _split(block: str, offset: int) -> list[Span]:
    out, pos = [], 0
    for m in list(_SENT_END.finditer(block)) + [None]:
        end = m.start() if m else len(block)
        piece = block[pos:end]
        lead = len(piece) - len(piece.lstrip())
        if piece.strip():
            out.append([offset + pos + lead, offset + pos + len(piece.rstrip())])
        pos = m.end() if m else len(block)
    spans = []
    for s, e in out:
        head = _LEAD_CITES.match(block[s - offset:e - offset])
        if head and spans:   # "... claim. [2] Next" : the [2] closes the sentence before it
            spans[-1][1] = s + head.end()
            s += head.end()
            s += len(block[s - offset:e - offset]) - len(block[s - offset:e - offset].lstrip())
        if s < e:
            spans.append([s, e])
    return [Span(" ".join(block[s - offset:e - offset].split()), s, e) for s, e in spans]


def sentences(text: str) -> list[Span]:
    """The sentences of an answer (Markdown) with their character offsets: paragraphs and list items are split
    at sentence ends; fenced code, headings and table rows are left out; a citation that opens a sentence
    (``claim. [2] Next``) belongs to the sentence before it."""
    text = text or ""
    out: list[Span] = []
    block_start, block_end = None, None
    in_code = False

    def flush():
        nonlocal block_start
        if block_start is not None:
            out.extend(_split(text[block_start:block_end], block_start))
        block_start = None

    pos = 0
    for line in text.splitlines(keepends=True):
        start, end = pos, pos + len(line.rstrip("\r\n"))
        pos += len(line)
        stripped = line.strip()
        if _FENCE.match(line):
            flush()
            in_code = not in_code
            continue
        if in_code:
            continue
        if not stripped or stripped.startswith(("#", "|")):
            flush()
            continue
        item = _LIST_ITEM.match(line)
        if item:
            flush()
            start += item.end()
        if block_start is None:
            block_start = start
        block_end = end
    flush()
    return out


def claim_text(sentence: str) -> str:
    """The sentence without its citation markers and Markdown emphasis."""
    return " ".join(_CITE_RE.sub(" ", sentence).replace("**", "").replace("`", "").split()).strip()


def is_claim(sentence: str) -> bool:
    """Whether a sentence states something that needs a source: five words or more, and not a question, a
    lead-in (``Here is how:``) or a statement about the sources themselves (a refusal)."""
    text = claim_text(sentence)
    if len(_WORD.findall(text)) < MIN_CLAIM_WORDS or text.endswith(("?", ":")):
        return False
    return not _NOT_A_CLAIM.search(text)


def numbers(text: str) -> list[str]:
    """The numbers a text states, in digits (thousands separators dropped, two to twelve spelled out read as
    digits): ``"1,200 files in two runs, 0.76 s"`` → 1200, 2, 0.76."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text or "")
    text = _NUMBER_WORD.sub(lambda m: str(_NUMBER_WORDS[m.group(0).lower()]), text)
    return _NUMBER.findall(text)


def _missing(claim_numbers: list[str], piece: str) -> list[str]:
    have = set(numbers(piece))
    return [n for n in claim_numbers if n not in have]


# --- scoring --------------------------------------------------------------------------------------------
def passage_pieces(passage: str) -> list[str]:
    """What a claim is compared with: each sentence of the passage and each pair of neighbouring ones."""
    us = [u.text for u in units(passage) if u.kind != "heading" and u.text.strip()][:MAX_PASSAGE_UNITS]
    if not us:
        return [passage.strip()] if passage.strip() else []
    return us + [f"{a} {b}" for a, b in zip(us, us[1:])]


@dataclass
class Support:
    """How well a passage supports a claim: ``score`` (see :meth:`_Vectors.support`), ``missing`` (numbers of the
    claim that the scoring piece lacks), ``coverage`` (share of the claim's words in the passage)."""

    score: float
    missing: list[str]
    coverage: float

    def ok(self, threshold: float, number_check: bool = True, min_coverage: float = MIN_COVERAGE) -> bool:
        return self.score >= threshold and self.coverage >= min_coverage and not (self.missing and number_check)


def coverage(claim: str, passage: str) -> float:
    """The share of the claim's words (stemmed, less stopwords) that the passage has; 1.0 for a claim of none."""
    words = set(_TOKENIZE(claim))
    return round(len(words & set(_TOKENIZE(passage))) / len(words), 4) if words else 1.0


class _Vectors:
    """Embeds many texts in one call and hands out their (normalised) vectors."""

    def __init__(self, embedder, texts: list[str]):
        self.index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        vecs = embedder.encode_queries(list(self.index)) if self.index else np.zeros((0, 1), np.float32)
        vecs = np.asarray(vecs, dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True) if len(vecs) else 1.0
        self.vecs = vecs / np.maximum(norms, 1e-12)

    def support(self, claim: str, passage: str, pieces: list[str]) -> Support:
        """The best similarity of ``claim`` to a piece of the passage that states every number the claim states;
        when no piece does, the best similarity of any piece, with the numbers that piece lacks."""
        if not claim or not pieces:
            return Support(0.0, [], 0.0)
        sims = self.vecs[[self.index[t] for t in pieces]] @ self.vecs[self.index[claim]]
        need = list(dict.fromkeys(numbers(claim)))
        whole = [i for i, p in enumerate(pieces) if not _missing(need, p)]
        best = max(whole, key=lambda i: sims[i]) if whole else int(np.argmax(sims))
        return Support(round(float(sims[best]), 4), _missing(need, pieces[best]), coverage(claim, passage))


def pair_scores(embedder, pairs: list[tuple[str, str]]) -> list[Support]:
    """How well each passage supports its sentence, for (sentence, passage) pairs, embedded in one call."""
    pieces = [passage_pieces(p) for _, p in pairs]
    claims = [claim_text(s) for s, _ in pairs]
    vec = _Vectors(embedder, [c for c in claims if c] + [t for ps in pieces for t in ps])
    return [vec.support(c, p, ps) for c, (_, p), ps in zip(claims, pairs, pieces)]


# --- the check of one answer ----------------------------------------------------------------------------
def check(text: str, hits: list[Hit], embedder, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Check every sentence of the answer ``text`` against the passages ``hits`` (``hits[n - 1]`` is [n]).

    Returns a JSON-ready report: ``checked`` (True), ``threshold``, ``embedder`` (its model id), ``ms``,
    ``counts`` {sentences, claims, supported, unsupported, uncited}, ``unsupported`` and ``uncited`` (the
    flagged sentences: text, start, end, status, cites, scores, score, closest, missing_numbers, unknown),
    ``sentences`` (every sentence with its status; ``no_claim`` for those that state nothing to check) and
    ``sources`` [{source: n, supported, support_score, sentences}] for each source some sentence cites
    (``supported``: every sentence citing it is supported by it; ``support_score``: the lowest of those
    sentences' scores for it).
    """
    t0 = time.perf_counter()
    found = [(sp, parse_citations(sp.text, hits)) for sp in sentences(text)]
    passages = {n: h.chunk.text or "" for n, h in enumerate(hits, 1)}
    pieces = {n: passage_pieces(p) for n, p in passages.items()}
    claims = [claim_text(sp.text) for sp, _ in found]
    # an uncited claim is compared with one passage only, the one that shares most of its words (one embedding
    # call per answer stays small: the passages the answer cites, plus at most one per uncited claim)
    nearest = {i: max(passages, key=lambda n: coverage(claims[i], passages[n]))
               for i, (sp, cites) in enumerate(found) if not cites.used and passages and is_claim(sp.text)}
    needed = {n for _, cites in found for n in cites.used} | set(nearest.values())
    vec = _Vectors(embedder, [c for c in claims if c] + [t for n in sorted(needed) for t in pieces[n]])

    out: list[Checked] = []
    verdicts: dict[tuple[int, int], Support] = {}
    for i, (sp, cites) in enumerate(found):
        c = Checked(sp.text, sp.start, sp.end, "no_claim", cites=sorted(cites.used), unknown=list(cites.unknown))
        if cites.used:
            for n in c.cites:
                verdicts[i, n] = vec.support(claims[i], passages[n], pieces[n])
            c.scores = {n: verdicts[i, n].score for n in c.cites}
            ok = [n for n in c.cites if verdicts[i, n].ok(threshold)]
            best = max(ok or c.cites, key=lambda n: c.scores[n])
            c.score, c.coverage = c.scores[best], verdicts[i, best].coverage
            c.status = "supported" if ok else "unsupported"
            c.missing_numbers = verdicts[i, best].missing
        elif cites.unknown:
            c.status = "unsupported"        # it cites only sources that were not sent
        elif is_claim(sp.text):
            c.status = "uncited"
            if i in nearest:
                near = vec.support(claims[i], passages[nearest[i]], pieces[nearest[i]])
                c.score, c.coverage = near.score, near.coverage
                c.closest = nearest[i] if near.ok(threshold) else None
        out.append(c)
    sources = []
    for n in sorted({n for c in out for n in c.cites}):
        mine = [verdicts[i, n] for i, c in enumerate(out) if n in c.cites]
        sources.append({"source": n, "sentences": len(mine), "support_score": min(v.score for v in mine),
                        "supported": all(v.ok(threshold) for v in mine)})
    rows = [_row(c) for c in out]
    counts = {s: sum(c.status == s for c in out) for s in ("supported", "unsupported", "uncited")}
    return {"checked": True, "threshold": threshold, "embedder": getattr(embedder, "model_id", None),
            "ms": round((time.perf_counter() - t0) * 1000, 2),
            "counts": {"sentences": len(out), "claims": sum(counts.values()), **counts},
            "unsupported": [r for r in rows if r["status"] == "unsupported"],
            "uncited": [r for r in rows if r["status"] == "uncited"],
            "sentences": rows, "sources": sources}


def _row(c: Checked) -> dict:
    d = asdict(c)
    d["scores"] = {str(k): v for k, v in c.scores.items()}   # JSON object keys are strings
    return d


def skipped(reason: str, threshold: float | None = None) -> dict:
    """The report of an answer that was not checked (no text, no sources, the embedder failed)."""
    return {"checked": False, "reason": reason, "threshold": threshold, "counts": None, "unsupported": [],
            "uncited": [], "sentences": [], "sources": []}


# --- tuning on the labelled set --------------------------------------------------------------------------
def load_pairs(path) -> list[dict]:
    """The labelled set: JSONL rows {id, split: dev|heldout, source, sentence, passage, supported, kind}."""
    import json
    from pathlib import Path

    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def figures(rows: list[dict], scores: list[Support], threshold: float, min_coverage: float = MIN_COVERAGE,
            number_check: bool = True) -> dict:
    """Accuracy, and precision/recall of both verdicts, at ``threshold``; ``scores``: :func:`pair_scores` of the
    rows. ``flag_*``: the unsupported verdict (what a reader sees marked); ``support_*``: the supported one.
    ``min_coverage=0, number_check=False``: the embedding score alone decides."""
    pred = [s.ok(threshold, number_check, min_coverage) for s in scores]
    gold = [bool(r["supported"]) for r in rows]
    tp = sum(p and g for p, g in zip(pred, gold))
    tn = sum(not p and not g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(not p and g for p, g in zip(pred, gold))

    def ratio(a, b):
        return round(a / b, 3) if b else None

    return {"n": len(rows), "threshold": threshold, "min_coverage": min_coverage, "accuracy": ratio(tp + tn, len(rows)),
            "support_precision": ratio(tp, tp + fp), "support_recall": ratio(tp, tp + fn),
            "flag_precision": ratio(tn, tn + fn), "flag_recall": ratio(tn, tn + fp)}


def tune(rows: list[dict], scores: list[Support]) -> tuple[float, float]:
    """(threshold, min_coverage) with the best accuracy on ``rows`` over a grid (0.30-0.95 by 0.02, 0-0.95 by
    0.05); among equals, the middle one in (threshold, coverage) order."""
    grid = [(round(t, 2), round(c, 2)) for t in np.arange(0.30, 0.951, 0.02) for c in np.arange(0.0, 0.951, 0.05)]
    acc = [figures(rows, scores, t, c)["accuracy"] for t, c in grid]
    best = [g for g, a in zip(grid, acc) if a == max(acc)]
    return best[len(best) // 2]


def main(argv=None) -> int:
    """``python -m rag.verify [--data FILE]``: tune the threshold on the dev rows, report it on held-out."""
    import argparse
    import json

    from .config import SOURCE_ROOT, load_settings
    from .embed import make_embedder

    ap = argparse.ArgumentParser(prog="python -m rag.verify", description=main.__doc__)
    ap.add_argument("--data", default=str((SOURCE_ROOT or ".") / "tests/data/citation_support.jsonl"))
    args = ap.parse_args(argv)
    rows = load_pairs(args.data)
    settings = load_settings()
    embedder = make_embedder(settings.embedder)
    scores = pair_scores(embedder, [(r["sentence"], r["passage"]) for r in rows])
    dev = [i for i, r in enumerate(rows) if r["split"] == "dev"]
    held = [i for i, r in enumerate(rows) if r["split"] != "dev"]
    t, c = tune([rows[i] for i in dev], [scores[i] for i in dev])
    t_emb, _ = tune([rows[i] for i in dev], [Support(scores[i].score, [], 1.0) for i in dev])

    def on(idx, *args, **kw):
        return figures([rows[i] for i in idx], [scores[i] for i in idx], *args, **kw)

    out = {"embedder": getattr(embedder, "model_id", None), "rows": {"dev": len(dev), "heldout": len(held)},
           "tuned": {"threshold": t, "min_coverage": c},
           "configured": {"threshold": settings.verify.threshold, "min_coverage": MIN_COVERAGE},
           "dev": on(dev, t, c), "heldout": on(held, t, c),
           "heldout_at_configured": on(held, settings.verify.threshold, MIN_COVERAGE),
           "embedding_only": {"threshold": t_emb, "dev": on(dev, t_emb, 0.0, number_check=False),
                              "heldout": on(held, t_emb, 0.0, number_check=False)}}
    print(json.dumps(out, indent=2))
    return 0


__all__ = ["check", "skipped", "sentences", "is_claim", "coverage", "pair_scores", "figures", "tune", "load_pairs",
           "DEFAULT_THRESHOLD", "MIN_COVERAGE", "Span", "Checked", "Support"]


if __name__ == "__main__":
    raise SystemExit(main())

