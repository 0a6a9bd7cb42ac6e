"""A vision-language heatmap as one self-contained HTML page: per explained row, its image panels
(each image with its pixel relevance overlaid, embedded as a PNG data URI, and a colour bar) above
its text heatmap (`vl_rows`: each image's tokens as one `[image k]` token).

The overlay is `overlay.overlay_rgb` at the map's resolution, encoded by `overlay.png_bytes` (no
image library, no matplotlib), shown `scale` times larger with pixelated scaling; the colour bar is a
CSS gradient over the same scale (blue, white, red) labelled with the map's raw extremes.
"""

from __future__ import annotations

import base64
import html

from lrp_triton.render.colors import BLUE, RED, css
from lrp_triton.render.html import STYLE, legend_html, row_html
from lrp_triton.render.overlay import overlay_rgb, png_bytes
from lrp_triton.render.vl_png import PANEL_PX, caption_text
from lrp_triton.render.vl_rows import Panel, image_rows

IMAGE_STYLE = """
.lrp-heatmap .lrp-images { display: flex; flex-wrap: wrap; gap: 16px; margin: 6px 0; }
.lrp-heatmap .lrp-image { margin: 0; display: flex; flex-direction: column; font-size: 12px; color: #444; }
.lrp-heatmap .lrp-image img { image-rendering: pixelated; display: block; }
.lrp-heatmap .lrp-panel { display: flex; gap: 6px; align-items: stretch; }
.lrp-heatmap .lrp-bar { width: 12px; border: 1px solid #888; }
.lrp-heatmap .lrp-bar-labels { display: flex; flex-direction: column; justify-content: space-between;
  font-size: 11px; line-height: 1.2; }
"""


def panel_html(panel: Panel, alpha: float, scale: int | None) -> str:
    """One image: the overlay as an <img> with a data URI, its colour bar and caption."""
    h, w = panel.relevance.shape
    s = scale or max(1, PANEL_PX // max(h, w))
    data = base64.b64encode(png_bytes(overlay_rgb(panel.relevance, panel.image, alpha))).decode("ascii")
    top = float(panel.relevance.abs().max())
    caption = html.escape(caption_text(panel))
    gradient = f"linear-gradient(to top, {css(BLUE)}, #ffffff, {css(RED)})"
    return (f'<figure class="lrp-image" data-image="{panel.index}" data-total="{panel.total:.9g}">'
            f'<figcaption>{caption}</figcaption><div class="lrp-panel">'
            f'<img alt="{caption}" width="{w * s}" height="{h * s}" src="data:image/png;base64,{data}">'
            f'<div class="lrp-bar" style="background:{gradient}"></div>'
            f'<div class="lrp-bar-labels"><span>{top:+.3g}</span><span>0</span><span>{-top:+.3g}</span></div>'
            f'</div></figure>')


def fragment(attribution, title: str = "", images=None, alpha: float = 0.6, scale: int | None = None) -> str:
    """The page's markup: a `<div>` with its own `<style>`."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise ValueError(f"to_html: scale={scale!r} must be a whole number >= 1 (None: automatic)")
    parts = [f"<style>{STYLE}{IMAGE_STYLE}</style>", '<div class="lrp-heatmap">']
    if title:
        parts.append(f"<h1>{html.escape(title)}</h1>")
    for item in image_rows(attribution, images):
        panels = "".join(panel_html(p, alpha, scale) for p in item.panels)
        parts.append(row_html(item.row, f'<div class="lrp-images">{panels}</div>' if panels else ""))
    parts.append(legend_html() + "</div>")
    return "\n".join(parts)
