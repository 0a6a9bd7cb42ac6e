"""Qwen3 adapter: as Llama plus per-head query/key RMSNorms, which take the identity rule too."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Qwen3",
    model_types=("qwen3",),
    replacements={"Qwen3RMSNorm": rms_norm(), "Qwen3MLP": gated_mlp},
)
