"""OLMoE adapter: query/key RMSNorms over the whole q / k projection (identity rule), then the optional
clip_qkv clamp (linear where it does not clip: the exact gradient passes there, nothing where it
clips); every layer sparse, as Mixtral: softmax router untouched (softmax rule; the top-k
renormalisation when norm_topk_prob is set, as its exact gradient), uniform rule on each routing
weight x expert output, identity + uniform rules inside the experts."""

from lrp_triton.models.base import Adapter, moe_experts, rms_norm

ADAPTER = Adapter(
    family="OLMoE",
    model_types=("olmoe",),
    replacements={"OlmoeRMSNorm": rms_norm(), "OlmoeExperts": moe_experts},
)
