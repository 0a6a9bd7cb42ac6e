"""BART adapter (encoder-decoder) and `bart_like` for its copies (mBART).

Layers: attention (BartAttention calls transformers' attention interface: non-causal encoder,
causal decoder self-attention, cross-attention over the encoder's padding mask), nn.LayerNorm
(std held constant; BART post-norm, mBART pre-norm with a final LayerNorm per stack), and the MLP
inside each layer, fc2(act(fc1(x))): fc1 / fc2 are linear (exact gradient), the layer's own
`activation_fn` module is replaced (LRPActivation: identity rule), so no MLP class exists to
replace. Embeddings: the shared word embedding (scaled by sqrt(d_model) inside its module when
`scale_embedding`; the explained leaves, one per stack) plus learned positions (epsilon rule on
the sum: exact gradient; their share is not reported), then `layernorm_embedding`. Output: lm_head
plus the constant `final_logits_bias` (absorbs its share).
"""

from lrp_triton.models.base import Adapter, layer_norm
from lrp_triton.modules.encoder import LRPActivation

# the curved activations a BART-style layer may hold as `activation_fn` (ReLU needs no rule: its gradient)
ACTIVATIONS = {name: LRPActivation.from_hf for name in ("GELUActivation", "NewGELUActivation", "GELUTanh",
                                                         "PytorchGELUTanh", "SiLUActivation", "SiLU", "GELU")}


def bart_like(family: str, model_types: tuple[str, ...]) -> Adapter:
    return Adapter(
        family=family,
        model_types=model_types,
        kind="seq2seq",
        replacements={"LayerNorm": layer_norm, **ACTIVATIONS},
        layers_attrs=("encoder.layers", "decoder.layers"),
        output_bias_attr="final_logits_bias",
    )


ADAPTER = bart_like("BART", ("bart",))
