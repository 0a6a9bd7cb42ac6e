"""GPT-NeoX / Pythia adapter.

Parallel residual (`use_parallel_residual`, Pythia's default): x + attn(ln1(x)) + mlp(ln2(x)), a
three-term sum whose epsilon rule is its exact gradient, so nothing is replaced for it (the
sequential form, x2 = x + attn(ln1(x)); x2 + mlp(ln2(x2)), likewise). LayerNorm with bias (std held
constant, centring linear). `GPTNeoXMLP` is a plain GELU MLP `dense_4h_to_h(act(dense_h_to_4h(x)))`
mapped onto LRPMLP (identity rule on the activation, epsilon on the biased projections). Attention
(fused per-head qkv, partial rotary on the first `rotary_pct * head_size` dims: linear in q and k,
exact gradient) calls transformers' attention interface and runs in the kernel.
"""

from lrp_triton.models.base import Adapter, layer_norm, plain_mlp_named


ADAPTER = Adapter(
    family="GPT-NeoX",
    model_types=("gpt_neox",),
    replacements={"LayerNorm": layer_norm, "GPTNeoXMLP": plain_mlp_named("dense_h_to_4h", "act", "dense_4h_to_h")},
)
