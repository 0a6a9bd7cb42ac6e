"""Qwen2-VL and Qwen2.5-VL adapters: a vision transformer, its patch merger, and a Qwen2 decoder
with 3-D multimodal rotary positions.

Vision tower (rules as for the other families):
- patch embedding: a Conv3d over temporal x spatial patches, i.e. a linear layer over each
  flattened patch (epsilon rule: the exact gradient);
- blocks: pre-norm LayerNorm (Qwen2-VL; std held constant) or RMSNorm (Qwen2.5-VL; identity),
  attention (non-causal, 2-D rotary on q / k: linear, epsilon rule), one sequence per image
  (Qwen2.5-VL: per window, full attention in `fullatt_block_indexes`): transformers calls the
  attention function once per `cu_seqlens` chunk, so no block-diagonal N x N mask is built;
  QuickGELU MLP (Qwen2-VL, identity rule) or SiLU gated MLP (Qwen2.5-VL, identity + uniform);
- patch merger: norm, then Linear, GELU (identity rule), Linear over each group of m x m patches.
Decoder: Qwen2 (RMSNorm identity, gated MLP, causal attention); its position ids come from the
model's own `get_rope_index` (temporal, height, width ids per image token; 1-D ids for text).

Image layout: the image processor flattens each image into patches ordered by m x m merge blocks:
[t, h/m, w/m, m, m] patches, each [channels, temporal_patch, patch, patch] values
(`image_maps` undoes this).
"""

from __future__ import annotations

import torch

from lrp_triton.models.base import (Adapter, VisionLanguageParts, gated_mlp, layer_norm, plain_mlp_named, rms_norm)
from lrp_triton.modules.encoder import LRPActivation


def _grid(config):
    vision = config.vision_config
    return vision.spatial_merge_size, vision.patch_size, vision.temporal_patch_size, vision.in_channels


def image_maps(values: torch.Tensor, grid_thw: torch.Tensor, level: str, config) -> list[torch.Tensor]:
    """Per image, the values of its flattened patches laid out as a map (see VisionLanguageParts):
    "pixel" [..., n_patches, C * tp * p * p] -> [..., H, W] (summed over channels and the temporal
    patch's copies), "patch" [..., n_patches] -> [..., h, w], "token" [..., n_tokens] -> [..., h/m, w/m]
    (a video's frames summed)."""
    m, p, tp, c = _grid(config)
    per_image = [int(t) * int(h) * int(w) // (m * m if level == "token" else 1) for t, h, w in grid_thw.tolist()]
    axis = values.dim() - (2 if level == "pixel" else 1)
    out = []
    for chunk, (t, h, w) in zip(values.split(per_image, dim=axis), grid_thw.tolist()):
        lead = chunk.shape[:axis]
        if level == "token":
            out.append(chunk.reshape(*lead, t, h // m, w // m).sum(-3))
            continue
        blocks = chunk.reshape(*lead, t, h // m, w // m, m, m, *((c, tp, p, p) if level == "pixel" else ()))
        k = len(lead)
        if level == "pixel":  # [t, hb, wb, mh, mw, c, tp, ph, pw] -> [t, hb, mh, ph, wb, mw, pw]
            blocks = blocks.sum(dim=(k + 5, k + 6))
            order = (k + 1, k + 3, k + 5, k + 2, k + 4, k + 6)
            size = (h * p, w * p)
        else:  # [t, hb, wb, mh, mw] -> [t, hb, mh, wb, mw]
            order = (k + 1, k + 3, k + 2, k + 4)
            size = (h, w)
        out.append(blocks.permute(*range(k), k, *order).reshape(*lead, t, *size).sum(-3))
    return out


def vision_language(model) -> VisionLanguageParts:
    config = model.config
    inner = model.model
    m, p, tp, c = _grid(config)

    def image_features(pixel_values, grid_thw):
        return torch.cat(inner.get_image_features(pixel_values, grid_thw, return_dict=True).pooler_output, dim=0)

    def position_ids(input_ids, mm_token_type_ids, grid_thw, attention_mask):
        return inner.get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=grid_thw,
                                    attention_mask=attention_mask)[0]

    return VisionLanguageParts(
        text_model=inner.language_model, patch_embedding=inner.visual.patch_embed,
        image_token_id=config.image_token_id, image_features=image_features, position_ids=position_ids,
        image_maps=lambda values, grid, level: image_maps(values, grid, level, config),
        tokens_per_image=lambda grid: [int(t) * int(h) * int(w) // (m * m) for t, h, w in grid.tolist()],
        patch_dim=c * tp * p * p)


def text_max_length(config) -> int | None:
    return getattr(config.text_config, "max_position_embeddings", None)


ADAPTER = Adapter(
    family="Qwen2-VL",
    model_types=("qwen2_vl",),
    replacements={"Qwen2VLRMSNorm": rms_norm(), "Qwen2MLP": gated_mlp, "LayerNorm": layer_norm,
                  "VisionMlp": plain_mlp_named("fc1", "act", "fc2"), "GELU": LRPActivation.from_hf},
    kind="vision_language",
    layers_attrs=("language_model.layers",),
    max_length=text_max_length,
    vision_language_of=vision_language,
)
