"""A complete 4-D attention mask of the form "causal OR blocks" (AND a one-sided window), read as
per-row causal extents: O(N) for the kernel instead of an N x M bias.

PaliGemma (bidirectional prefix, token_type 0) and Gemma 3 (bidirectional image blocks) build their
decoder masks with transformers' overlays (`block_sequence_ids`, `blockwise_overlay`,
`sliding_window_overlay`):

    full layers:     visible(i, j) = pad[j] AND (j <= i OR block(i) == block(j))
    sliding layers:  visible(i, j) = pad[j] AND (j <= i OR block(i) == block(j)) AND i - j < window

For contiguous blocks this is exactly

    visible(i, j) = pad[j] AND j <= extent[i] (AND i - j < window),   extent[i] = max(i, last j visible to i)

the rule of `lrp_attention(causal_extent=...)`. `extent_form` derives (pad, extent) from the mask (pad:
its diagonal, every unpadded key seeing itself) and rebuilds the mask from them: the extents are used
only when the rebuilt mask equals the given one exactly (else the caller keeps the bias). Only N == M
(a full forward, no cached prefix) is read; the result is cached per mask tensor (the model hands the
same mask to each of its layers), so the derivation runs once per forward and layer type.
"""

from __future__ import annotations

import weakref

import torch

_cache: dict = {}


def extent_form(mask: torch.Tensor, sliding_window: int | None):
    """(key_padding_mask [B, N] or None, causal_extent [B, N] int32 or None: plain causal) when the bool mask
    [B, 1, N, N] is "causal OR blocks" (AND the window `i - j < sliding_window`) as above; None otherwise."""
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != mask.shape[3]:
        return None
    try:
        version = mask._version
    except RuntimeError:  # (an inference tensor keeps no version counter)
        version = None
    key = (id(mask), version, sliding_window)
    hit = _cache.get(key)
    if hit is not None and hit[0]() is mask:
        return hit[1]
    found = _derive(mask[:, 0], sliding_window)
    if len(_cache) >= 8:
        _cache.clear()
    _cache[key] = (weakref.ref(mask), found)
    return found


def _derive(vis: torch.Tensor, sliding_window: int | None):
    b, n, _ = vis.shape
    pos = torch.arange(n, device=vis.device)
    pad = vis[:, pos, pos]  # an unpadded key sees itself (causal, and inside any window)
    last = torch.where(vis, pos, -1).amax(-1)  # the last key each row sees
    extent = torch.maximum(last, pos)
    rebuilt = pos[None, None, :] <= extent[:, :, None]
    if sliding_window is not None:
        rebuilt = rebuilt & (pos[:, None] - pos[None, :] < sliding_window)
    rebuilt = rebuilt & pad[:, None, :]
    if not torch.equal(rebuilt, vis):
        return None
    padding = None if bool(pad.all()) else pad
    return padding, None if torch.equal(extent, pos.expand(b, n)) else extent.to(torch.int32)
