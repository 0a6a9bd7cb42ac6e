"""DeepSeek-V3 adapter: multi-head latent attention (MLA) and a sigmoid-routed MoE with shared experts.

Attention: the query from q_proj, or low-rank q_a_proj -> q_a_layernorm -> q_b_proj; keys and values
from one latent, kv_a_proj_with_mqa -> (kv_a_layernorm -> kv_b_proj: the no-rope key part and the
values) + a rope key part shared by every head. Linear maps and RoPE take the epsilon rule (the exact
gradient), the two RMSNorms the identity rule (LRPRMSNorm), and the attention itself runs in
lrp_triton's kernel with a value head dim (v_head_dim) different from the query/key head dim
(qk_nope_head_dim + qk_rope_head_dim) under the unchanged AttnLRP rule; the softmax scale is the
module's own (qk_head_dim ** -0.5, times yarn's mscale(factor, mscale_all_dim) ** 2 when set).
MoE: the first first_k_dense_replace layers dense (gated MLP: identity + uniform rules), the rest
y = sum_k w_k E_k(x) + shared_experts(x) (epsilon rule on the sum). The router is LRPSigmoidTopkRouter
(as GLM4-MoE's: sigmoid by its split rule 1/2 + tanh(x / 2) / 2, norm_topk_prob's renormalisation and
routed_scaling_factor as exact gradients; the bias-corrected grouped top-k (e_score_correction_bias,
n_group, topk_group) only selects), uniform rule on each routing weight x expert output (LRPMoEExperts)."""

from lrp_triton.models.base import Adapter, gated_mlp, moe_experts, rms_norm, sigmoid_topk_router

ADAPTER = Adapter(
    family="DeepSeek-V3",
    model_types=("deepseek_v3",),
    replacements={"DeepseekV3RMSNorm": rms_norm(), "DeepseekV3MLP": gated_mlp, "DeepseekV3Experts": moe_experts,
                  "DeepseekV3TopkRouter": sigmoid_topk_router},
)
