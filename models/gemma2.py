"""Gemma 2 adapter.

`(1 + w)` RMSNorms (identity rule, offset 1), gated GELU-tanh MLP (identity + uniform rules),
embedding scaling by sqrt(hidden) (linear, exact gradient), alternating sliding-window / global
layers and attention logit soft-capping in the kernel (identity rule), final-logit soft-capping
with the identity rule in `attribute`.
"""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Gemma2",
    model_types=("gemma2",),
    replacements={"Gemma2RMSNorm": rms_norm(offset=1.0), "Gemma2MLP": gated_mlp},
    final_logit_softcap_attr="final_logit_softcapping",
)
