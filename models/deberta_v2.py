"""DeBERTa-v2 / v3 adapter (model type "deberta-v2").

Post-norm layers with nn.LayerNorm (std held constant), GELU intermediate (identity rule) and
disentangled attention (LRPDisentangledSelfAttention: content-to-content plus the relative-position
terms c2p / p2c, log-bucketed relative positions, share_att_key; softmax rule, epsilon on the sum of
the score terms, uniform on each bilinear term and on P V), swapped in every mode. Embeddings: word
(+ absolute positions where position_biased_input, v3 has none; + token types where
type_vocab_size > 0; epsilon rule on the sum), the linear embed_proj where embedding_size differs,
the embedding LayerNorm, then the padding mask multiplied in (linear). The relative-embedding
table (and its LayerNorm, norm_rel_ebd "layer_norm") is a parameter: the share of relevance its
score terms take is absorbed. Heads: sequence classification through ContextPooler
(act(dense(h[:, 0])), identity rule) and a linear classifier; masked LM through
DebertaV2LMPredictionHead (LayerNorm(act(dense(h))) times the word embeddings) or, for
`legacy=True` configs, the BERT-style transform + decoder. DeBERTa-v2-xlarge's ConvLayer
(conv_kernel_size > 0) is not supported (an error names it).
"""

from lrp_triton.models.base import Adapter, TextEmbeddings, layer_norm
from lrp_triton.modules.deberta import LRPContextPooler, LRPDebertaLMHead, LRPDisentangledSelfAttention
from lrp_triton.modules.encoder import LRPDenseActivation, LRPHeadTransform


def deberta_embeddings(model) -> TextEmbeddings:
    """Word, absolute position (None without position_biased_input) and token-type (None without
    token types) tables."""
    emb = Adapter.base_model(model).embeddings
    return TextEmbeddings(word=emb.word_embeddings, position=emb.position_embeddings,
                          token_type=emb.token_type_embeddings)


def unsupported_conv_layer(module, options):
    raise NotImplementedError("DeBERTa-v2 adapter: the ConvLayer of conv_kernel_size > 0 (deberta-v2-xlarge) has no "
                              "LRP replacement (its tanh would run its plain gradient); use a config without it")


ADAPTER = Adapter(
    family="DeBERTa-v2",
    model_types=("deberta-v2",),
    replacements={
        "LayerNorm": layer_norm,
        "DebertaV2Intermediate": LRPDenseActivation.from_hf,
        "ContextPooler": LRPContextPooler.from_hf,
        "DebertaV2LMPredictionHead": LRPDebertaLMHead.from_hf,
        "LegacyDebertaV2PredictionHeadTransform": LRPHeadTransform.from_hf,
        "ConvLayer": unsupported_conv_layer,
    },
    attention_replacements={"DisentangledSelfAttention": LRPDisentangledSelfAttention.from_hf},
    kind="encoder",
    layers_attrs=("encoder.layer",),
    embeddings_of=deberta_embeddings,
    read_without_forward=("encoder.rel_embeddings",),  # get_rel_embedding reads its weight
)
