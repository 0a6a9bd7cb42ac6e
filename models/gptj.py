"""GPT-J adapter.

Parallel residual with one shared LayerNorm: x + attn(ln_1(x)) + mlp(ln_1(x)), a three-term sum
whose epsilon rule is its exact gradient (nothing replaced for it); the shared norm's output takes
the sum of both branches' relevance. LayerNorm with bias (std held constant, centring linear).
`GPTJMLP` is a plain GELU-tanh MLP `fc_out(act(fc_in(x)))` mapped onto LRPMLP (identity rule on the
activation, epsilon on the biased projections; its dropout is off at attribution time). Attention
(bias-free q/k/v/out projections, rotary on the first `rotary_dim` dims of each head in interleaved
pairs: linear in q and k, exact gradient) calls transformers' attention interface and runs in the
kernel. Layer stack `h`, final norm `ln_f`, biased `lm_head`.
"""

from lrp_triton.models.base import Adapter, layer_norm, plain_mlp_named


ADAPTER = Adapter(
    family="GPT-J",
    model_types=("gptj",),
    replacements={"LayerNorm": layer_norm, "GPTJMLP": plain_mlp_named("fc_in", "act", "fc_out", "dropout")},
    layers_attrs=("h",),
)
