"""Qwen2-MoE adapter: Llama-like attention (biased q / k / v) and RMSNorms (identity rule); dense
layers (mlp_only_layers, decoder_sparse_step) keep a gated MLP (identity + uniform rules). The sparse
block is replaced by LRPSharedExpertMoE: the softmax router is left untouched (softmax rule; the
top-k renormalisation, when norm_topk_prob is set, as its exact gradient = epsilon rule), each routing
weight x expert output takes the uniform rule, and the shared expert's gate sigmoid(g(x)) * S(x) is a
gate product (the sigmoid split as 1/2 + tanh(x / 2) / 2: the constant absorbs its share, identity rule
on the tanh; uniform rule on the product; CP-LRP: a constant gate)."""

from lrp_triton.models.base import Adapter, gated_mlp, moe_experts, rms_norm, shared_expert_moe

ADAPTER = Adapter(
    family="Qwen2-MoE",
    model_types=("qwen2_moe",),
    replacements={"Qwen2MoeRMSNorm": rms_norm(), "Qwen2MoeMLP": gated_mlp, "Qwen2MoeExperts": moe_experts,
                  "Qwen2MoeSparseMoeBlock": shared_expert_moe},
)
