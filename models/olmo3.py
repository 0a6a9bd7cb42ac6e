"""OLMo 3 adapter: OLMo 2's post-norm layers and q / k RMSNorms over the whole projections (identity
rule on every RMSNorm), with sliding-window layers (`config.layer_types`; the window reaches the
kernel from the attention module) and a rotary table per layer type. Gated SiLU MLP: identity +
uniform rules."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="OLMo3",
    model_types=("olmo3",),
    replacements={"Olmo3RMSNorm": rms_norm(), "Olmo3MLP": gated_mlp},
)
