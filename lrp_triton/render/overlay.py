"""An image's pixel relevance overlaid on the image, as a PNG (matplotlib, the optional `plot` extra).

Each pixel's relevance is normalised by the map's largest magnitude, v in [-1, 1], and coloured on
the shared diverging scale of `lrp_triton.render.colors` (red positive, blue negative), alpha-blended
over the image shown in grey: out = (1 - a) * grey + a * colour, a = alpha * |v| (irrelevant pixels
keep the image). The overlay is written pixel for pixel (each image pixel a `scale` x `scale`
block, at the top left of the PNG), with a colour bar of the relevance to its right.

`fitted` brings an image as given (a PIL image, an array or a tensor, of any size) to the map's size
(bilinear, antialiased: right for processors that resize the whole image, as Qwen2-VL's does);
`png_bytes` encodes an RGB array as a PNG without any image library (the HTML page embeds it).
"""

from __future__ import annotations

import struct
import zlib

import torch

from lrp_triton.render.colors import BLUE, RED

BAR_PX = 70  # width of the colour bar's strip, in PNG pixels


def overlay_rgb(relevance: torch.Tensor, image: torch.Tensor | None = None, alpha: float = 0.7) -> torch.Tensor:
    """uint8 [H, W, 3]: relevance [H, W] blended over `image` ([H, W], [C, H, W] or [H, W, C], any range:
    shown in grey, min-max scaled; None: white)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"overlay: alpha={alpha!r} must be in (0, 1]")
    r = relevance.detach().double().cpu()
    if r.dim() != 2:
        raise ValueError(f"overlay: relevance must be one map [H, W], got {tuple(r.shape)}")
    scale = r.abs().max()
    v = r / scale if scale > 0 else torch.zeros_like(r)
    if image is None:
        grey = torch.ones_like(v)
    else:
        img = torch.as_tensor(image).detach().double().cpu()
        if img.dim() == 3:
            img = img.mean(0) if img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3) else img.mean(-1)
        if tuple(img.shape) != tuple(v.shape):
            raise ValueError(f"overlay: the image is {tuple(img.shape)} but the relevance map {tuple(v.shape)}; pass "
                             "the image as the model saw it (resized by the processor)")
        span = img.max() - img.min()
        grey = (img - img.min()) / span if span > 0 else torch.full_like(img, 0.5)
    colour = torch.where(v[..., None] >= 0, torch.tensor(RED, dtype=v.dtype), torch.tensor(BLUE, dtype=v.dtype))
    a = (alpha * v.abs())[..., None]
    out = (1 - a) * (grey[..., None] * 255) + a * colour
    return out.round().clamp(0, 255).to(torch.uint8)


def save_overlay(relevance: torch.Tensor, path, image=None, alpha: float = 0.7, scale: int = 8, dpi: int = 100) -> None:
    """Writes the overlay of one map (see `overlay_rgb`), each pixel a scale x scale block, and a colour bar."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"overlay: scale={scale!r} must be a whole number >= 1")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import LinearSegmentedColormap, Normalize
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the image overlay needs matplotlib, which is not installed; install it with "
                          "`pip install matplotlib` (or `pip install 'lrp_triton[plot]'`)") from exc
    rgb = overlay_rgb(relevance, image, alpha)
    big = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
    h, w = big.shape[:2]
    fig = Figure(figsize=((w + BAR_PX) / dpi, max(h, 120) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.figimage(big, xo=0, yo=fig.bbox.height - h, origin="upper")
    top = float(relevance.detach().abs().max()) or 1.0
    cmap = LinearSegmentedColormap.from_list("lrp", [[c / 255 for c in BLUE], (1, 1, 1), [c / 255 for c in RED]])
    bar = fig.add_axes(((w + 12) / (w + BAR_PX), 0.1, 12 / (w + BAR_PX), 0.8))
    fig.colorbar(ScalarMappable(Normalize(-top, top), cmap), cax=bar)
    bar.tick_params(labelsize=6)
    fig.savefig(path, format="png", dpi=dpi, facecolor="white")


def fitted(image, shape) -> torch.Tensor:
    """float [C, H, W] of `image` (a PIL image, or an array / tensor [H, W], [C, H, W] or [H, W, C]) resized
    to `shape` = (H, W) when it differs."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        import numpy

        image = numpy.array(image.convert("RGB"))
    img = torch.as_tensor(image).detach().cpu().double()
    if img.dim() == 2:
        img = img[None]
    elif img.dim() == 3 and not (img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3)):
        img = img.permute(2, 0, 1)  # [H, W, C] -> [C, H, W]
    if img.dim() != 3 or img.shape[1] == 0 or img.shape[2] == 0:
        raise ValueError(f"overlay: an image must be [H, W], [C, H, W] or [H, W, C], got {tuple(img.shape)}")
    if tuple(img.shape[1:]) != tuple(shape):
        img = torch.nn.functional.interpolate(img[None], size=tuple(shape), mode="bilinear", antialias=True,
                                              align_corners=False)[0]
    return img


def png_bytes(rgb: torch.Tensor) -> bytes:
    """A PNG file (8-bit RGB, no filter) of uint8 [H, W, 3]."""
    h, w, _ = rgb.shape
    rows = torch.cat([torch.zeros(h, 1, dtype=torch.uint8), rgb.reshape(h, w * 3)], 1)  # filter byte 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.numpy().tobytes(), 6)) + chunk(b"IEND", b""))
