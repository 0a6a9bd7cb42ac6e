"""PaliGemma adapter (PaliGemmaForConditionalGeneration, PaliGemma 1 and 2): a SigLIP vision tower, a
linear projector, and a Gemma (1) or Gemma 2 decoder whose prefix attends bidirectionally.

Vision tower: SigLIP's (models.siglip: biased patch convolution, learned positions and no class
embedding, pre-norm layers with LayerNorm (std held constant), GELU-tanh MLP (identity rule),
non-causal attention); PaliGemma reads its last hidden state (after post_layernorm), every patch
one image token. (The attention-pooling head, where the config keeps it, runs but feeds nothing.)
Projector: one linear (epsilon rule).
Decoder: Gemma / Gemma 2 ((1 + w) RMSNorm identity, gated GELU-tanh MLP identity + uniform, the
scaled word embedding, Gemma 2's soft-caps: identity rule), positions 1, 2, 3, ... over each row's
real tokens (PaliGemma numbers from 1; an unpadded row gets the model's own default ids).

Attention mask (transformers' PaliGemmaModel.forward): with token_type_ids (the processor returns
them: 0 for the prefix, image and prompt, 1 for the suffix), query i sees key j when j <= i, or
when both are prefix tokens (`block_sequence_ids` = 0 for type 0, -1 else), and key j is not
padding; without token_type_ids the decoder does as the model: its text config's
`use_bidirectional_attention` (True for PaliGemma) makes every token see every other. Gemma 2's sliding layers
take (causal AND window) OR the prefix. The mask reaches lrp_triton's attention as the padding mask and
per-row causal extents (query i sees the keys j <= extent[i]: the prefix's end for a prefix token, else i;
O(N), lrp_triton.mask_extent), checked against the complete 4-D mask; a Gemma 2 sliding layer whose
prefix is longer than the window (not of that form) gets the complete mask as an additive 0 / -inf
bias (N x N memory per row: lrp_triton.attention_interface).

Images: pixel_values [n_images, C, S, S] at the tower's image size; each gives (S / patch)^2 image
tokens (`image_token_id`), expanded in input_ids by the processor. Maps: pixels [S, S] (summed over
channels), patches and tokens over the patch grid [S / patch, S / patch].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lrp_triton.models.base import Adapter, VisionLanguageParts, gated_mlp, positions_from_zero, rms_norm
from lrp_triton.models.llava import fixed_grid, patch_rows
from lrp_triton.models.qwen2_vl import text_max_length
from lrp_triton.models.siglip import REPLACEMENTS as SIGLIP_REPLACEMENTS


def image_maps(values: torch.Tensor, grid: torch.Tensor, level: str, token_side: int | None) -> list[torch.Tensor]:
    """Per image: "pixel" [..., n_images, C, H, W] -> [..., H, W] (summed over channels); "patch"
    [..., n_patches] -> [..., h, w]; "token" [..., n_tokens] -> [..., h, w] (token_side None: one
    token per patch) or [..., token_side, token_side] (Gemma 3's pooled tokens)."""
    if level == "pixel":
        return list(values.sum(-3).unbind(-3))
    shapes = [(int(h), int(w)) if level == "patch" or token_side is None else (token_side, token_side)
              for _, h, w in grid.tolist()]
    chunks = values.split([h * w for h, w in shapes], dim=-1)
    return [chunk.reshape(*chunk.shape[:-1], h, w) for chunk, (h, w) in zip(chunks, shapes)]


def siglip_parts(model, image_features, text_masks, position_ids, token_side=None,
                 generated_token_type=0) -> VisionLanguageParts:
    """The parts of a SigLIP-tower model (PaliGemma, Gemma 3): fixed-size images, no CLS token."""
    config, inner = model.config, model.model
    vision = config.vision_config
    per_image = token_side ** 2 if token_side is not None else (vision.image_size // vision.patch_size) ** 2
    return VisionLanguageParts(
        text_model=inner.language_model, patch_embedding=inner.vision_tower.embeddings.patch_embedding,
        image_token_id=config.image_token_id, image_features=image_features, position_ids=position_ids,
        image_maps=lambda values, grid, level: image_maps(values, grid, level, token_side),
        tokens_per_image=lambda grid: [per_image] * len(grid),
        patch_dim=vision.patch_size ** 2 * getattr(vision, "num_channels", 3),
        image_grid=lambda pixels, image_sizes: fixed_grid(pixels, vision, image_sizes, config.model_type),
        patch_rows=patch_rows, text_masks=text_masks, generated_token_type=generated_token_type)


def projected_images(inner):
    """pixel_values -> the image embeddings of every image token, images in order [n_tokens, hidden]."""
    def image_features(pixel_values, grid):
        features = inner.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
        return features.reshape(-1, features.shape[-1])
    return image_features


def prefix_masks(text_model, embeds, mask, position_ids, token_type_ids):
    """PaliGemmaModel.forward's decoder mask: causal, OR'ed with the bidirectional prefix (token type 0)."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    kwargs = dict(config=text_model.config, inputs_embeds=embeds, attention_mask=mask, cache=None,
                  position_ids=position_ids)
    if token_type_ids is not None:
        kwargs["block_sequence_ids"] = torch.where(token_type_ids == 0, 0, -1)
    full = create_causal_mask(**kwargs)
    if getattr(text_model.config, "sliding_window", None) is None:
        return full
    return {"full_attention": full, "sliding_attention": create_sliding_window_causal_mask(**kwargs)}


def vision_language(model) -> VisionLanguageParts:
    inner = model.model
    return siglip_parts(model, projected_images(inner),
                        lambda embeds, mask, position_ids, types: prefix_masks(inner.language_model, embeds, mask,
                                                                               position_ids, types),
                        lambda ids, types, grid, mask: positions_from_zero(model.config, mask) + 1,
                        generated_token_type=1)  # generated tokens: the suffix, as in PaliGemma's generate


@dataclass(frozen=True)
class TextConfigAdapter(Adapter):
    """A composite model whose final-logit soft-cap sits in its text config (PaliGemma 2's Gemma 2)."""

    def final_logit_softcap(self, config) -> float | None:
        return super().final_logit_softcap(config.get_text_config())


ADAPTER = TextConfigAdapter(
    family="PaliGemma",
    model_types=("paligemma",),
    replacements={**SIGLIP_REPLACEMENTS, "GemmaRMSNorm": rms_norm(offset=1.0), "GemmaMLP": gated_mlp,
                  "Gemma2RMSNorm": rms_norm(offset=1.0), "Gemma2MLP": gated_mlp},
    kind="vision_language",
    layers_attrs=("language_model.layers",),
    final_logit_softcap_attr="final_logit_softcapping",
    max_length=text_max_length,
    vision_language_of=vision_language,
)
