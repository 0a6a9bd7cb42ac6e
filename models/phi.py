"""Phi (1, 1.5, 2) adapter.

Parallel residual with one shared LayerNorm: x + attn(ln(x)) + mlp(ln(x)), a three-term sum whose
epsilon rule is its exact gradient (nothing replaced for it); the shared norm's output takes the
sum of both branches' relevance. LayerNorm with bias (std held constant, centring linear), also for
the optional per-head q / k norms (`qk_layernorm`). `PhiMLP` is a plain GELU-tanh MLP
`fc2(activation_fn(fc1(x)))` mapped onto LRPMLP (identity rule on the activation, epsilon on the
biased projections). Attention (biased q/k/v/dense projections, GQA, rotary on the first
`partial_rotary_factor * head_dim` dims of each head: linear in q and k, exact gradient) calls
transformers' attention interface and runs in the kernel. Final norm `final_layernorm`, biased
`lm_head`.
"""

from lrp_triton.models.base import Adapter, layer_norm, plain_mlp_named


ADAPTER = Adapter(
    family="Phi",
    model_types=("phi",),
    replacements={"LayerNorm": layer_norm, "PhiMLP": plain_mlp_named("fc1", "activation_fn", "fc2")},
)
