"""Explicit float64 LRP reference for LLaVA, written as relevance formulas.

It walks the CLIP vision tower (reference_clip.vision_tower: patch convolution, CLS and positions,
pre_layrnorm, the encoder layers) up to each `vision_feature_layer` (hidden_states[k] is the input of
encoder layer k: the tower cut after k layers), drops the CLS token ("default") or keeps it ("full"),
concatenates the feature layers over the hidden axis, the projector linear_2(act(linear_1(x)))
(epsilon rule on the linears, identity rule on the activation), puts the image embeddings at the
image tokens (a copy: each position's relevance goes back to exactly one of the two), and the
Llama / Mistral decoder (reference_lrp.llama_layer) with 1-D positions over each row's real tokens.

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
    inner, cfg = model.model, model.config.text_config
    lm = inner.language_model
    mask = mask.bool()
    is_image = ids == model.config.image_token_id
    x = d64(lm.embed_tokens(ids)).clone()
    image_embeds, b_image = image_reference(model, pixels, mode)
    x[is_image] = image_embeds.reshape(-1, x.shape[-1])
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
    r_pixels, r_patches = b_image(r[is_image].reshape(image_embeds.shape))
    text = torch.where(is_image[..., None], torch.zeros_like(r), r)
    return ({"relevance": summed(r, -1), "text_relevance": summed(text, -1), "pixels": r_pixels,
             "patches": r_patches}, score, z)
