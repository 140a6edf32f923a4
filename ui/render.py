"""HTML and markdown for the UI. Every piece of text that came from a document, a file name, a model or
a user is escaped here; nothing from them reaches the browser as markup.

Pure functions (no Gradio import), so they are unit-tested directly.
"""
from __future__ import annotations

import html
import math
import re

SNIPPET_CHARS = 320

_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)


def esc(value) -> str:
    """Text → HTML-safe text (quotes included, so it is safe inside attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def safe_markdown(text: str) -> str:
    """Model or user text → markdown in which raw HTML shows as text instead of being rendered.

    ``<``, ``>`` and ``&`` are escaped outside code spans and fences (inside them markdown already shows
    them literally). An unclosed fence while streaming counts as code up to the end.
    """
    text = "" if text is None else str(text)
    out, last = [], 0
    for m in _CODE.finditer(text):
        out.append(html.escape(text[last:m.start()], quote=False))
        out.append(m.group(0))
        last = m.end()
    out.append(html.escape(text[last:], quote=False))
    return "".join(out)


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _rank(r) -> str:
    return f"#{r}" if r else "–"


def _fmt_ms(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"


def _fmt_num(v, fmt="{:.1f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return fmt.format(v)


def location(chunk) -> str:
    parts = []
    if getattr(chunk, "page", None):
        parts.append(f"p. {chunk.page}")
    if getattr(chunk, "heading", None):
        parts.append(f"§ {chunk.heading}")
    return " · ".join(parts)


def sources_html(hits, *, note: str | None = None, cited: set[int] | None = None,
                 unsupported: set[int] | None = None) -> str:
    """The sources panel: one numbered entry per chunk sent to the model ([1] is the answer's [1]).

    ``cited``: the numbers the answer cites; those entries are marked. ``unsupported``: cited sources that do
    not support some sentence citing them (the citation check); marked too.
    """
    cited = cited or set()
    unsupported = unsupported or set()
    if not hits:
        body = f'<div class="hr-empty">{esc(note or "Sources appear here: exactly the passages the model is given, numbered as the answer cites them.")}</div>'
        return f'<div class="hr-sources">{body}</div>'
    items = []
    for i, h in enumerate(hits, 1):
        c = h.chunk
        where = location(c)
        title = c.title if getattr(c, "title", "") and c.title != c.source else ""
        mark = ' <span class="hr-cited" title="cited in the answer">cited</span>' if i in cited else ""
        if i in unsupported:
            mark += (' <span class="hr-unsupported" title="a sentence that cites this source says something it '
                     'does not support">⚠ not supporting</span>')
        rerank = (f' · rerank {_rank(h.rerank_rank)} ({h.rerank_score:.2f})'
                  if getattr(h, "rerank_rank", None) is not None and h.rerank_score is not None else "")
        items.append(
            f'<li class="hr-src{" hr-src-cited" if i in cited else ""}" id="src-{i}">'
            f'<div class="hr-src-head"><span class="hr-num">[{i}]</span> '
            f'<span class="hr-doc" title="{esc(c.doc_id)}">{esc(c.source)}</span>'
            + (f' <span class="hr-where">{esc(where)}</span>' if where else "")
            + mark + "</div>"
            + (f'<div class="hr-title">{esc(title)}</div>' if title else "")
            + f'<div class="hr-ranks">fused {_rank(h.fused_rank)} · dense {_rank(h.dense_rank)} · '
            f'sparse {_rank(h.sparse_rank)} · score {h.score:.3f}{rerank}</div>'
            f'<details class="hr-snippet"><summary>{esc(snippet(c.text))}</summary>'
            f'<div class="hr-full">{esc(c.text)}</div></details>'
            "</li>")
    head = f'<div class="hr-note">{esc(note)}</div>' if note else ""
    return f'<div class="hr-sources">{head}<ol class="hr-src-list">{"".join(items)}</ol></div>'


EMBEDDED_WARNING = ("Answered by the embedded SmolLM2-135M model, offline. It is very small and often wrong: "
                    "treat this answer as a rough pointer to the sources, and configure a NIM or hosted endpoint "
                    "(configs/models.yaml) for real answers.")


def meta_html(meta: dict | None, *, retrieval_ms: float | None = None, status: str | None = None) -> str:
    """Route, model, endpoint, the router's reason, and timings of one answer."""
    meta = dict(meta or {})
    if retrieval_ms is not None and meta.get("retrieval_ms") is None:
        meta["retrieval_ms"] = retrieval_ms
    rows = []
    if status:
        rows.append(f'<div class="hr-status">{esc(status)}</div>')
    if meta.get("embedded"):
        rows.append(f'<div class="hr-warn" role="alert">⚠ {esc(meta.get("warning") or EMBEDDED_WARNING)}</div>')
    elif meta.get("warning"):
        rows.append(f'<div class="hr-warn">⚠ {esc(meta["warning"])}</div>')
    if meta.get("error"):
        rows.append(f'<div class="hr-error">{esc(meta["error"])}</div>')
    if meta.get("partial"):
        rows.append('<div class="hr-status">The answer was cut off before it finished.</div>')
    fallbacks = meta.get("fallbacks") or []
    endpoint = meta.get("endpoint")
    if isinstance(endpoint, dict):
        endpoint = endpoint.get("name") or endpoint.get("base_url")
    cells = [
        ("Route", meta.get("route")), ("Model", meta.get("model_name") or meta.get("model")),
        ("Endpoint", endpoint), ("Retrieval", _fmt_ms(meta.get("retrieval_ms"))),
        ("TTFT", _fmt_ms(meta.get("ttft_ms"))), ("Tokens/s", _fmt_num(meta.get("tokens_per_s"))),
    ]
    if meta.get("completion_tokens") is not None or meta.get("prompt_tokens") is not None:
        cells.append(("Tokens in/out", f"{meta.get('prompt_tokens', '–')} / {meta.get('completion_tokens', '–')}"))
    grid = "".join(f'<div class="hr-k">{esc(k)}</div><div class="hr-v">{esc(v if v not in (None, "") else "–")}</div>'
                   for k, v in cells)
    rows.append(f'<div class="hr-grid">{grid}</div>')
    if meta.get("unknown_citations"):
        nums = ", ".join(f"[{n}]" for n in meta["unknown_citations"])
        rows.append(f'<div class="hr-warn">The answer cites {esc(nums)}, which is not among the sources.</div>')
    flags = meta.get("injection_flags") or []
    if flags:
        items = ", ".join(f'[{esc(f.get("source"))}] “{esc(f.get("match"))}”' for f in flags)
        rows.append(f'<div class="hr-warn">Source text that reads like instructions to the model was '
                    f'treated as quoted data, not followed: {items}</div>')
    rows += _verification_rows(meta.get("verification"))
    rerank = meta.get("rerank")
    if isinstance(rerank, dict) and rerank.get("reason"):
        rows.append(f'<div class="hr-warn">{esc(rerank["reason"])}</div>')
    if meta.get("reason"):
        rows.append(f'<div class="hr-reason"><span class="hr-k">Why this route</span> {esc(meta["reason"])}</div>')
    if fallbacks:
        items = "".join(f"<li>{esc(_fallback_text(f))}</li>" for f in fallbacks)
        rows.append(f'<details class="hr-fallbacks"><summary>{len(fallbacks)} endpoint(s) skipped</summary>'
                    f"<ul>{items}</ul></details>")
    return f'<div class="hr-meta">{"".join(rows)}</div>'


VERIFY_LEGEND = ("⚠ the cited source does not support this sentence · ? a statement with no citation "
                 "(hover a marked sentence for details)")


def _why(row: dict) -> str:
    """The tooltip of a marked sentence."""
    if row.get("status") == "uncited":
        near = f"; closest source [{row['closest']}]" if row.get("closest") else "; no source says it"
        return f"No citation{near}."
    if row.get("unknown") and not row.get("cites"):
        return f"Cites {', '.join(f'[{n}]' for n in row['unknown'])}, which is not among the sources."
    cites = ", ".join(f"[{n}]" for n in row.get("cites") or [])
    why = [f"{cites} does not support this (similarity {row['score']:.2f})" if row.get("score") is not None
           else f"{cites} does not support this"]
    if row.get("missing_numbers"):
        why.append(f"{', '.join(row['missing_numbers'])} not in the source")
    return "; ".join(why) + "."


def verified_markdown(text: str, report: dict | None) -> str:
    """The answer as safe markdown with the citation check's marks: each unsupported or uncited sentence in a
    ``<mark>`` whose tooltip says why, followed by ⚠ (unsupported) or ? (uncited), and a legend line. Text is
    escaped exactly as :func:`safe_markdown` does; only the marks are markup."""
    text = "" if text is None else str(text)
    flagged = sorted((r for r in (report or {}).get("sentences") or []
                      if r.get("status") in ("unsupported", "uncited")), key=lambda r: r["start"])
    if not (report or {}).get("checked") or not flagged:
        return safe_markdown(text)
    out, pos = [], 0
    for r in flagged:
        start, end = int(r["start"]), int(r["end"])
        if start < pos or end > len(text):
            continue
        sign = "?" if r["status"] == "uncited" else "⚠"
        out.append(safe_markdown(text[pos:start]))
        out.append(f'<mark class="hr-{esc(r["status"])}" title="{esc(_why(r))}">{safe_markdown(text[start:end])}'
                   f'</mark><sup title="{esc(_why(r))}">{sign}</sup>')
        pos = end
    out.append(safe_markdown(text[pos:]))
    return "".join(out) + f"\n\n<sub>{esc(VERIFY_LEGEND)}</sub>"


def _verification_rows(report) -> list[str]:
    """The citation check in the meta panel: a summary line and the flagged sentences."""
    if not isinstance(report, dict):
        return []
    if not report.get("checked"):
        return [f'<div class="hr-status">Citations not checked: {esc(report.get("reason") or "")}.</div>']
    c = report.get("counts") or {}
    flagged = (report.get("unsupported") or []) + (report.get("uncited") or [])
    summary = (f'{c.get("supported", 0)} of {c.get("claims", 0)} statements supported by their sources'
               + (f' · {c.get("unsupported", 0)} not supported' if c.get("unsupported") else "")
               + (f' · {c.get("uncited", 0)} without a citation' if c.get("uncited") else ""))
    kind = "hr-warn" if flagged else "hr-status"
    if not flagged:
        return [f'<div class="{kind}"><span class="hr-k">Citations checked</span> {esc(summary)}</div>']
    items = "".join(f'<li>{"?" if r.get("status") == "uncited" else "⚠"} “{esc(snippet(r.get("text", ""), 160))}” '
                    f'— {esc(_why(r))}</li>' for r in sorted(flagged, key=lambda r: r.get("start", 0)))
    return [f'<details class="{kind} hr-verify"><summary><span class="hr-k">Citations checked</span> '
            f'{esc(summary)}</summary><ul>{items}</ul></details>']


def _fallback_text(f) -> str:
    if isinstance(f, dict):
        who = f.get("endpoint") or f.get("name") or ""
        why = f.get("reason") or f.get("error") or ""
        return f"{who}: {why}" if who else str(why)
    if isinstance(f, (list, tuple)) and len(f) == 2:
        return f"{f[0]}: {f[1]}"
    return str(f)


def message_html(text: str, kind: str = "info") -> str:
    """A one-line status box (kind: info | ok | error | warn)."""
    return f'<div class="hr-msg hr-msg-{esc(kind)}">{esc(text)}</div>'


def leaderboard_svg(rows: list[dict], labels: dict[str, str] | None = None, width: int = 900) -> str:
    """A horizontal interval chart: each model's score with its confidence interval; 1000 marked."""
    labels = labels or {}
    if not rows:
        return '<div class="hr-empty">No votes yet: run a comparison and vote to start the leaderboard.</div>'
    vals = [v for r in rows for v in (r["score"], r["ci_low"], r["ci_high"]) if not math.isnan(v)]
    lo, hi = min(vals + [1000.0]), max(vals + [1000.0])
    pad = max(25.0, (hi - lo) * 0.08)
    lo, hi = lo - pad, hi + pad
    left, right, row_h, top = 380, 60, 30, 28
    plot_w = width - left - right
    height = top + row_h * len(rows) + 24

    def x(v):
        return left + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg class="hr-chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="Bradley-Terry scores with 95% confidence intervals">',
             f'<text x="{left}" y="16" class="hr-axis">Bradley-Terry score (Elo scale), 95% CI</text>',
             f'<line x1="{x(1000):.1f}" y1="{top - 6}" x2="{x(1000):.1f}" y2="{height - 18}" class="hr-ref"/>',
             f'<text x="{x(1000):.1f}" y="{height - 4}" text-anchor="middle" class="hr-axis">1000</text>']
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        name = labels.get(r["model"], r["model"])
        short = name if len(name) <= 56 else name[:55] + "…"
        parts.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end" class="hr-label">'
                     f'<title>{esc(name)}</title>{esc(short)}</text>')
        if not (math.isnan(r["ci_low"]) or math.isnan(r["ci_high"])):
            parts.append(f'<line x1="{x(r["ci_low"]):.1f}" y1="{y:.1f}" x2="{x(r["ci_high"]):.1f}" y2="{y:.1f}" '
                         f'class="hr-ci"/>')
        parts.append(f'<circle cx="{x(r["score"]):.1f}" cy="{y:.1f}" r="5" class="hr-dot"/>')
        parts.append(f'<text x="{width - right + 8}" y="{y + 4:.1f}" class="hr-val">{r["score"]:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["esc", "safe_markdown", "snippet", "sources_html", "meta_html", "message_html", "leaderboard_svg",
           "verified_markdown", "EMBEDDED_WARNING", "VERIFY_LEGEND"]
