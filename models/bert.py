"""BERT family adapter (BertModel and its task heads; RoBERTa): LayerNorm (std held constant),
GELU intermediate and tanh pooler / classification head (identity rule), non-causal attention with
padding masks. Word, position and token-type embeddings are summed (epsilon rule: exact gradient)
before the embedding LayerNorm; `attribute_encoder` reports the three shares separately."""

from lrp_triton.models.base import Adapter, layer_norm
from lrp_triton.modules.encoder import (LRPDenseActivation, LRPHeadTransform, LRPPooler,
                                        LRPRobertaClassificationHead, LRPRobertaLMHead)


def _max_length(config) -> int:
    """RoBERTa numbers positions from pad_token_id + 1: max_position_embeddings - pad_token_id - 1 fit."""
    if config.model_type == "roberta":
        return config.max_position_embeddings - config.pad_token_id - 1
    return config.max_position_embeddings


def _factory(cls):
    return lambda m, mode, backend: cls.from_hf(m, mode=mode, backend=backend)


ADAPTER = Adapter(
    family="BERT",
    model_types=("bert", "roberta"),
    replacements={
        "LayerNorm": layer_norm(),
        "BertIntermediate": _factory(LRPDenseActivation),
        "BertPooler": _factory(LRPPooler),
        "BertPredictionHeadTransform": _factory(LRPHeadTransform),
        "RobertaIntermediate": _factory(LRPDenseActivation),
        "RobertaPooler": _factory(LRPPooler),
        "RobertaLMHead": _factory(LRPRobertaLMHead),
        "RobertaClassificationHead": _factory(LRPRobertaClassificationHead),
    },
    kind="encoder",
    layers_attr="encoder.layer",
    max_length=_max_length,
)
