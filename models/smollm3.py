"""SmolLM3 adapter: as Llama, with no-RoPE layers (`config.no_rope_layers[i] == 0`: queries and
keys enter attention unrotated; nothing to replace) and optional sliding-window layers (applied by
the kernel from the attention module's own `sliding_window`)."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="SmolLM3",
    model_types=("smollm3",),
    replacements={"SmolLM3RMSNorm": rms_norm(), "SmolLM3MLP": gated_mlp},
)
