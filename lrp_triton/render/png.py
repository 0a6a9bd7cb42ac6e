"""Heatmaps as PNG images, drawn with matplotlib (the optional `plot` extra).

Tokens are laid out in a monospace grid, wrapped at `width` characters, each on a box of its
colour; one block per explained target, under its label. Uses matplotlib's object API with the
Agg canvas only, so the global pyplot backend is never touched.
"""

from __future__ import annotations

from lrp_triton.render.colors import background, foreground
from lrp_triton.render.rows import Row

CHAR_W, LINE_H = 0.62, 1.9  # in units of the font size: one monospace character, one text line
FONT_PT = 11


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
    for text, value in zip(row.tokens, row.normalized):
        for k, piece in enumerate(text.split("\n")):
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


def save(rows: list[Row], path, title: str = "", width: int = 80, dpi: int = 150) -> None:
    """Writes the heatmap of `rows` to `path` (PNG)."""
    Figure, FigureCanvasAgg, Rectangle = _matplotlib()
    blocks = [(row, _layout(row, width)) for row in rows]
    used = max((max((c + len(t) for _, c, t, _ in cells), default=1) for _, cells in blocks), default=1)
    cols = max(40, min(width, used))
    height = (LINE_H if title else 0) + sum((2.5 + max((ln for ln, _, _, _ in cells), default=0)) * LINE_H
                                            for _, cells in blocks)
    em = FONT_PT / 72  # inches
    fig = Figure(figsize=((cols * CHAR_W + 2) * em, (height + 1) * em), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-1, cols * CHAR_W + 1)
    ax.set_ylim(height + 0.5 - LINE_H * 0.5, -0.5)
    ax.axis("off")
    y = 0.0
    if title:
        ax.text(0, y + LINE_H / 2, title, fontsize=FONT_PT, fontweight="bold", va="center", family="monospace")
        y += LINE_H
    for row, cells in blocks:
        ax.text(0, y + LINE_H / 2, row.label, fontsize=FONT_PT * 0.9, color="#444444", va="center",
                family="monospace")
        y += LINE_H
        for line, col, text, value in cells:
            x0, y0 = col * CHAR_W, y + line * LINE_H + 0.15
            ax.add_patch(Rectangle((x0, y0), len(text) * CHAR_W, LINE_H - 0.3, linewidth=0,
                                   facecolor=[c / 255 for c in background(value)]))
            ax.text(x0 + len(text) * CHAR_W / 2, y0 + (LINE_H - 0.3) / 2, text, fontsize=FONT_PT, ha="center",
                    va="center", family="monospace", color=[c / 255 for c in foreground(value)])
        y += (1 + max((ln for ln, _, _, _ in cells), default=0)) * LINE_H + LINE_H * 0.5
    fig.savefig(path, format="png", dpi=dpi, facecolor="white")
