"""ELECTRA adapter: BERT's layers and rules under the Electra class prefix, BERT's embeddings
(word, position, token type; epsilon rule on their sum) at `embedding_size`, then the linear
`embeddings_project` up to the hidden size when the two differ (exact gradient).

Heads: sequence classification out_proj(GELU(dense(h[:, 0]))) (ELECTRA's classification head uses
GELU where RoBERTa's uses tanh; identity rule), the discriminator (ElectraForPreTraining) one logit
per token, dense_prediction(act(dense(h))) (identity rule; `attribute(..., position=k)` explains
token k's "replaced" logit), and the generator's masked-LM head LayerNorm(GELU(dense(h))) ->
generator_lm_head (identity rule, LayerNorm std held constant).
"""

from lrp_triton.models.base import Adapter, layer_norm
from lrp_triton.models.bert import text_embeddings
from lrp_triton.modules.encoder import LRPClassificationHead, LRPDenseActivation, LRPDiscriminatorHead, LRPHeadTransform

ADAPTER = Adapter(
    family="ELECTRA",
    model_types=("electra",),
    replacements={
        "LayerNorm": layer_norm,
        "ElectraIntermediate": LRPDenseActivation.from_hf,
        "ElectraClassificationHead": LRPClassificationHead.from_hf,
        "ElectraDiscriminatorPredictions": LRPDiscriminatorHead.from_hf,
        "ElectraGeneratorPredictions": LRPHeadTransform.from_hf,
    },
    kind="encoder",
    layers_attrs=("encoder.layer",),
    embeddings_of=text_embeddings,
    token_logit_heads=("ElectraForPreTraining",),
)
