"""Heatmaps in the terminal: each token on a 24-bit ANSI background, or, without colour (a pipe, a
log, NO_COLOR), plain text that still carries the ranking.

The plain form prints each line of the text with a line of rank marks under it: the digit k under
the first character of the k-th most relevant token of the row (k = 1 to 5, positive relevance
only) and `~` under the rest of that token, so that the ranking survives without any colour (the
CLI's `--top` list gives the values).
"""

from __future__ import annotations

import os
import sys
import unicodedata

from lrp_triton.render.colors import background, foreground
from lrp_triton.render.rows import Row

RESET = "\x1b[0m"
RANKS = 5  # how many tokens the plain form marks
TAB = 8
PLAIN_LEGEND = f"(no colour: a digit k under the text marks the row's k-th most relevant token, k = 1 to {RANKS})"


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


def _width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def ranked(row: Row, k: int = RANKS) -> list[int]:
    """Indices into the row of its (up to) k most relevant tokens with positive relevance, best first."""
    order = sorted(range(len(row.relevance)), key=lambda i: row.relevance[i], reverse=True)
    return [i for i in order if row.relevance[i] > 0][:k]


def plain_lines(row: Row, k: int = RANKS) -> list[str]:
    """The row's text, each line followed by its line of rank marks (see the module docstring)."""
    rank = {i: r for r, i in enumerate(ranked(row, k), 1)}
    lines, marks = [""], [""]
    col = 0
    for i, token in enumerate(row.tokens):
        text = (row.separator if i else "") + token.replace("\r", "")
        first = True  # the next visible character of this token is its first
        lead = len(row.separator) if i else 0
        for n, char in enumerate(text.replace("\n", "↵\n")):
            if char == "\n":
                lines.append("")
                marks.append("")
                col = 0
                continue
            if char == "\t":
                shown, width = " " * (TAB - col % TAB), TAB - col % TAB
            else:
                shown, width = char, _width(char)
            lines[-1] += shown
            if i in rank and n >= lead and width:
                visible = not char.isspace() or token.strip() == ""
                if visible:
                    mark = str(rank[i]) if first else "~"
                    marks[-1] += " " * (col - len(marks[-1])) + mark + "~" * (width - 1)
                    first = False
            col += width
    out = []
    for line, mark in zip(lines, marks):
        out += [line, mark.rstrip()]
    return out


def render_row(row: Row, color: bool) -> str:
    """The row's tokens as one text, each on its colour; without colour, the text and its rank marks."""
    if not color:
        return "\n".join(plain_lines(row))
    return row.separator.join(_painted(t, v) for t, v in zip(row.tokens, row.normalized))


def render(rows: list[Row], color: bool, title: str | None = None) -> str:
    """All rows, each under its label (target, score); a legend line."""
    out = [title] if title else []
    for row in rows:
        out.append(f"{row.label}:")
        out.append(render_row(row, color))
    if color:
        legend = "".join(_painted(f" {v:+.1f} ", v) for v in (-1.0, -0.5, 0.0, 0.5, 1.0))
        out.append(f"relevance (normalised per row): {legend}")
    elif rows:
        out.append(PLAIN_LEGEND)
    return "\n".join(out)
