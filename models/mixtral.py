"""Mixtral adapter: Llama-like attention and norms; the sparse MoE block keeps its router (softmax
rule and top-k renormalisation as exact gradients) and its experts are replaced by LRPMoEExperts
(uniform rule on each routing weight x expert output, identity + uniform rules inside experts)."""

from lrp_triton.models.base import Adapter, moe_experts, rms_norm

ADAPTER = Adapter(
    family="Mixtral",
    model_types=("mixtral",),
    replacements={"MixtralRMSNorm": rms_norm(), "MixtralExperts": moe_experts},
)
