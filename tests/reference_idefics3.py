"""Explicit float64 LRP reference for Idefics3 / SmolVLM, written as relevance formulas.

It keeps the real sub-images (those with a nonzero value), walks the vision transformer with
reference_clip.vision_tower (patch convolution, position embeddings, the SigLIP-like layers with the
padded patches masked as keys, post_layernorm), the connector's pixel shuffle (each s x s block of
patches concatenated, a permutation: relevance goes back to the value it moved), its bias-free linear
(epsilon rule), and the Llama decoder on the merged sequence (reference_llava.decoder_reference).

The patch mask and the position-table rows are computed here from their definitions: a patch is real
when any of its pixels is (pixel_attention_mask); a sub-image of nh x nw real patches reads, at patch
(i, j), row floor(i * n / nh) * n + floor(j * n / nw) of the tower's n x n position table (0 at a
padded patch).
"""

from __future__ import annotations

import torch

from reference_clip import vision_tower
from reference_llava import decoder_reference
from reference_lrp import d64, linear
from scaled_close import summed


def real_sub_images(pixel_values, pixel_attention_mask):
    """(pixels [n_real, C, H, W], pixel mask [n_real, H, W]) of the sub-images with a nonzero value."""
    flat = pixel_values.flatten(0, 1)
    keep = [i for i in range(flat.shape[0]) if bool((flat[i] != 0).any())]
    if pixel_attention_mask is None:
        mask = torch.ones(flat.shape[0], *flat.shape[-2:], dtype=torch.bool)
    else:
        mask = pixel_attention_mask.flatten(0, 1).bool()
    return flat[keep], mask[keep]


def patch_positions(pixel_mask, patch, n):
    """(patch mask [n_real, h * w], position-table rows [n_real, h * w]) by the module docstring."""
    b, height, width = pixel_mask.shape
    h, w = height // patch, width // patch
    real = pixel_mask.view(b, h, patch, w, patch).any(4).any(2)  # [b, h, w]
    rows = torch.zeros(b, h, w, dtype=torch.long)
    for k in range(b):
        nh, nw = int(real[k, :, 0].sum()), int(real[k, 0, :].sum())
        for i in range(h):
            for j in range(w):
                if real[k, i, j]:
                    rows[k, i, j] = min(i * n // nh, n - 1) * n + min(j * n // nw, n - 1)
    return real.flatten(1), rows.flatten(1)


def shuffle_order(h, w, s):
    """For each slot of the shuffled sequence [h/s * w/s tokens, s * s parts], the patch it takes: token
    (i, j) (row-major) holds the patches (i * s + r, j * s + c), r then c."""
    return torch.tensor([(i * s + r) * w + j * s + c for i in range(h // s) for j in range(w // s)
                         for r in range(s) for c in range(s)])


def image_reference(model, pixel_values, pixel_attention_mask, mode):
    """(image embeddings [n_real, T, hidden], back(R) -> (R_pixels [n_real, H, W], R_patches [n_real, h, w]))."""
    inner, cfg = model.model, model.config
    vision, s = cfg.vision_config, cfg.scale_factor
    pixels, pixel_mask = real_sub_images(pixel_values, pixel_attention_mask)
    patch_mask, rows = patch_positions(pixel_mask, vision.patch_size, vision.image_size // vision.patch_size)
    hidden, _, b_tower = vision_tower(inner.vision_model, pixels, mode, position_ids=rows, patch_mask=patch_mask)
    h = w = pixels.shape[-1] // vision.patch_size
    order = shuffle_order(h, w, s)
    n, dim = hidden.shape[0], hidden.shape[-1]
    shuffled = hidden[:, order].reshape(n, len(order) // (s * s), s * s * dim)
    y, b_proj = linear(shuffled, d64(inner.connector.modality_projection.proj.weight))

    def back(r):
        r_hidden = torch.zeros_like(hidden)
        r_hidden[:, order] = b_proj(r).reshape(n, len(order), dim)  # a permutation: each value its own relevance
        fields = b_tower(r_hidden, None)
        patch = fields["patch"].reshape(n, h, w)
        patch.magnitude = fields["patch"].magnitude.reshape(n, h, w)
        return fields["pixel"], patch
    return y, back


def idefics3_reference(model, ids, mask, pixel_values, positions, target, contrast=None, mode="attnlrp",
                       pixel_attention_mask=None):
    """Relevance by the rules: a dict of the merged sequence's [B, N], the text tokens' [B, N], the real
    sub-images' pixels [n_real, H, W] and patch embeddings [n_real, h, w]; the explained score [B]; the logits
    at the positions."""
    image_embeds, b_image = image_reference(model, pixel_values, pixel_attention_mask, mode)
    r, is_image, score, z = decoder_reference(model, ids, mask, image_embeds.reshape(-1, image_embeds.shape[-1]),
                                              positions, target, contrast, mode, lm=model.model.text_model)
    r_pixels, r_patches = b_image(r[is_image].reshape(image_embeds.shape))
    text = torch.where(is_image[..., None], torch.zeros_like(r), r)
    return ({"relevance": summed(r, -1), "text_relevance": summed(text, -1), "pixels": r_pixels,
             "patches": r_patches}, score, z)

