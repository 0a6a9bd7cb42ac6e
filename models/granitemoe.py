"""GraniteMoE adapter: Granite's four constant factors (embedding_multiplier, residual_multiplier,
attention_multiplier as the softmax scale, 1 / logits_scaling before the head: see models/granite.py;
none is skipped) around Mixtral-like layers: RMSNorms (identity rule) and a sparse block
(`block_sparse_moe`) whose router (top-k of the logits, softmax over the selected ones) is left
untouched (softmax rule on the selected logits, the others take nothing; no renormalisation) and
whose experts (Mixtral's layout) become LRPMoEExperts (uniform rule on each routing weight x expert
output, identity + uniform rules inside the gated experts)."""

from lrp_triton.models.base import Adapter, moe_experts, rms_norm
from lrp_triton.models.granite import output_scale

ADAPTER = Adapter(
    family="GraniteMoE",
    model_types=("granitemoe",),
    replacements={"GraniteMoeRMSNorm": rms_norm(), "GraniteMoeExperts": moe_experts},
    output_scale=output_scale,
)
