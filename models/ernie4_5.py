"""ERNIE 4.5 (dense) adapter: Llama's layout (pre-norm RMSNorms: identity rule; gated SiLU MLP:
identity + uniform rules; optional biases on every projection, `use_bias`: epsilon rule) with
interleaved rotary (pairs (2m, 2m + 1) take frequency m: linear in q and k, exact gradient)."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="ERNIE4.5",
    model_types=("ernie4_5",),
    replacements={"Ernie4_5RMSNorm": rms_norm(), "Ernie4_5MLP": gated_mlp},
)
