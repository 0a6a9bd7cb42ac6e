"""Qwen2 adapter: as Llama with q/k/v biases (epsilon rule: the bias absorbs its share) and
optional sliding-window layers."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Qwen2",
    model_types=("qwen2",),
    replacements={"Qwen2RMSNorm": rms_norm(), "Qwen2MLP": gated_mlp},
)
