"""Qwen3-MoE adapter: as Mixtral (softmax router untouched: softmax rule, the top-k renormalisation
when norm_topk_prob is set as its exact gradient; uniform rule on each routing weight x expert output;
identity + uniform rules inside the experts), plus per-head query/key RMSNorms (identity rule) and
dense layers (mlp_only_layers, decoder_sparse_step) with a gated MLP."""

from lrp_triton.models.base import Adapter, gated_mlp, moe_experts, rms_norm

ADAPTER = Adapter(
    family="Qwen3-MoE",
    model_types=("qwen3_moe",),
    replacements={"Qwen3MoeRMSNorm": rms_norm(), "Qwen3MoeMLP": gated_mlp, "Qwen3MoeExperts": moe_experts},
)
