"""Gemma (1) adapter: as Gemma 2 without soft-caps or extra norms.

`(1 + w)` RMSNorms (identity rule, offset 1), gated GELU-tanh MLP (identity + uniform rules),
embedding scaling by sqrt(hidden) inside `GemmaTextScaledWordEmbedding` (linear, exact gradient;
the explained input is the scaled embedding, as for Gemma 2 / 3).
"""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Gemma",
    model_types=("gemma",),
    replacements={"GemmaRMSNorm": rms_norm(offset=1.0), "GemmaMLP": gated_mlp},
)
