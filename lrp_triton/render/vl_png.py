"""A vision-language heatmap as one PNG: per explained row, its image panels above its text heatmap
(matplotlib, the optional `plot` extra).

A panel is the image's pixel relevance overlaid on the image (`overlay.overlay_rgb`: normalised by
the map's largest magnitude, red positive, blue negative, alpha-blended over the image in grey), each
map pixel drawn as a `scale` x `scale` block, under a caption (`caption_text`: the image's total relevance
and share of the row's) and beside a colour bar of the raw values. The text heatmap is `png.figure` of the row
(`vl_rows`: each image's tokens as one `[image k]` token). The parts are rasterised and stacked, so
`compose` can say where each panel's image lies in the PNG (`boxes`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lrp_triton.render.png import figure
from lrp_triton.render.colors import BLUE, RED
from lrp_triton.render.overlay import overlay_rgb, png_bytes
from lrp_triton.render.vl_rows import Panel, image_rows

GAP, BAR_W, BAR_LABELS, CAPTION_PT = 12, 14, 78, 8  # pixels (the caption in points)
PANEL_PX = 256  # the automatic scale draws the longer side of a map at about this many pixels


def _raster(fig) -> torch.Tensor:
    import numpy

    fig.canvas.draw()
    return torch.from_numpy(numpy.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def caption_text(panel: Panel) -> str:
    """"image k: relevance +t (s% of the row)": the image's total relevance and its share of the row's."""
    share = "" if panel.share != panel.share else f" ({panel.share:.0%})"
    return f"image {panel.index}: {panel.total:+.3g}{share}"


def _strip(panels: list[Panel], scale: int | None, alpha: float, dpi: float):
    """uint8 [H, W, 3] of the row's panels side by side, and each image's box (k, x0, y0, x1, y1) in it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.figure import Figure

    scales = [scale or max(1, PANEL_PX // max(p.relevance.shape)) for p in panels]
    sizes = [(p.relevance.shape[0] * s, p.relevance.shape[1] * s) for p, s in zip(panels, scales)]
    caption = int(CAPTION_PT * dpi / 72 * 2.2)
    width = GAP + sum(w + GAP + BAR_W + BAR_LABELS for _, w in sizes)
    height = caption + max(h for h, _ in sizes) + GAP
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    cmap = LinearSegmentedColormap.from_list("lrp", [[c / 255 for c in BLUE], (1, 1, 1), [c / 255 for c in RED]])
    boxes, x = [], GAP
    for panel, s, (h, w) in zip(panels, scales, sizes):
        rgb = overlay_rgb(panel.relevance, panel.image, alpha)
        big = rgb.repeat_interleave(s, 0).repeat_interleave(s, 1).numpy()
        fig.figimage(big, xo=x, yo=height - caption - h, origin="upper")
        fig.text(x / width, 1 - caption * 0.5 / height, caption_text(panel),
                 fontsize=CAPTION_PT, va="center", ha="left", family="monospace")
        top = float(panel.relevance.abs().max()) or 1.0
        bar = fig.add_axes(((x + w + GAP) / width, (height - caption - h) / height, BAR_W / width, h / height))
        fig.colorbar(ScalarMappable(Normalize(-top, top), cmap), cax=bar)
        bar.tick_params(labelsize=CAPTION_PT * 0.8)
        boxes.append((panel.index, x, caption, x + w, caption + h))
        x += w + GAP + BAR_W + BAR_LABELS
    return _raster(fig), boxes


def compose(attribution, title: str = "", images=None, alpha: float = 0.6, scale: int | None = None, width: int = 80,
            dpi: float = 150):
    """(uint8 [H, W, 3], boxes): the whole heatmap, and per panel (display row, image index, x0, y0, x1, y1),
    the pixels of its image in the PNG (x1, y1 exclusive)."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise ValueError(f"to_png: scale={scale!r} must be a whole number >= 1 (None: automatic)")
    blocks = [_raster(figure([], title, width, dpi))] if title else []
    boxes, y = [], sum(b.shape[0] for b in blocks)
    for r, item in enumerate(image_rows(attribution, images)):
        if item.panels:
            strip, placed = _strip(item.panels, scale, alpha, dpi)
            boxes += [(r, k, x0, y0 + y, x1, y1 + y) for k, x0, y0, x1, y1 in placed]
            blocks.append(strip)
            y += strip.shape[0]
        text = _raster(figure([item.row], "", width, dpi))
        blocks.append(text)
        y += text.shape[0]
    if not blocks:
        raise ValueError("to_png: nothing to draw (no explained row)")
    full = max(b.shape[1] for b in blocks)
    out = torch.full((y, full, 3), 255, dtype=torch.uint8)
    top = 0
    for b in blocks:
        out[top:top + b.shape[0], :b.shape[1]] = b
        top += b.shape[0]
    return out, boxes


def save(attribution, path, title: str = "", images=None, alpha: float = 0.6, scale: int | None = None, width: int = 80,
         dpi: float = 150) -> None:
    """Writes `compose(...)` to `path` as a PNG."""
    rgb, _ = compose(attribution, title, images, alpha, scale, width, dpi)
    Path(path).write_bytes(png_bytes(rgb))
