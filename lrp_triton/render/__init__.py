"""Showing an `Attribution`: terminal and notebook heatmaps, HTML, PNG, JSON and the top tokens.

`Attribution.show / to_html / to_png / to_json / top` call the functions here. Relevance is
normalised per row (explained target) for colours; raw values go to JSON and hover texts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from lrp_triton.render import html as _html
from lrp_triton.render import json_file as _json
from lrp_triton.render import terminal as _terminal
from lrp_triton.render.rows import Row
from lrp_triton.render.rows import rows as display_rows
from lrp_triton.render.tokens import clean_tokens

__all__ = ["Row", "TokenRelevance", "clean_tokens", "display_rows", "show", "terminal_text", "title", "to_html",
           "to_json", "to_png", "top"]


class TokenRelevance(NamedTuple):
    index: int  # index of the token in the (padded) input sequence
    token: str
    relevance: float


def title(attribution) -> str:
    model = getattr(attribution, "model_name", "") or attribution.model_type or "model"
    return f"{model} · {attribution.mode}"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and hasattr(ip, "kernel")


def terminal_text(attribution, color: bool | None = None) -> str:
    """The heatmap as terminal text (ANSI colours when `color`, default: when stdout is a terminal)."""
    color = _terminal.color_wanted() if color is None else color
    return _terminal.render(display_rows(attribution), color, title(attribution))


def show(attribution, color: bool | None = None) -> None:
    """HTML inline in a Jupyter notebook, else the coloured (or plain) heatmap on stdout."""
    if color is None and _in_notebook():
        from IPython.display import HTML, display

        display(HTML(_html.fragment(display_rows(attribution), title(attribution))))
        return
    print(terminal_text(attribution, color))


def to_html(attribution, path=None) -> str:
    """One self-contained HTML page; written to `path` when given. Returns the page."""
    text = _html.page(display_rows(attribution), title(attribution))
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def to_png(attribution, path, **kwargs) -> None:
    """A PNG image of the heatmap (needs matplotlib)."""
    from lrp_triton.render import png

    png.save(display_rows(attribution), path, title(attribution), **kwargs)


def to_json(attribution, path=None) -> dict:
    """The attribution as a JSON document (raw relevance); written to `path` when given."""
    doc = _json.document(display_rows(attribution), model=getattr(attribution, "model_name", "") or "",
                         model_type=attribution.model_type, mode=attribution.mode)
    if path is not None:
        Path(path).write_text(_json.dumps(doc), encoding="utf-8")
    return doc


def top(attribution, k: int = 5):
    """The `k` most relevant tokens (largest relevance first) of each row.

    A list of `TokenRelevance` for a single explained row, else a list of such lists.
    """
    out = []
    for row in display_rows(attribution):
        order = sorted(range(len(row.relevance)), key=lambda i: row.relevance[i], reverse=True)[:k]
        out.append([TokenRelevance(row.indices[i], row.tokens[i], row.relevance[i]) for i in order])
    return out[0] if len(out) == 1 else out
