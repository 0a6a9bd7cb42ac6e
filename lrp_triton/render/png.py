"""Heatmaps as PNG images, drawn with matplotlib (the optional `plot` extra).

Tokens are laid out in a monospace grid, wrapped at `width` characters, each on a box of its
colour; one block per explained target, under its label. The title and the labels wrap at the
image's width, so that no text is cut off. Uses matplotlib's object API with the Agg canvas only,
so the global pyplot backend is never touched.
"""

from __future__ import annotations

import textwrap

from lrp_triton.render.colors import background, foreground
from lrp_triton.render.rows import Row

CHAR_W, LINE_H = 0.62, 1.9  # in units of the font size: one monospace character, one text line
FONT_PT = 11
MIN_COLS = 40


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError as exc:
        raise ImportError("to_png needs matplotlib, which is not installed; install it with "
                          "`pip install matplotlib` (or `pip install 'lrp_triton[plot]'`)") from exc
    return Figure, FigureCanvasAgg, Rectangle


def _layout(row: Row, width: int) -> list[tuple[int, int, str, float]]:
    """(line, column, text, normalised value) per token piece; long tokens and newlines wrap."""
    out, line, col = [], 0, 0
    for i, (text, value) in enumerate(zip(row.tokens, row.normalized)):
        if i and row.separator:  # uncoloured space between tokens shown as ids
            col += len(row.separator)
            if col >= width:
                line, col = line + 1, 0
        for k, piece in enumerate(text.replace("\r", "").replace("\t", "    ").split("\n")):
            if k > 0:  # a newline inside the token: show ↵ then go on at the next line
                out.append((line, col, "↵", value))
                line, col = line + 1, 0
            while piece:
                if col >= width:
                    line, col = line + 1, 0
                chunk, piece = piece[:width - col], piece[width - col:]
                out.append((line, col, chunk, value))
                col += len(chunk)
    return out


def _wrapped(text: str, cols: int) -> list[str]:
    return textwrap.wrap(text, cols, break_long_words=True, break_on_hyphens=False) or [""]


def figure(rows: list[Row], title: str = "", width: int = 80, dpi: int = 150):
    """The matplotlib Figure of the heatmap of `rows` (Agg canvas attached)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < MIN_COLS:
        raise ValueError(f"to_png: width={width!r} must be a whole number of characters, at least {MIN_COLS}")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise ValueError(f"to_png: dpi={dpi!r} must be a positive number")
    Figure, FigureCanvasAgg, Rectangle = _matplotlib()
    blocks = [(row, _layout(row, width)) for row in rows]
    used = max((max((c + len(t) for _, c, t, _ in cells), default=1) for _, cells in blocks), default=1)
    longest_text = max([len(title)] + [len(row.label) for row in rows])
    cols = max(MIN_COLS, min(width, max(used, longest_text)))
    title_lines = _wrapped(title, cols) if title else []
    labels = [_wrapped(row.label, cols) for row in rows]
    height = len(title_lines) * LINE_H + sum(
        (len(label) + 1.5 + max((ln for ln, _, _, _ in cells), default=0)) * LINE_H
        for label, (_, cells) in zip(labels, blocks))
    em = FONT_PT / 72  # inches
    fig = Figure(figsize=((cols * CHAR_W + 2) * em, (height + 1) * em), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-1, cols * CHAR_W + 1)
    ax.set_ylim(height + 0.5 - LINE_H * 0.5, -0.5)
    ax.axis("off")
    y = 0.0
    for text in title_lines:
        ax.text(0, y + LINE_H / 2, text, fontsize=FONT_PT, fontweight="bold", va="center", family="monospace")
        y += LINE_H
    for label, (row, cells) in zip(labels, blocks):
        for text in label:
            ax.text(0, y + LINE_H / 2, text, fontsize=FONT_PT * 0.9, color="#444444", va="center",
                    family="monospace")
            y += LINE_H
        for line, col, text, value in cells:
            x0, y0 = col * CHAR_W, y + line * LINE_H + 0.15
            ax.add_patch(Rectangle((x0, y0), len(text) * CHAR_W, LINE_H - 0.3, linewidth=0,
                                   facecolor=[c / 255 for c in background(value)]))
            ax.text(x0 + len(text) * CHAR_W / 2, y0 + (LINE_H - 0.3) / 2, text, fontsize=FONT_PT, ha="center",
                    va="center", family="monospace", color=[c / 255 for c in foreground(value)])
        y += (1 + max((ln for ln, _, _, _ in cells), default=0)) * LINE_H + LINE_H * 0.5
    return fig


def save(rows: list[Row], path, title: str = "", width: int = 80, dpi: int = 150) -> None:
    """Writes the heatmap of `rows` to `path` (PNG)."""
    fig = figure(rows, title, width, dpi)
    fig.savefig(path, format="png", dpi=fig.dpi, facecolor="white")
