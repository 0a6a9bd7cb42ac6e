"""Granite adapter: Llama's layers (RMSNorm: identity rule; gated SiLU MLP: identity + uniform
rules) with four constant factors, none of which may be skipped:

- `embedding_multiplier` scales the input embeddings inside `GraniteModel.forward` (the driver
  hands it the unscaled embeddings, which stay the explained input; a constant factor is linear:
  R_x = R_{m x}, the exact gradient);
- `residual_multiplier` scales each branch before its residual sum, x + m * f(x) (inside the
  layer's forward: the epsilon rule over the sum's terms is its exact gradient);
- `attention_multiplier` is the softmax scale (`GraniteAttention.scaling`, passed to the kernel);
- `logits_scaling` divides the logits, which the driver's head call does not see: `output_scale`
  multiplies the final hidden state by 1 / logits_scaling before the bias-free head (linear, so
  the explained logit is the model's own).
"""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm


def output_scale(config) -> float:
    return 1.0 / config.logits_scaling


ADAPTER = Adapter(
    family="Granite",
    model_types=("granite",),
    replacements={"GraniteRMSNorm": rms_norm(), "GraniteMLP": gated_mlp},
    output_scale=output_scale,
)
