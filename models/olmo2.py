"""OLMo 2 adapter: post-norm layers (RMSNorm after attention and after the MLP, none before) and
query/key RMSNorms over the whole q / k projection (before the split into heads); every RMSNorm
takes the identity rule. Gated SiLU MLP: identity + uniform rules. RoPE and attention as Llama."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="OLMo2",
    model_types=("olmo2",),
    replacements={"Olmo2RMSNorm": rms_norm(), "Olmo2MLP": gated_mlp},
)
