"""Loop detection for streamed model output: stop a small model that starts repeating itself, and never
show the user the repeated part.

:class:`LoopGuard` is fed the pieces of a stream and answers with the text that is safe to show now. It
holds the newest :data:`HOLDBACK_WORDS` words back; a loop is detected within that window, so the cut
(the start of the repetition, moved back to the end of a sentence where that is not yet shown) always
lies in text the user has not seen. Rules, checked on every piece:

- a line (12+ characters, list markers ignored) that equals an earlier line, or a shorter one (```` ``` ````)
  for the third time;
- a run of :data:`LONG_NGRAM` words seen before (a repeated sentence, caught 8 words into its copy);
- a :data:`SHORT_NGRAM`-word phrase for the :data:`SHORT_NGRAM_MAX` + 1st time;
- one short unit repeated to the end of the text (``-----``, ``ababab``), 24+ characters.

:func:`repetition_stats` is what tests and the benchmark assert on a finished answer.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

HOLDBACK_WORDS = 10     # newest words not yet shown: a loop is caught before they are released
LONG_NGRAM = 8          # a repeated run of this many words is a copy
SHORT_NGRAM = 4
SHORT_NGRAM_MAX = 2     # a 4-word phrase may occur twice; the third time is a loop
MIN_LINE_CHARS = 12     # a line this long may not repeat; shorter ones ("```", "- yes") may occur twice
SHORT_LINE_MAX = 2
_WORD = re.compile(r"\S+")
_DIGITS = re.compile(r"\d+")
_MARKER = re.compile(r"^\s*(?:[-*+>]|\d{1,3}[.)])\s+")
_PERIODIC = re.compile(r"(.{1,16}?)\1{7,}$", re.S)
_SENTENCE_END = re.compile(r"[.!?:;)\]`*]\s|\n")


def _norm_word(w: str) -> str:
    return w.lower().strip(".,;:!?\"'()*`_")


def _gram_word(w: str) -> str:
    """For n-grams, numbers are alike: "[1] [2] [3] [4]..." and "1. x 2. x 3. x" are loops too."""
    return _DIGITS.sub("#", w)


def _norm_line(line: str) -> str:
    return re.sub(r"\s+", " ", _MARKER.sub("", line)).strip().lower()


@dataclass
class Loop:
    """Where and why the output started repeating itself: ``cut`` is the character offset kept up to."""

    rule: str
    cut: int
    words: int      # words generated when it was caught

    def describe(self) -> str:
        return {"line": "a line repeated", "long_ngram": f"{LONG_NGRAM} words repeated",
                "short_ngram": f"a {SHORT_NGRAM}-word phrase repeated {SHORT_NGRAM_MAX + 1} times",
                "periodic": "characters repeated"}[self.rule]


class LoopGuard:
    """Feed stream pieces with :meth:`feed` (returns the text safe to show); :meth:`finish` returns the rest.

    After a loop is found, :attr:`loop` is set, :meth:`feed` returns "" and the caller should stop the
    model; :attr:`text` is then the output cut before the repetition."""

    def __init__(self, holdback_words: int = HOLDBACK_WORDS):
        self.holdback = holdback_words
        self.raw = ""
        self.released = 0
        self.loop: Loop | None = None
        self._words: list[tuple[str, int]] = []   # complete words: (normalised, start offset)
        self._scanned = 0                         # raw offset up to which words were taken
        self._long: dict[tuple, int] = {}         # n-gram -> start offset of its first occurrence
        self._short: Counter = Counter()
        self._lines: Counter = Counter()
        self._line_start = 0

    @property
    def text(self) -> str:
        """The output kept so far (cut before the repetition once a loop is found)."""
        return self.raw if self.loop is None else self.raw[: self.loop.cut]

    def feed(self, piece: str) -> str:
        if self.loop is not None or not piece:
            return ""
        self.raw += piece
        loop = self._scan()
        if loop is not None:
            self.loop = loop   # what is kept and not yet shown waits for finish(): the caller may replace it
            return ""
        safe = self._words[-self.holdback][1] if len(self._words) >= self.holdback else 0
        return self._release(safe) if len(self._words) > self.holdback else ""

    def finish(self) -> str:
        """The rest of the kept text (all of it when no loop was found)."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.released:
            return ""
        out = self.raw[self.released: upto]
        self.released = upto
        return out

    def _back_to_sentence(self, cut: int) -> int:
        """``cut`` moved back to just after the last sentence end or line break before it, if that text has
        not been shown; else ``cut`` (never before what was shown)."""
        head = self.raw[:cut]
        ends = [m.end() for m in _SENTENCE_END.finditer(head)]
        best = max((e for e in ends if e >= self.released), default=None)
        return max(self.released, best if best is not None else cut)

    def _found(self, rule: str, start: int) -> Loop:
        cut = self._back_to_sentence(start)
        while cut > self.released and self.raw[cut - 1] in " \t":
            cut -= 1
        return Loop(rule, max(cut, self.released), len(self._words))

    def _scan(self) -> Loop | None:
        raw = self.raw
        # complete words (followed by whitespace) not yet taken
        end = len(raw) if raw[-1:].isspace() else raw.rfind(" ", self._scanned) + 1
        nl = raw.rfind("\n", self._scanned)
        end = max(end, nl + 1)
        for m in _WORD.finditer(raw, self._scanned, end):
            w = _gram_word(_norm_word(m.group()))
            if not w:
                continue
            self._words.append((w, m.start()))
            n = len(self._words)
            if n >= LONG_NGRAM:
                key = tuple(x for x, _ in self._words[n - LONG_NGRAM:])
                start = self._words[n - LONG_NGRAM][1]
                if key in self._long:
                    return self._found("long_ngram", start)
                self._long[key] = start
            if n >= SHORT_NGRAM:
                key = tuple(x for x, _ in self._words[n - SHORT_NGRAM:])
                self._short[key] += 1
                if self._short[key] > SHORT_NGRAM_MAX:
                    return self._found("short_ngram", self._words[n - SHORT_NGRAM][1])
        self._scanned = max(self._scanned, end)
        # complete lines
        while True:
            i = raw.find("\n", self._line_start)
            if i < 0:
                break
            line = _norm_line(raw[self._line_start:i])
            if line:
                self._lines[line] += 1
                if self._lines[line] > (1 if len(line) >= MIN_LINE_CHARS else SHORT_LINE_MAX):
                    return self._found("line", self._line_start)
            self._line_start = i + 1
        m = _PERIODIC.search(raw[-200:])
        if m and len(m.group(0)) >= 24:
            return self._found("periodic", len(raw) - len(m.group(0)))
        return None


def repetition_stats(text: str) -> dict:
    """``max_line_repeats`` (non-blank lines, whitespace-normalised) and ``max_4gram`` (word 4-grams, case and
    punctuation ignored): what the offline-answer test bounds (2 and 4)."""
    lines = Counter(re.sub(r"\s+", " ", ln).strip() for ln in text.splitlines() if ln.strip())
    words = [w for w in (_norm_word(x) for x in text.split()) if w]
    grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    return {"max_line_repeats": max(lines.values(), default=0), "max_4gram": max(grams.values(), default=0)}


__all__ = ["LoopGuard", "Loop", "repetition_stats", "HOLDBACK_WORDS"]
