"""Starcoder2 adapter: LayerNorm with bias (std held constant, centring linear), plain GELU-tanh MLP
`c_proj(act(c_fc(x)))` with nn.Linear projections and biases (identity rule on the activation;
its residual dropout is off at attribution time), sliding-window attention in the kernel, biased
q/k/v/o projections (epsilon rule: the biases absorb their share)."""

from lrp_triton.models.base import Adapter, layer_norm, plain_mlp

ADAPTER = Adapter(
    family="Starcoder2",
    model_types=("starcoder2",),
    replacements={"LayerNorm": layer_norm, "Starcoder2MLP": plain_mlp},
)
