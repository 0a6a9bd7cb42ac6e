"""Building blocks for callable targets (`attribute(model, ..., target=fn)`): sentence embeddings.

- `mean_pool`: the masked mean over tokens (sentence-transformers' pooling). Linear in the hidden
  states with constant weights: epsilon rule, the exact gradient.
- `lrp_cosine_similarity`: cos(a, b) with the norms held constant (as RMSNorm's rms, see
  `lrp_triton.rules`) and the uniform rule on each product a_d * b_d.
"""

from __future__ import annotations

import torch

from lrp_triton.ops.elementwise import lrp_uniform_product


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over each row's real tokens, as sentence-transformers pools: [B, N, H] -> [B, H].

    A linear map (the mask weights are constants): epsilon rule, the exact gradient.
    """
    if attention_mask is None:
        return hidden.mean(1)
    w = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * w).sum(1) / w.sum(1).clamp(min=1)


def lrp_cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) = sum_d a_d b_d / (|a| |b|) over the last dimension, with LRP rules:

    the norms are held constant (like the standard deviation of LayerNorm) and each product
    a_d * b_d takes the uniform rule (half of its relevance to a, half to b), so the relevance of
    a and b together sums to the similarity itself.
    """
    scale = (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).detach()
    return lrp_uniform_product(a, b / scale).sum(-1)
