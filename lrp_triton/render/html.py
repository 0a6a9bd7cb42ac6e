"""Heatmaps as one self-contained HTML page: tokens on coloured backgrounds, raw value on hover.

No script, no external stylesheet or font: the file opens the same anywhere, and in a notebook
the same markup is shown inline. Several explained targets are several rows.
"""

from __future__ import annotations

import html

from lrp_triton.render.colors import background, css, foreground
from lrp_triton.render.rows import Row

STYLE = """
.lrp-heatmap { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 15px;
  line-height: 1.9; color: #111; background: #fff; padding: 8px; }
.lrp-heatmap h1 { font-size: 15px; font-weight: 600; margin: 0 0 6px 0; }
.lrp-heatmap .lrp-label { font-size: 13px; color: #444; margin-top: 10px; }
.lrp-heatmap .lrp-tokens { white-space: pre-wrap; word-break: break-word; }
.lrp-heatmap .lrp-tok { padding: 2px 0; border-radius: 2px; }
.lrp-heatmap .lrp-tok:hover { outline: 1px solid #000; }
.lrp-heatmap .lrp-legend { font-size: 12px; color: #444; margin-top: 12px; }
"""


def _token(text: str, raw: float, norm: float, index: int) -> str:
    shown = html.escape(text).replace("\n", "↵\n")
    tip = html.escape(f"{text!r} (token {index}): relevance {raw:+.6g}, normalised {norm:+.3f}", quote=True)
    return (f'<span class="lrp-tok" style="background:{css(background(norm))};color:{css(foreground(norm))}" '
            f'title="{tip}" data-relevance="{raw:.9g}">{shown}</span>')


def fragment(rows: list[Row], title: str = "") -> str:
    """The heatmap as an HTML fragment (a `<div>` with its own `<style>`)."""
    parts = [f"<style>{STYLE}</style>", '<div class="lrp-heatmap">']
    if title:
        parts.append(f"<h1>{html.escape(title)}</h1>")
    for row in rows:
        parts.append(row_html(row))
    parts.append(legend_html() + "</div>")
    return "\n".join(parts)


def row_html(row: Row, before: str = "") -> str:
    """One row: its label, then `before` (markup, e.g. image panels), then its tokens."""
    tokens = html.escape(row.separator).join(
        _token(t, r, n, i) for t, r, n, i in zip(row.tokens, row.relevance, row.normalized, row.indices))
    return (f'<div class="lrp-row"><div class="lrp-label">{html.escape(row.label)}</div>{before}'
            f'<div class="lrp-tokens">{tokens}</div></div>')


def legend_html() -> str:
    legend = "".join(f'<span class="lrp-tok" style="background:{css(background(v))};color:{css(foreground(v))}">'
                     f' {v:+.1f} </span>' for v in (-1.0, -0.5, 0.0, 0.5, 1.0))
    return (f'<div class="lrp-legend">red: positive relevance, blue: negative; normalised per row '
            f'{legend}. Hover a token for its raw value.</div>')


def page(rows: list[Row], title: str = "") -> str:
    """A complete, self-contained HTML document."""
    return document(fragment(rows, title), title)


def document(body: str, title: str = "") -> str:
    """`body` (a fragment) as a complete HTML document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title or 'lrp_triton heatmap')}</title>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")
