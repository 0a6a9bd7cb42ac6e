"""Cohere (Command-R) adapter.

Parallel block with one shared norm: x + attn(ln(x)) + mlp(ln(x)), a three-term sum whose epsilon
rule is its exact gradient (nothing replaced for it; the norm's output takes both branches'
relevance). `CohereLayerNorm` is a bias-free LayerNorm (mean subtracted, weight only, epsilon
`variance_epsilon`): std held constant, centring linear; the same rule for the optional per-head
q / k norms (`use_qk_norm`, weight [H, D] over each head's D dims). Interleaved rotary (pairs
(2m, 2m + 1)): linear in q and k, exact gradient. Gated SiLU MLP: identity + uniform rules.
`logit_scale` multiplies the logits (`output_scale`: linear, the explained logit is the model's own).
"""

from lrp_triton.models.base import Adapter, gated_mlp
from lrp_triton.modules import LRPLayerNorm


def output_scale(config) -> float:
    return config.logit_scale


ADAPTER = Adapter(
    family="Cohere",
    model_types=("cohere",),
    replacements={"CohereLayerNorm": LRPLayerNorm.bias_free, "CohereMLP": gated_mlp},
    output_scale=output_scale,
)
