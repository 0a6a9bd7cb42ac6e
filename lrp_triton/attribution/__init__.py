"""Attribution: one driver per adapter kind, the pieces they share, and the result they return.

- `core`: the model's state for one call, relevance leaves, one backward pass per score, packing.
- `inputs`, `targets`: input checking; what is explained (positions, targets, contrasts, scores).
- `latent`: residual-stream, head and neuron relevance (`latent=True`).
- `decoder`, `encoder`, `vision`, `seq2seq`, `contrastive`: the drivers; `lrp_triton.attribute` dispatches to them.
- `result`: the `Attribution` they return; `scores`: building blocks for callable targets.
"""

from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.scores import lrp_cosine_similarity, mean_pool

__all__ = ["Attribution", "lrp_cosine_similarity", "mean_pool"]
