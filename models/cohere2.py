"""Cohere 2 (Command R7B / A) adapter: Cohere's parallel block, bias-free LayerNorm and
`logit_scale` (see models/cohere.py), with sliding-window layers that take interleaved rotary and
global layers that take none (`config.layer_types`; the window comes from the attention module's
own `sliding_window` into the kernel, unrotated queries and keys need nothing replaced)."""

from lrp_triton.models.base import Adapter, gated_mlp
from lrp_triton.models.cohere import output_scale
from lrp_triton.modules import LRPLayerNorm

ADAPTER = Adapter(
    family="Cohere2",
    model_types=("cohere2",),
    replacements={"Cohere2LayerNorm": LRPLayerNorm.bias_free, "Cohere2MLP": gated_mlp},
    output_scale=output_scale,
)
