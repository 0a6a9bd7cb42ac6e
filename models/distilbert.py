"""DistilBERT adapter: BERT's post-norm layers under their own names (nn.LayerNorm: std held
constant), the feed-forward `FFN` lin2(act(lin1(x))) (identity rule on its GELU), word and
position embeddings (no token types) summed before the embedding LayerNorm (epsilon rule: exact
gradient), non-causal attention with padding masks.

Heads: sequence classification pre_classifier -> ReLU -> classifier (ReLU's gradient is its
identity rule: nothing to replace) and masked LM vocab_transform -> the model's own `activation`
(GELU: identity rule, LRPActivation) -> vocab_layer_norm -> vocab_projector. The FFN's class name
ends in none of the usual layer names: the completeness check finds it by the activation it holds.
"""

from lrp_triton.models.base import Adapter, layer_norm, plain_mlp_named
from lrp_triton.models.bert import text_embeddings
from lrp_triton.modules.encoder import LRPActivation

ADAPTER = Adapter(
    family="DistilBERT",
    model_types=("distilbert",),
    replacements={
        "LayerNorm": layer_norm,
        "FFN": plain_mlp_named("lin1", "activation", "lin2", "dropout"),
        "GELUActivation": LRPActivation.from_hf,  # DistilBertForMaskedLM.activation
    },
    kind="encoder",
    layers_attrs=("transformer.layer",),
    embeddings_of=text_embeddings,
)
