"""Heatmaps in the terminal: each token on a 24-bit ANSI background (plain text without colour)."""

from __future__ import annotations

import os
import sys

from lrp_triton.render.colors import background, foreground
from lrp_triton.render.rows import Row

RESET = "\x1b[0m"


def color_wanted(stream=None) -> bool:
    """Colour when `stream` (default stdout) is a terminal and NO_COLOR is unset; FORCE_COLOR forces it."""
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def _painted(text: str, value: float) -> str:
    bg, fg = background(value), foreground(value)
    lines = text.replace("\r", "").split("\n")
    # newlines are drawn as ↵ so that their relevance stays visible; the colour never spans a line break
    pieces = [f"\x1b[48;2;{bg[0]};{bg[1]};{bg[2]}m\x1b[38;2;{fg[0]};{fg[1]};{fg[2]}m{line}{RESET}"
              for line in [f"{lines[i]}↵" if i < len(lines) - 1 else lines[i] for i in range(len(lines))]]
    return "\n".join(pieces)


def render_row(row: Row, color: bool) -> str:
    """The row's tokens as one text, each on its colour (or plain)."""
    if not color:
        return "".join(row.tokens)
    return "".join(_painted(t, v) for t, v in zip(row.tokens, row.normalized))


def render(rows: list[Row], color: bool, title: str | None = None) -> str:
    """All rows, each under its label (target, score); a legend line when coloured."""
    out = [title] if title else []
    for row in rows:
        out.append(f"{row.label}:")
        out.append(render_row(row, color))
    if color:
        legend = "".join(_painted(f" {v:+.1f} ", v) for v in (-1.0, -0.5, 0.0, 0.5, 1.0))
        out.append(f"relevance (normalised per row): {legend}")
    return "\n".join(out)
