"""A vision-language attribution as display rows with image panels (`VisionLanguageAttribution`).

Each display row (one explained batch row and position, see `lrp_triton.render.rows`) keeps its
text heatmap, except that each image's run of image tokens is shown as one placeholder token,
`[image k]`, whose relevance is the sum over those tokens (the image's total; `normalized` is then
taken over the row again, so the image's and the words' colours share one scale). Beside it, one
`Panel` per image of that batch row: the image's pixel relevance map for that position, the image
to draw it on (resized to the map), and the image's total and share of the row's relevance.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from lrp_triton.render.overlay import fitted
from lrp_triton.render.rows import Row, rows


class Panel(NamedTuple):
    index: int  # the image's index in the attribution's per-image lists (the order of image_grid_thw)
    relevance: torch.Tensor  # [H, W] pixel relevance, summed over channels
    image: torch.Tensor | None  # float [C, H, W] (resized to the map) or None: drawn on white
    total: float  # the relevance of the image's tokens, summed
    share: float  # total / the row's total relevance (nan when that is 0)


class ImageRow(NamedTuple):
    row: Row
    panels: list[Panel]


def check_images(attribution, images) -> list:
    """`images` (default: `attribution.images`) as one entry per image (None: no image to draw on)."""
    n = len(attribution.image_pixel_relevance)
    images = getattr(attribution, "images", None) if images is None else images
    if images is None:
        return [None] * n
    if not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) != n:
        raise ValueError(f"images: got {len(images)} image(s), but the attribution explains {n}; pass one per image, "
                         "in the order the processor was given them")
    return list(images)


def _collapsed(row: Row, groups: list[tuple[int, list[int]]]) -> Row:
    """`row` with each image's tokens (groups: image index, its token indices) replaced by one placeholder
    at its first token, carrying their summed relevance."""
    owner = {i: k for k, ids in groups for i in ids}
    heads = {ids[0] for _, ids in groups if ids}
    totals: dict[int, float] = {}
    for index, value in zip(row.indices, row.relevance):
        if index in owner:
            totals[owner[index]] = totals.get(owner[index], 0.0) + value
    keep = [n for n, index in enumerate(row.indices) if index not in owner or index in heads]
    tokens = [row.tokens[n] if row.indices[n] not in owner else f"[image {owner[row.indices[n]]}]" for n in keep]
    relevance = [row.relevance[n] if row.indices[n] not in owner else totals[owner[row.indices[n]]] for n in keep]
    largest = max((abs(v) for v in relevance), default=0.0)
    return dataclasses.replace(
        row, tokens=tokens, token_ids=None if row.token_ids is None else [row.token_ids[n] for n in keep],
        indices=[row.indices[n] for n in keep], relevance=relevance,
        normalized=[v / largest if largest > 0 else 0.0 for v in relevance])


def image_rows(attribution, images=None) -> list[ImageRow]:
    """The display rows of a vision-language attribution with their image panels (see the module docstring)."""
    images = check_images(attribution, images)
    plain = rows(attribution)
    several = attribution.relevance.dim() == 3
    n_pos = attribution.relevance.shape[1] if several else 1
    mask = attribution.image_mask.cpu()
    out = []
    for r, row in enumerate(plain):
        b, j = row.batch, r % n_pos
        mine = [k for k, owner in enumerate(attribution.image_rows) if owner == b]
        tokens = torch.nonzero(mask[b]).flatten().tolist()
        base = attribution.image_base_token_relevance  # LLaVA-NeXT's base tiles' tokens (else empty)
        counts = [attribution.image_token_relevance[k].shape[-2:].numel()
                  + (base[k].shape[-2:].numel() if base else 0) for k in mine]
        groups, start = [], 0
        if sum(counts) == len(tokens):  # the images' tokens in order (else shown token by token)
            for k, count in zip(mine, counts):
                groups.append((k, tokens[start:start + count]))
                start += count
        total_row = float(attribution.relevance[b, j].sum() if several else attribution.relevance[b].sum())
        panels = []
        for k in mine:
            pixel = attribution.image_pixel_relevance[k]
            pixel = (pixel[j] if several else pixel).detach().float().cpu()
            token_map = attribution.image_token_relevance[k]
            if base:
                token_map = torch.cat([token_map.flatten(-2), base[k].flatten(-2)], -1)
            total = float(token_map[j].sum() if several else token_map.sum())
            image = None if images[k] is None else fitted(images[k], tuple(pixel.shape))
            panels.append(Panel(k, pixel, image, total, total / total_row if total_row else float("nan")))
        present = set(row.indices)
        shown = [(k, [i for i in ids if i in present]) for k, ids in groups]
        out.append(ImageRow(_collapsed(row, shown) if groups else row, panels))
    return out
