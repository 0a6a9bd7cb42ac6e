"""Explicit float64 LRP reference for PaliGemma and Gemma 3 multimodal, written as relevance formulas.

Vision: the SigLIP tower (reference_clip.vision_tower: patch convolution, positions, the encoder
layers, post_layernorm), its last hidden state. Projector: PaliGemma's linear (epsilon rule);
Gemma 3's average pool over the patch grid (a linear map over the patches: epsilon rule), the
(1 + w) RMSNorm (identity rule) and the matrix product (epsilon rule). The image embeddings go to
the image tokens (a copy), then the Gemma decoder (reference_lrp.llama_layer) with its positions
(PaliGemma: 1, 2, ... over the real tokens; Gemma 3: 0, 1, ...).

The decoder's visibility is written here from the token types, without transformers' mask code:
a token in a bidirectional block sees up to the block's end, `causal_extent` (reference_attention):
PaliGemma's block is the run of prefix tokens (token type 0), Gemma 3's each run of image tokens
(token type 1); every other token is causal. Sliding layers bound the past only (i - j < window).
"""

from __future__ import annotations

import torch

from reference_clip import vision_tower
from reference_lrp import PER_TYPE_ROPE, d64, head_relevance, linear, llama_layer, norm
from scaled_close import summed


def block_extent(block: torch.Tensor) -> torch.Tensor:
    """[B, N]: the last position each token sees, its own for a token outside a block (False in
    `block`), else the end of its run of block tokens."""
    b, n = block.shape
    extent = torch.arange(n).expand(b, n).clone()
    for i in range(n - 2, -1, -1):
        same = block[:, i] & block[:, i + 1]
        extent[:, i] = torch.where(same, extent[:, i + 1], extent[:, i])
    return extent


def decoder_extent(model, token_type_ids, n):
    """The causal extent of the decoder's queries from the token types (None: causal)."""
    if token_type_ids is None:
        return None
    prefix_is = 0 if model.config.model_type == "paligemma" else 1
    return block_extent(token_type_ids == prefix_is)


def projector(model, hidden):
    """(image embeddings [n_images, T, text hidden], back(R) -> R_hidden)."""
    inner, cfg = model.model, model.config
    proj = inner.multi_modal_projector
    if cfg.model_type == "paligemma":
        return linear(hidden, proj.linear.weight, proj.linear.bias)
    side = cfg.vision_config.image_size // cfg.vision_config.patch_size
    tokens = int(round(cfg.mm_tokens_per_image ** 0.5))
    k = side // tokens
    pool = torch.zeros(tokens * tokens, side * side, dtype=torch.float64)  # token t averages its k x k patches
    for p in range(side * side):
        r, c = divmod(p, side)
        pool[(r // k) * tokens + c // k, p] = 1.0 / (k * k)
    pooled, b_pool = linear(hidden.transpose(1, 2), pool)  # over the patches: [n, hidden, T]
    normed, b_norm = norm(pooled.transpose(1, 2), proj.mm_soft_emb_norm)
    y, b_mat = linear(normed, proj.mm_input_projection_weight.T)
    return y, lambda r: b_pool(b_norm(b_mat(r)).transpose(1, 2)).transpose(1, 2)


def gemma_vl_reference(model, ids, mask, pixels, token_type_ids, positions, target, contrast=None, mode="attnlrp"):
    """Relevance by the rules: a dict of the merged sequence's [B, N], the text tokens' [B, N], the
    pixels' [n_images, H, W] and the patch embeddings' [n_images, h, w]; the explained score [B]; the
    logits at the positions."""
    inner, cfg = model.model, model.config
    lm = inner.language_model
    tcfg = lm.config
    mask = mask.bool()
    is_image = ids == cfg.image_token_id
    x = d64(lm.embed_tokens(ids)).clone()  # (Gemma's sqrt(hidden) scale inside)
    hidden, _, b_tower = vision_tower(inner.vision_tower, pixels, mode)
    image_embeds, b_proj = projector(model, hidden)
    x[is_image] = image_embeds.reshape(-1, x.shape[-1])
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0) + (cfg.model_type == "paligemma")
    extent = decoder_extent(model, token_type_ids, ids.shape[1])
    layer_types = getattr(tcfg, "layer_types", None)
    backs = []
    for i, layer in enumerate(lm.layers):
        kind = layer_types[i] if layer_types is not None else None
        table = lm.rotary_emb(x, position_ids, kind) if tcfg.model_type in PER_TYPE_ROPE else lm.rotary_emb(
            x, position_ids)
        cos, sin = (d64(t) for t in table)
        x, back = llama_layer(layer, x, cos, sin, mask, tcfg, mode, extent)
        backs.append(back)
    h, b_norm = norm(x, lm.norm)
    softcap = getattr(tcfg, "final_logit_softcapping", None) if cfg.model_type == "paligemma" else None
    r, score, z = head_relevance(h, model.lm_head, positions, target, contrast, softcap)
    r = b_norm(r)
    for back in reversed(backs):
        r = back(r)
    fields = b_tower(b_proj(r[is_image].reshape(image_embeds.shape)), None)
    side = int(round(fields["patch"].shape[-1] ** 0.5))
    patches = fields["patch"].reshape(-1, side, side)
    patches.magnitude = fields["patch"].magnitude.reshape(-1, side, side)
    text = torch.where(is_image[..., None], torch.zeros_like(r), r)
    return ({"relevance": summed(r, -1), "text_relevance": summed(text, -1), "pixels": fields["pixel"],
             "patches": patches}, score, z)
