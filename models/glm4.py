"""GLM-4 adapter: "sandwich" layers (RMSNorm before and after attention, before and after the MLP;
identity rule on each), fused gate_up projection whose halves feed the gated SiLU product (identity
+ uniform rules, as Phi-3), biased q/k/v projections (epsilon rule), and partial interleaved RoPE
(pairs (2m, 2m + 1) rotated on the first half of each head: linear in q and k, exact gradient)."""

from lrp_triton.models.base import Adapter, fused_gated_mlp, rms_norm

ADAPTER = Adapter(
    family="GLM4",
    model_types=("glm4",),
    replacements={"Glm4RMSNorm": rms_norm(), "Glm4MLP": fused_gated_mlp},
)
