"""The heatmap colour scale shared by every renderer: red positive, blue negative, white at zero."""

from __future__ import annotations

RED = (214, 24, 24)
BLUE = (24, 72, 214)
WHITE = (255, 255, 255)


def background(value: float) -> tuple[int, int, int]:
    """RGB for a normalised relevance in [-1, 1]; intensity grows with the magnitude."""
    v = max(-1.0, min(1.0, float(value)))
    end = RED if v >= 0 else BLUE
    a = abs(v)
    return tuple(round(w + (e - w) * a) for w, e in zip(WHITE, end))


def foreground(value: float) -> tuple[int, int, int]:
    """Black text on light backgrounds, white on strong ones."""
    return (255, 255, 255) if abs(value) > 0.55 else (0, 0, 0)


def css(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb
