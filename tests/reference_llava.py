"""Explicit float64 LRP reference for LLaVA, written as relevance formulas.

It walks the CLIP vision tower (reference_clip.vision_tower: patch convolution, CLS and positions,
pre_layrnorm, the encoder layers) up to each `vision_feature_layer` (hidden_states[k] is the input of
encoder layer k: the tower cut after k layers), drops the CLS token ("default") or keeps it ("full"),
concatenates the feature layers over the hidden axis, the projector linear_2(act(linear_1(x)))
(epsilon rule on the linears, identity rule on the activation), puts the image embeddings at the
image tokens (a copy: each position's relevance goes back to exactly one of the two), and the
Llama / Mistral decoder (reference_lrp.llama_layer) with 1-D positions over each row's real tokens.

LLaVA-NeXT (llava_next_reference): the same tower and projector on each image's tiles, its own
choice of the pinpoint and unpadding, the newline embedding a constant.

Several feature layers share the tower's lower layers: each cut is its own walk, and their
relevance adds up at the pixels (every rule here is linear in the relevance it passes back).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from reference_clip import vision_tower
from reference_lrp import ACTIVATIONS, act_kind, d64, head_relevance, identity, linear, llama_layer, norm
from scaled_close import summed


def cut_tower(tower, depth):
    """The CLIP vision tower with only its first `depth` encoder layers, as reference_clip reads it."""
    return SimpleNamespace(embeddings=tower.embeddings, pre_layrnorm=tower.pre_layrnorm,
                           post_layernorm=tower.post_layernorm,
                           encoder=SimpleNamespace(layers=list(tower.encoder.layers)[:depth]))


def image_reference(model, pixels, mode):
    """(image embeddings [n_images, T, hidden], back(R) -> (R_pixels [n_images, H, W], R_patches
    [n_images, h, w])): tower, feature selection, projector."""
    cfg, inner = model.config, model.model
    tower = inner.vision_tower
    n_layers = len(tower.encoder.layers)
    layers = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, list) else [cfg.vision_feature_layer]
    start = 1 if cfg.vision_feature_select_strategy == "default" else 0
    cuts = []
    for k in layers:
        hidden, _, back = vision_tower(cut_tower(tower, k % (n_layers + 1)), pixels, mode)
        cuts.append((hidden, back))
    features = torch.cat([h[:, start:] for h, _ in cuts], -1)
    proj = inner.multi_modal_projector
    a, b1 = linear(features, proj.linear_1.weight, proj.linear_1.bias)
    g, _ = identity(ACTIVATIONS[act_kind(proj.act)], a)  # identity rule: R passes unchanged
    y, b2 = linear(g, proj.linear_2.weight, proj.linear_2.bias)

    def back(r):
        r_features = b1(b2(r))
        pixel = patch = magnitude_px = magnitude_patch = 0.0
        width = cuts[0][0].shape[-1]
        for i, (hidden, b_tower) in enumerate(cuts):
            r_hidden = torch.zeros_like(hidden)
            r_hidden[:, start:] = r_features[..., i * width:(i + 1) * width]
            fields = b_tower(r_hidden, None)
            pixel, magnitude_px = pixel + fields["pixel"], magnitude_px + fields["pixel"].magnitude
            patch, magnitude_patch = patch + fields["patch"], magnitude_patch + fields["patch"].magnitude
        side = int(round(patch.shape[-1] ** 0.5))
        patch, magnitude_patch = (t.reshape(-1, side, side) for t in (patch, magnitude_patch))
        pixel.magnitude, patch.magnitude = magnitude_px, magnitude_patch
        return pixel, patch
    return y, back


def llava_reference(model, ids, mask, pixels, positions, target, contrast=None, mode="attnlrp"):
    """Relevance by the rules: a dict of the merged sequence's [B, N], the text tokens' [B, N], the
    pixels' [n_images, H, W] and the patch embeddings' [n_images, h, w]; the explained score [B]; the
    logits at the positions."""
    image_embeds, b_image = image_reference(model, pixels, mode)
    r, is_image, score, z = decoder_reference(model, ids, mask, image_embeds.reshape(-1, image_embeds.shape[-1]),
                                              positions, target, contrast, mode)
    r_pixels, r_patches = b_image(r[is_image].reshape(image_embeds.shape))
    text = torch.where(is_image[..., None], torch.zeros_like(r), r)
    return ({"relevance": summed(r, -1), "text_relevance": summed(text, -1), "pixels": r_pixels,
             "patches": r_patches}, score, z)


def decoder_reference(model, ids, mask, image_embeds, positions, target, contrast, mode, lm=None):
    """(R at the merged sequence [B, N, hidden], the image-token mask, the score, the logits): the image
    embeddings [n_image_tokens, hidden] put at the image tokens, the decoder (`lm`, default
    model.model.language_model; Idefics3: model.model.text_model) and the head, by the rules."""
    cfg = model.config.text_config
    lm = model.model.language_model if lm is None else lm
    mask = mask.bool()
    is_image = ids == model.config.image_token_id
    x = d64(lm.embed_tokens(ids)).clone()
    x[is_image] = image_embeds
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    cos, sin = (d64(t) for t in lm.rotary_emb(x, position_ids))
    backs = []
    for layer in lm.layers:
        x, back = llama_layer(layer, x, cos, sin, mask, cfg, mode)
        backs.append(back)
    h, b_norm = norm(x, lm.norm)
    r, score, z = head_relevance(h, model.lm_head, positions, target, contrast, None)
    r = b_norm(r)
    for back in reversed(backs):
        r = back(r)
    return r, is_image, score, z


def best_pinpoint(size, pinpoints):
    """The (height, width) of `pinpoints` that shows an image of `size` = (height, width) with the most
    pixels once resized into it (aspect kept, at most its own), ties to the least canvas left empty,
    then to the first listed."""
    h, w = size
    best, best_key = None, None
    for ph, pw in pinpoints:
        scale = min(ph / h, pw / w)
        shown = min(int(w * scale) * int(h * scale), h * w)
        key = (shown, -(ph * pw - shown))
        if best_key is None or key > best_key:
            best, best_key = (ph, pw), key
    return best


def unpadded(size, height, width):
    """(rows, cols) slices of a [height, width] feature grid the image of `size` fills once resized into
    it centred: the side the image spans fully is kept, the other cut to round(the image's extent)
    (rounded to 7 digits, then floored), the cut split evenly (the smaller half first)."""
    h, w = size
    if w / h > width / height:  # as wide as the grid: rows cut
        extent = int(round(h * width / w, 7))
        pad = (height - extent) // 2
        return slice(pad, height - pad), slice(0, width)
    extent = int(round(w * height / h, 7))
    pad = (width - extent) // 2
    return slice(0, height), slice(pad, width - pad)


def llava_next_reference(model, ids, mask, pixels, image_sizes, positions, target, contrast=None, mode="attnlrp"):
    """LLaVA-NeXT by the rules: each image's used tiles (1 base + rows x cols of its best pinpoint)
    through the tower and projector (image_reference, the tiles as images); its tokens: the base tile's
    features, then the canvas's feature grid (tiles row-major, each tile's patches row-major) unpadded,
    each row followed by image_newline (a constant: its relevance is absorbed, passed to nothing).
    Returns the dict of llava_reference, its pixel / patch entries per image: "pixels" / "patches" the
    canvas maps [rows S, cols S] / [rows h, cols w], "base_pixels" / "base_patches" the base tile's,
    "layout" (rows, cols, R, C); the score; the logits."""
    cfg = model.config
    size = cfg.vision_config.image_size
    side = size // cfg.vision_config.patch_size
    layouts, used = [], []
    for i, hw in enumerate(image_sizes.tolist()):
        ph, pw = best_pinpoint(hw, cfg.image_grid_pinpoints)
        rows, cols = ph // size, pw // size
        layouts.append((rows, cols, *unpadded(hw, rows * side, cols * side)))
        used.append(pixels[i, :1 + rows * cols])
    y, b_image = image_reference(model, torch.cat(used), mode)  # [tiles, h w, hidden]
    hidden = y.shape[-1]
    newline = d64(model.model.image_newline)
    pieces, start = [], 0
    for rows, cols, kr, kc in layouts:
        grid = y[start + 1:start + 1 + rows * cols].reshape(rows, cols, side, side, hidden)
        grid = grid.permute(0, 2, 1, 3, 4).reshape(rows * side, cols * side, hidden)[kr, kc]
        grid = torch.cat([grid, newline.expand(grid.shape[0], 1, hidden)], 1)
        pieces += [y[start], grid.reshape(-1, hidden)]
        start += 1 + rows * cols
    r, is_image, score, z = decoder_reference(model, ids, mask, torch.cat(pieces), positions, target, contrast, mode)
    r_image, r_y, start, offset = r[is_image], torch.zeros_like(y), 0, 0
    out = {k: [] for k in ("pixels", "patches", "base_pixels", "base_patches", "layout")}
    for rows, cols, kr, kc in layouts:
        r_y[start] = r_image[offset:offset + side * side]
        offset += side * side
        n_rows, n_cols = kr.stop - kr.start, kc.stop - kc.start
        r_grid = torch.zeros(rows * side, cols * side, hidden, dtype=r.dtype)
        r_grid[kr, kc] = r_image[offset:offset + n_rows * (n_cols + 1)].reshape(n_rows, n_cols + 1, hidden)[:, :-1]
        offset += n_rows * (n_cols + 1)
        r_y[start + 1:start + 1 + rows * cols] = r_grid.reshape(rows, side, cols, side, hidden).permute(
            0, 2, 1, 3, 4).reshape(rows * cols, side * side, hidden)
        out["layout"].append((rows, cols, n_rows, n_cols))
        start += 1 + rows * cols
    r_pixels, r_patches = b_image(r_y)  # per tile, summed over channels / hidden, carrying .magnitude
    start = 0
    for rows, cols, _, _ in out["layout"]:
        for key, maps in (("pixels", r_pixels), ("patches", r_patches)):
            def canvas(t, s=maps.shape[-1]):
                return t[start + 1:start + 1 + rows * cols].reshape(rows, cols, s, s).transpose(1, 2).reshape(
                    rows * s, cols * s)
            image, base = canvas(maps), maps[start].clone()
            image.magnitude, base.magnitude = canvas(maps.magnitude), maps.magnitude[start]
            out[key].append(image)
            out[f"base_{key}"].append(base)
        start += 1 + rows * cols
    text = torch.where(is_image[..., None], torch.zeros_like(r), r)
    return {"relevance": summed(r, -1), "text_relevance": summed(text, -1), **out}, score, z
