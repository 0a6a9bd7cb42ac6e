"""DeepSeek-V2 adapter: multi-head latent attention as DeepSeek-V3's (see deepseek_v3.py; RoPE on
interleaved pairs through complex multiplication: linear, the epsilon rule) and a softmax-routed MoE
with shared experts. The router (softmax over the experts, top-k "greedy" or "group_limited_greedy"
within the topk_group groups of the largest best score, times routed_scaling_factor, never
renormalised) is left untouched: softmax rule and the constant scale as exact gradients, the group
choice and the top-k only select. Each routing weight x expert output takes the uniform rule
(LRPMoEExperts); the shared experts and the first first_k_dense_replace dense layers are gated MLPs
(identity + uniform rules)."""

from lrp_triton.models.base import Adapter, gated_mlp, moe_experts, rms_norm

ADAPTER = Adapter(
    family="DeepSeek-V2",
    model_types=("deepseek_v2",),
    replacements={"DeepseekV2RMSNorm": rms_norm(), "DeepseekV2MLP": gated_mlp, "DeepseekV2Experts": moe_experts},
)
