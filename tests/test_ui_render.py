"""Everything the UI renders escapes document text, file names and model output."""
import math

from rag.types import Chunk, Hit
from ui.render import (
    leaderboard_svg,
    message_html,
    meta_html,
    safe_markdown,
    sources_html,
    verified_markdown,
)

EVIL = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def _hit(text=EVIL, source=EVIL + ".md", heading=EVIL, **kw):
    c = Chunk(id="d#0", doc_id=source, source=source, text=text, start=0, end=len(text), page=3, heading=heading,
              title=EVIL)
    return Hit(chunk=c, score=0.5, dense_rank=2, dense_score=0.4, sparse_rank=None, fused_rank=1, **kw)


def _no_markup_from(html: str):
    assert "<script" not in html and "<img" not in html and "onerror=\"" not in html


def test_sources_escape_text_names_and_headings():
    html = sources_html([_hit()], note=EVIL, cited={1})
    _no_markup_from(html)
    assert "&lt;script&gt;" in html
    assert "[1]" in html and "p. 3" in html and "dense #2" in html and "sparse –" in html and "fused #1" in html
    assert "cited" in html


def test_sources_are_numbered_in_order():
    hits = [_hit(text=f"text {i}", source=f"doc{i}.md", heading=None) for i in range(3)]
    html = sources_html(hits)
    assert html.index("[1]") < html.index("doc0.md") < html.index("[2]") < html.index("doc1.md") < html.index("[3]")


def test_meta_escapes_everything_and_flags_the_embedded_model():
    html = meta_html({"route": EVIL, "reason": EVIL, "model": EVIL, "endpoint": {"name": EVIL},
                      "fallbacks": [{"endpoint": EVIL, "reason": EVIL}], "embedded": True, "ttft_ms": 12.3,
                      "tokens_per_s": 30.1, "retrieval_ms": 4.0, "error": EVIL})
    _no_markup_from(html)
    assert "SmolLM2" in html and 'role="alert"' in html
    assert "12 ms" in html and "30.1" in html and "4.0 ms" in html


def test_safe_markdown_escapes_html_but_keeps_code():
    out = safe_markdown("Hi <b>x</b> & `<tag>`\n```\n<html>\n```\n<script>")
    assert "&lt;b&gt;" in out and "&amp;" in out and "`<tag>`" in out and "\n<html>\n" in out
    assert "&lt;script&gt;" in out
    # an unclosed fence while streaming stays code
    assert safe_markdown("```\n<x>") == "```\n<x>"


def test_message_and_chart_escape():
    _no_markup_from(message_html(EVIL, kind=EVIL))
    rows = [{"model": EVIL, "score": 1010.0, "ci_low": 990.0, "ci_high": 1030.0},
            {"model": "m2", "score": 990.0, "ci_low": math.nan, "ci_high": math.nan}]
    svg = leaderboard_svg(rows, {"m2": EVIL})
    _no_markup_from(svg)
    assert svg.startswith("<svg") and svg.count("<circle") == 2


def test_injection_flags_are_shown_escaped():
    from ui.render import meta_html

    html = meta_html({"route": "speed", "injection_flags": [
        {"source": 2, "chunk": "x#0", "match": "ignore previous instructions <script>alert(1)</script>"}]})
    assert "[2]" in html and "ignore previous instructions" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_verified_answers_mark_unsupported_and_uncited_sentences_and_escape_everything():
    text = f"Fine sentence [1]. {EVIL} is bad [1]. Uncited <b>claim</b> here."
    a, b = text.index(EVIL), text.index("Uncited")
    report = {"checked": True, "counts": {"claims": 3, "supported": 1, "unsupported": 1, "uncited": 1},
              "sentences": [
                  {"text": "Fine sentence [1].", "start": 0, "end": 18, "status": "supported", "cites": [1]},
                  {"text": "x", "start": a, "end": b - 1, "status": "unsupported", "cites": [1], "score": 0.31,
                   "missing_numbers": ["2"], "unknown": []},
                  {"text": EVIL, "start": b, "end": len(text), "status": "uncited", "closest": 2, "score": 0.7}]}
    report["unsupported"] = [report["sentences"][1]]
    report["uncited"] = [report["sentences"][2]]
    md = verified_markdown(text, report)
    assert "<script" not in md and "<img" not in md and "<b>" not in md   # text, never markup
    assert md.startswith("Fine sentence [1]. <mark class=\"hr-unsupported\" title=\"[1] does not support this "
                         "(similarity 0.31); 2 not in the source.\">&lt;script&gt;")
    assert "</mark><sup title=" in md and ">⚠</sup>" in md and ">?</sup>" in md
    assert 'title="No citation; closest source [2]."' in md and "&lt;b&gt;claim&lt;/b&gt;" in md
    assert "a statement with no citation" in md          # the legend
    assert verified_markdown(text, {"checked": False}) == safe_markdown(text)
    html = meta_html({"route": "speed", "verification": report})
    _no_markup_from(html)
    assert "1 of 3 statements supported" in html and "1 not supported" in html and "1 without a citation" in html
    assert "Citations not checked: the answer is empty." in meta_html({"verification": {"checked": False,
                                                                                        "reason": "the answer is empty"}})
    src = sources_html([_hit(), _hit(text="t", rerank_rank=1, rerank_score=2.5)], cited={1}, unsupported={1})
    assert src.count("not supporting") == 1 and "rerank #1 (2.50)" in src
