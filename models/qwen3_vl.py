"""Qwen3-VL and Qwen3-VL-MoE adapters: a vision transformer with DeepStack, its patch mergers, and a Qwen3
(Qwen3-MoE) decoder with interleaved 3-D multimodal rotary positions.

Vision tower (rules as for Qwen2-VL, see `lrp_triton.models.qwen2_vl`):
- patch embedding: a Conv3d over temporal x spatial patches (a linear layer over each flattened patch),
  plus learned position embeddings bilinearly interpolated to the image's patch grid (a constant per
  patch: the epsilon rule on the sum, where it keeps its share as a bias does);
- blocks: pre-norm LayerNorm (std held constant), attention (non-causal, one sequence per image, 2-D
  rotary on q / k: linear, epsilon rule), GELU-tanh MLP (identity rule on the activation);
- patch merger: LayerNorm, then Linear, GELU (identity rule), Linear over each group of m x m patches;
- DeepStack: the hidden states after each block of `deepstack_visual_indexes` go through a merger of
  their own (LayerNorm over the m x m group) and are added to the decoder's hidden states at the image
  tokens after its first layers, one merger per layer: `h_l[image] = h_l[image] + d_l`, the epsilon
  rule on the sum (its gradient), so the relevance of d_l flows back into the vision tower at that block.
Decoder: Qwen3 (RMSNorm and per-head q / k RMSNorms: identity rule; gated MLP, or Qwen3-VL-MoE's experts
with the softmax router untouched, as Qwen3-MoE); its position ids come from the model's own
`get_rope_index`; its rotary table interleaves the t, h, w frequencies (`mrope_section`), a constant.

The token relevance at an image token is that of the image embedding put there plus that of every
DeepStack feature added there (`VisionLanguageParts.deepstack`): the relevance that leaves the decoder
through that position into the vision tower.
"""

from __future__ import annotations

import dataclasses

import torch

from lrp_triton.models.base import (Adapter, VisionLanguageParts, gated_mlp, layer_norm, moe_experts, plain_mlp_named,
                                    rms_norm)
from lrp_triton.models.qwen2_vl import text_max_length, vision_language as qwen2_vl_parts
from lrp_triton.modules.encoder import LRPActivation


def vision_language(model) -> VisionLanguageParts:
    """Qwen2-VL's parts (the same processor layout and position numbering), with the DeepStack features."""
    inner = model.model

    def image_features(pixel_values, grid_thw):
        out = inner.get_image_features(pixel_values, grid_thw, return_dict=True)
        return torch.cat(out.pooler_output, dim=0), [torch.cat(f, dim=0) for f in out.deepstack_features]

    return dataclasses.replace(qwen2_vl_parts(model), image_features=image_features, deepstack=True)


def adapter(family: str, model_type: str, prefix: str, **extra) -> Adapter:
    """One family's adapter; `prefix` its HF class names' (Qwen3VL, Qwen3VLMoe), `extra` more replacements."""
    replacements = {f"{prefix}TextRMSNorm": rms_norm(), f"{prefix}TextMLP": gated_mlp,
                    f"{prefix}VisionMLP": plain_mlp_named("linear_fc1", "act_fn", "linear_fc2"),
                    "LayerNorm": layer_norm, "GELU": LRPActivation.from_hf, **extra}  # all norms; mergers' GELU
    return Adapter(family=family, model_types=(model_type,), replacements=replacements, kind="vision_language",
                   layers_attrs=("language_model.layers",), max_length=text_max_length,
                   vision_language_of=vision_language)


ADAPTER = adapter("Qwen3-VL", "qwen3_vl", "Qwen3VL")
ADAPTERS = (ADAPTER, adapter("Qwen3-VL-MoE", "qwen3_vl_moe", "Qwen3VLMoe", Qwen3VLMoeTextExperts=moe_experts))
