"""GraniteMoE-Shared adapter: GraniteMoE (models/granitemoe.py: Granite's constant factors, untouched
top-k softmax router, LRPMoEExperts) plus an always-on shared expert added to the routed sum: a fused
gated MLP (`input_linear` -> (gate, up) halves, `output_linear`) with the identity + uniform rules; the
sum of the two parts is linear (epsilon rule: the exact gradient)."""

from lrp_triton.models.base import Adapter, fused_gated_mlp_named, moe_experts, rms_norm
from lrp_triton.models.granite import output_scale

ADAPTER = Adapter(
    family="GraniteMoE-Shared",
    model_types=("granitemoeshared",),
    replacements={"GraniteMoeSharedRMSNorm": rms_norm(), "GraniteMoeSharedExperts": moe_experts,
                  "GraniteMoeSharedMLP": fused_gated_mlp_named("input_linear", "activation", "output_linear")},
    output_scale=output_scale,
)
