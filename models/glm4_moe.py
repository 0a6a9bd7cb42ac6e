"""GLM4-MoE adapter: Llama-like attention with partial rotary (half rotation, as Llama) and optional
per-head query/key RMSNorms (identity rule); the first first_k_dense_replace layers dense (gated MLP:
identity + uniform rules), the rest sparse with always-on shared experts (a gated MLP summed with the
routed part: epsilon rule = exact gradient). The sigmoid router is replaced by LRPSigmoidTopkRouter:
the sigmoid split as 1/2 + tanh(x / 2) / 2 (the constant absorbs its share, identity rule on the
tanh: see lrp_triton.modules.moe_gates), the renormalisation and routed_scaling_factor as exact gradients
(epsilon rule), the bias-corrected grouped top-k only selects; uniform rule on each routing weight x
expert output (LRPMoEExperts)."""

from lrp_triton.models.base import Adapter, gated_mlp, moe_experts, rms_norm, sigmoid_topk_router

ADAPTER = Adapter(
    family="GLM4-MoE",
    model_types=("glm4_moe",),
    replacements={"Glm4MoeRMSNorm": rms_norm(), "Glm4MoeMLP": gated_mlp, "Glm4MoeExperts": moe_experts,
                  "Glm4MoeTopkRouter": sigmoid_topk_router},
)
