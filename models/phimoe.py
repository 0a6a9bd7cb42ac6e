"""PhiMoE adapter: LayerNorms with bias (std held constant), Llama-like attention, every layer sparse.

The router (sparsemixer) is left untouched. At inference (eval mode) it picks the best expert and
weighs it by a softmax over the experts whose logit lies within 2 * router_jitter_noise (relative)
of the best, taken at the best; then the same without the first expert for the second. Each weight
is a softmax over a subset of the logits that the forward fixes without gradient, so its exact
gradient is the softmax rule on that subset (the excluded logits take no relevance); there is no
renormalisation. Each routing weight x expert output takes the uniform rule, the experts the
identity + uniform rules. In training mode sparsemixer samples experts and substitutes its own
gradient estimator; attribution runs in eval mode, where neither is used."""

from lrp_triton.models.base import Adapter, layer_norm, moe_experts

ADAPTER = Adapter(
    family="PhiMoE",
    model_types=("phimoe",),
    replacements={"LayerNorm": layer_norm, "PhimoeExperts": moe_experts},
)
