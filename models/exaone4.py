"""EXAONE 4 adapter: post-norm layers (RMSNorm after attention and after the MLP, none before, as
OLMo 2), per-head q / k RMSNorms (as Qwen3); every RMSNorm takes the identity rule. Hybrid
attention (`config.layer_types`): sliding-window layers take RoPE and their window, global layers
neither (with no `sliding_window` configured every layer is global with RoPE); the window reaches
the kernel from the module, unrotated q / k need nothing replaced. Gated SiLU MLP: identity +
uniform rules."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="EXAONE4",
    model_types=("exaone4",),
    replacements={"Exaone4RMSNorm": rms_norm(), "Exaone4MLP": gated_mlp},
)
