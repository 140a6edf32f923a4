"""Everything the UI renders escapes document text, file names and model output."""
import math

from rag.types import Chunk, Hit
from ui.render import (
    leaderboard_svg,
    message_html,
    meta_html,
    safe_markdown,
    sources_html,
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
