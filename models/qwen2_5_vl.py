"""Qwen2.5-VL adapter: as Qwen2-VL (see `lrp_triton.models.qwen2_vl`), with RMSNorms (identity rule) and a
SiLU gated MLP (identity + uniform rules) in the vision blocks, windowed attention in the blocks outside
`fullatt_block_indexes` (one attention call per window, as transformers makes them), and an RMSNorm in
the patch merger."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm
from lrp_triton.models.qwen2_vl import text_max_length, vision_language
from lrp_triton.modules.encoder import LRPActivation

ADAPTER = Adapter(
    family="Qwen2.5-VL",
    model_types=("qwen2_5_vl",),
    replacements={"Qwen2_5_VLRMSNorm": rms_norm(), "Qwen2_5_VLMLP": gated_mlp, "Qwen2MLP": gated_mlp,
                  "GELU": LRPActivation.from_hf},
    kind="vision_language",
    layers_attrs=("language_model.layers",),
    max_length=text_max_length,
    vision_language_of=vision_language,
)
