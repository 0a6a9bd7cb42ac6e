"""RoBERTa adapter: BERT's layers and rules, its own heads (LM head: GELU + LayerNorm; classification
head: tanh, identity rule) and its position numbering: positions start at pad_token_id + 1, and
padding sits at pad_token_id, as RoBERTa derives them from input_ids.

`roberta_clone(family, model_types, prefix)` builds the adapter of a family that copies RoBERTa's
modeling file under its own class-name prefix (XLM-RoBERTa, CamemBERT): the same layers, heads and
position numbering, the last being the adapter's `position_ids`, never a test of the model type.
"""

import torch

from lrp_triton.models.base import Adapter, layer_norm
from lrp_triton.models.bert import text_embeddings
from lrp_triton.modules.encoder import (LRPClassificationHead, LRPDenseActivation, LRPPooler, LRPRobertaLMHead)


def position_ids(config, attention_mask: torch.Tensor) -> torch.Tensor:
    """pad + 1, pad + 2, ... over each row's real tokens (left padding does not shift them); pad at padding."""
    count = attention_mask.long().cumsum(-1)
    pad = config.pad_token_id
    return torch.where(attention_mask, count + pad, torch.full_like(count, pad))


def max_length(config) -> int:
    """Positions run from pad_token_id + 1: max_position_embeddings - pad_token_id - 1 of them fit."""
    return config.max_position_embeddings - config.pad_token_id - 1


def roberta_clone(family: str, model_types: tuple[str, ...], prefix: str) -> Adapter:
    """The adapter of RoBERTa's layout with HF class names `{prefix}Intermediate`, `{prefix}Pooler`, ..."""
    return Adapter(
        family=family,
        model_types=model_types,
        replacements={
            "LayerNorm": layer_norm,
            f"{prefix}Intermediate": LRPDenseActivation.from_hf,
            f"{prefix}Pooler": LRPPooler.from_hf,
            f"{prefix}LMHead": LRPRobertaLMHead.from_hf,
            f"{prefix}ClassificationHead": LRPClassificationHead.from_hf,
        },
        kind="encoder",
        layers_attrs=("encoder.layer",),
        max_length=max_length,
        position_ids=position_ids,
        embeddings_of=text_embeddings,
    )


ADAPTER = roberta_clone("RoBERTa", ("roberta",), "Roberta")
