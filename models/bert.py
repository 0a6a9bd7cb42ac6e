"""BERT adapter (BertModel and its task heads): LayerNorm (std held constant), GELU intermediate
and tanh pooler (identity rule), non-causal attention with padding masks. Word, position and
token-type embeddings are summed (epsilon rule: exact gradient) before the embedding LayerNorm;
the encoder driver reports the three shares separately."""

from lrp_triton.models.base import Adapter, TextEmbeddings, layer_norm
from lrp_triton.modules.encoder import LRPDenseActivation, LRPHeadTransform, LRPPooler


def text_embeddings(model) -> TextEmbeddings:
    """BERT-style embeddings: word, absolute position and token-type tables (RoBERTa keeps the layout)."""
    emb = Adapter.base_model(model).embeddings
    return TextEmbeddings(word=emb.word_embeddings, position=emb.position_embeddings,
                          token_type=getattr(emb, "token_type_embeddings", None))


ADAPTER = Adapter(
    family="BERT",
    model_types=("bert",),
    replacements={
        "LayerNorm": layer_norm,
        "BertIntermediate": LRPDenseActivation.from_hf,
        "BertPooler": LRPPooler.from_hf,
        "BertPredictionHeadTransform": LRPHeadTransform.from_hf,
    },
    kind="encoder",
    layers_attrs=("encoder.layer",),
    embeddings_of=text_embeddings,
)
