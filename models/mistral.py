"""Mistral adapter: as Llama, plus the sliding window, which the attention kernel applies."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Mistral",
    model_types=("mistral",),
    replacements={"MistralRMSNorm": rms_norm(), "MistralMLP": gated_mlp},
)
