"""DeBERTa (v1) adapter (model type "deberta"): deberta-v2's layout and rules (models/deberta_v2.py)
with v1's own classes: DebertaLayerNorm (a LayerNorm whose epsilon is `variance_epsilon`; std held
constant), the fused in_proj attention with q_bias / v_bias and unbucketed relative positions
(LRPDebertaSelfAttention, swapped in every mode), GELU intermediate, ContextPooler and the
masked-LM heads (DebertaLMPredictionHead, or the legacy BERT-style transform + decoder)."""

from lrp_triton.models.base import Adapter, layer_norm
from lrp_triton.models.deberta_v2 import deberta_embeddings
from lrp_triton.modules.deberta import LRPContextPooler, LRPDebertaLMHead
from lrp_triton.modules.deberta_v1 import LRPDebertaSelfAttention
from lrp_triton.modules.encoder import LRPDenseActivation, LRPHeadTransform
from lrp_triton.modules.norms import LRPLayerNorm


def deberta_layer_norm(module, options):
    """DebertaLayerNorm: weight, bias and `variance_epsilon` (inside the square root, as nn.LayerNorm)."""
    return LRPLayerNorm(module.weight, module.bias, float(module.variance_epsilon), backend=options.backend)


ADAPTER = Adapter(
    family="DeBERTa",
    model_types=("deberta",),
    replacements={
        "LayerNorm": layer_norm,  # the masked-LM heads' nn.LayerNorm
        "DebertaLayerNorm": deberta_layer_norm,
        "DebertaIntermediate": LRPDenseActivation.from_hf,
        "ContextPooler": LRPContextPooler.from_hf,
        "DebertaLMPredictionHead": LRPDebertaLMHead.from_hf,
        "LegacyDebertaPredictionHeadTransform": LRPHeadTransform.from_hf,
    },
    attention_replacements={"DisentangledSelfAttention": LRPDebertaSelfAttention.from_hf},
    kind="encoder",
    layers_attrs=("encoder.layer",),
    embeddings_of=deberta_embeddings,
    read_without_forward=("encoder.rel_embeddings",),  # get_rel_embedding reads its weight
)
