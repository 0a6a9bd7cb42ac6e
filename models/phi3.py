"""Phi-3 adapter: fused qkv projection (linear, exact gradient) and fused gate_up projection whose
halves feed the gated SiLU product (identity + uniform rules); RMSNorm identity rule."""

from lrp_triton.models.base import Adapter, fused_gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Phi3",
    model_types=("phi3",),
    replacements={"Phi3RMSNorm": rms_norm(), "Phi3MLP": fused_gated_mlp},
)
