"""Gemma 3 (text) adapter: as Gemma 2, plus per-head query/key `(1 + w)` RMSNorms."""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Gemma3",
    model_types=("gemma3_text",),
    replacements={"Gemma3RMSNorm": rms_norm(offset=1.0), "Gemma3MLP": gated_mlp},
    final_logit_softcap_attr="final_logit_softcapping",
)
