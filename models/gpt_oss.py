"""gpt-oss adapter: RMSNorms (identity rule), attention with biased q / k / v / o projections, RoPE (its
half-width table), a sink logit per head (`sinks`, handed to the kernel by the attention interface: the
sink takes its share of the softmax rule's relevance and passes it to no token), and layers that
alternate a sliding window and full attention (`layer_types`; each attention layer passes its own
window). Every layer is sparse: the block (GptOssMLP) becomes LRPGptOssMLP, whose router (top-k of a
biased linear, softmax over the selected logits) is left untouched (softmax rule on the selected
logits, epsilon rule on the router) and whose experts take the clamped SwiGLU's rules (identity ratio
on the clamped activation, uniform rule on the gate product, exact gradient through up's clamp and
the + 1) and the uniform rule on each routing weight x expert output
(lrp_triton/modules/gpt_oss_experts.py)."""

from lrp_triton.models.base import Adapter, gpt_oss_moe, rms_norm

ADAPTER = Adapter(
    family="gpt-oss",
    model_types=("gpt_oss",),
    replacements={"GptOssRMSNorm": rms_norm(), "GptOssMLP": gpt_oss_moe},
)
