"""Showing an `Attribution`: terminal and notebook heatmaps, HTML, PNG, JSON and the top tokens.

`Attribution.show / to_html / to_png / to_json / top` call the functions here. Relevance is
normalised per row (explained target) for colours; raw values go to JSON and hover texts. Titles
name the model (`display_name`: a local directory by its own name) and the mode.
"""

from __future__ import annotations

import operator
import sys
from pathlib import Path, PurePath
from typing import NamedTuple

from lrp_triton.render import html as _html
from lrp_triton.render import json_file as _json
from lrp_triton.render import terminal as _terminal
from lrp_triton.render.rows import Row
from lrp_triton.render.rows import rows as display_rows
from lrp_triton.render.tokens import clean_tokens, tokenizer_style

__all__ = ["Row", "TokenRelevance", "check_k", "clean_tokens", "display_name", "display_rows", "show", "terminal_text",
           "title", "to_html", "to_json", "to_png", "tokenizer_style", "top"]


class TokenRelevance(NamedTuple):
    index: int  # index of the token in the (padded) input sequence
    token: str
    relevance: float


def display_name(name: str) -> str:
    """How titles name a model: a hub id as it is; a local directory by its own name (a Hugging Face
    cache snapshot, `.../models--org--name/snapshots/<hash>`, by its hub id `org/name`)."""
    name = str(name or "")
    path = PurePath(name.replace("\\", "/"))
    looks_local = (name.startswith(("/", ".", "~")) or name.endswith("/") or "\\" in name or name.count("/") > 1
                   or (len(name) > 1 and name[1] == ":"))
    if not looks_local or not path.parts:
        return name
    parts = [p for p in path.parts if p not in ("/", "\\")]
    if "snapshots" in parts[1:-1]:
        repo = parts[parts.index("snapshots", 1) - 1]
        if repo.startswith("models--"):
            return repo[len("models--"):].replace("--", "/")
    return parts[-1] if parts else name


def title(attribution) -> str:
    model = display_name(getattr(attribution, "model_name", "")) or attribution.model_type or "model"
    return f"{model} · {attribution.mode}"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and hasattr(ip, "kernel")


def terminal_text(attribution, color: bool | None = None) -> str:
    """The heatmap as terminal text (ANSI colours when `color`, default: when stdout is a terminal)."""
    _check_color(color)
    color = _terminal.color_wanted() if color is None else color
    return _terminal.render(_text_rows(attribution), color, title(attribution))


def _is_vision_language(attribution) -> bool:
    return getattr(attribution, "image_mask", None) is not None


def _text_rows(attribution) -> list[Row]:
    """The rows the heatmaps show: a vision-language attribution's with each image as one token (`vl_rows`)."""
    if not _is_vision_language(attribution):
        return display_rows(attribution)
    from lrp_triton.render.vl_rows import image_rows

    return [item.row for item in image_rows(attribution, [None] * len(attribution.image_pixel_relevance))]


def _check_color(color) -> None:
    if color is not None and not isinstance(color, bool):
        raise ValueError(f"color={color!r}: pass True (ANSI colours), False (plain text with rank marks) or None "
                         "(colours when stdout is a terminal)")


def show(attribution, color: bool | None = None) -> None:
    """HTML inline in a Jupyter notebook, else the coloured (or plain) heatmap on stdout."""
    _check_color(color)
    if color is None and _in_notebook():
        from IPython.display import HTML, display

        if _is_vision_language(attribution):
            from lrp_triton.render.vl_html import fragment

            display(HTML(fragment(attribution, title(attribution))))
        else:
            display(HTML(_html.fragment(display_rows(attribution), title(attribution))))
        return
    print(terminal_text(attribution, color))


def to_html(attribution, path=None, **kwargs) -> str:
    """One self-contained HTML page; written to `path` when given. Returns the page. A vision-language
    attribution's shows each image with its relevance overlaid (kwargs: images, alpha, scale; `vl_html`)."""
    if _is_vision_language(attribution):
        from lrp_triton.render.vl_html import fragment

        text = _html.document(fragment(attribution, title(attribution), **kwargs), title(attribution))
    elif kwargs:
        raise TypeError(f"to_html: {', '.join(kwargs)} only apply to vision-language attributions")
    else:
        text = _html.page(display_rows(attribution), title(attribution))
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def to_png(attribution, path, **kwargs) -> None:
    """A PNG image of the heatmap (needs matplotlib). A vision-language attribution's shows each image with
    its relevance overlaid above the text (kwargs also: images, alpha, scale; `vl_png`)."""
    if _is_vision_language(attribution):
        from lrp_triton.render import vl_png

        vl_png.save(attribution, path, title(attribution), **kwargs)
        return
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

    A list of `TokenRelevance` for a single explained row, else a list of such lists; a row with
    fewer than `k` tokens gives all of them. `k` must be a whole number, at least 1.
    """
    k = check_k(k)
    out = []
    for row in display_rows(attribution):
        order = sorted(range(len(row.relevance)), key=lambda i: row.relevance[i], reverse=True)[:k]
        out.append([TokenRelevance(row.indices[i], row.tokens[i], row.relevance[i]) for i in order])
    return out[0] if len(out) == 1 else out


def check_k(k) -> int:
    """`k` as an int, or a ValueError naming the problem (negative, zero, not a whole number)."""
    if isinstance(k, bool) or not hasattr(type(k), "__index__"):
        raise ValueError(f"top(k): k={k!r} is not a whole number; pass the number of most relevant tokens "
                         "wanted, e.g. top(5)")
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"top(k): k={k} asks for {'no' if k == 0 else 'a negative number of'} tokens; "
                         "pass k >= 1, e.g. top(5)")
    return k
