"""Gemma 3 multimodal adapter (Gemma3ForConditionalGeneration, model_type "gemma3"; the text-only
Gemma 3 is models.gemma3): a SigLIP vision tower, a pooling projector, and a Gemma 3 decoder whose
image tokens attend bidirectionally within their image.

Vision tower: SigLIP's (models.paligemma), its last hidden state. Projector (Gemma3MultiModalProjector):
an average pool of the patch grid down to mm_tokens_per_image tokens (linear: epsilon rule), a
(1 + w) RMSNorm (identity rule, std held constant) and a matrix product (epsilon rule).
Decoder: Gemma 3 ((1 + w) RMSNorms, per-head query / key norms, gated GELU-tanh MLP, the scaled
word embedding, alternating sliding-window / full layers), positions 0, 1, 2, ... over each row's
real tokens, no final-logit soft-cap (the multimodal head applies none).

Attention mask (transformers' create_masks_for_vision_model): with token_type_ids (the processor
returns them: 1 at the image tokens), each run of consecutive image tokens is one block, and
query i sees key j when j <= i or both sit in the same block (OR), and j is not padding; the
sliding layers AND the one-sided window j > i - window on top, so an image token sees its whole
block ahead of it even past the window. Without token_type_ids the decoder is causal, as in the
model. The mask reaches lrp_triton's attention as the padding mask and per-row causal extents
(query i sees the keys j <= extent[i]: its block's end inside a block, else i; the window then bounds
the past only, i - j < window; O(N), lrp_triton.mask_extent), checked exactly against the complete
4-D mask (a mask of another form would reach it as an additive 0 / -inf bias).

Images: pixel_values [n_images, C, S, S]; each gives mm_tokens_per_image image tokens. Maps: pixels
[S, S], patches [S / patch, S / patch], tokens [t, t] with t = sqrt(mm_tokens_per_image).
"""

from __future__ import annotations

import math

from lrp_triton.models.base import Adapter, VisionLanguageParts, positions_from_zero
from lrp_triton.models.gemma3 import ADAPTER as GEMMA3_TEXT
from lrp_triton.models.paligemma import projected_images, siglip_parts
from lrp_triton.models.qwen2_vl import text_max_length
from lrp_triton.models.siglip import REPLACEMENTS as SIGLIP_REPLACEMENTS


def image_block_masks(text_model, embeds, mask, position_ids, token_type_ids):
    """Gemma3Model.forward's decoder masks per layer type (the text model's own without token_type_ids)."""
    if token_type_ids is None:
        return mask
    from transformers.models.gemma3.modeling_gemma3 import (create_masks_for_vision_model,
                                                            get_block_sequence_ids_for_mask)

    blocks = get_block_sequence_ids_for_mask(token_type_ids, device=embeds.device)
    return create_masks_for_vision_model(config=text_model.config, inputs_embeds=embeds, attention_mask=mask,
                                         cache=None, position_ids=position_ids, block_sequence_ids=blocks)


def vision_language(model) -> VisionLanguageParts:
    inner = model.model
    side = math.isqrt(model.config.mm_tokens_per_image)
    return siglip_parts(model, projected_images(inner),
                        lambda embeds, mask, position_ids, types: image_block_masks(inner.language_model, embeds,
                                                                                    mask, position_ids, types),
                        lambda ids, types, grid, mask: positions_from_zero(model.config, mask), token_side=side)


ADAPTER = Adapter(
    family="Gemma3 vision-language",
    model_types=("gemma3",),
    replacements={**SIGLIP_REPLACEMENTS, **GEMMA3_TEXT.replacements},
    kind="vision_language",
    layers_attrs=("language_model.layers",),
    max_length=text_max_length,
    vision_language_of=vision_language,
)
