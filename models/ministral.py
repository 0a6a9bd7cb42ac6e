"""Ministral adapter: as Mistral, with per-layer attention types (`config.layer_types`: a sliding
window on "sliding_attention" layers only, applied by the kernel from each attention module's own
`sliding_window`)."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Ministral",
    model_types=("ministral",),
    replacements={"MinistralRMSNorm": rms_norm(), "MinistralMLP": gated_mlp},
)
