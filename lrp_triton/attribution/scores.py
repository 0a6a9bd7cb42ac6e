"""Building blocks for callable targets (`attribute(model, ..., target=fn)`): sentence embeddings.

- `mean_pool`: the masked mean over tokens (sentence-transformers' pooling). Linear in the hidden
  states with constant weights: epsilon rule, the exact gradient.
- `lrp_cosine_similarity`: cos(a, b) with the norms held constant (as RMSNorm's rms, see
  `lrp_triton.rules`) and the uniform rule on each product a_d * b_d.
- `lrp_l2_normalize`, `lrp_similarity`: the same rules as layers of CLIP's and SigLIP's image-text
  logit scale * cos(u, t) (+ bias) (`lrp_triton.attribution.contrastive`).
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


def lrp_l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / ||x||_2 over the last dimension with the norm held constant (as LayerNorm's std):

    the map is then linear in x and passes relevance unchanged, R_x = R_y (gradient form:
    g_x = g_y / ||x||). The exact gradient, (I - y y^T) g_y / ||x||, removes the component along x:
    x . g_x = 0, so Input x Gradient gives a normalised vector no relevance at all.
    """
    return x / x.norm(dim=-1, keepdim=True).detach()


def lrp_similarity(a: torch.Tensor, b: torch.Tensor, scale, bias=None, mode: str = "attnlrp") -> torch.Tensor:
    """scale * cos(a, b) (+ bias): CLIP's and SigLIP's image-text logit, over the last dimension.

    Rules ("attnlrp", "cp-lrp"): each L2 normalisation by `lrp_l2_normalize`, then the dot product
    sum_d a'_d b'_d: the uniform rule on each bilinear term (R_a'_d = R_b'_d = R_d / 2, AttnLRP
    Proposition 3.2) and the epsilon rule on the sum and the scale; the bias keeps its own share.
    So R_a + R_b = scale * cos(a, b). Mode "gradient": the exact gradient (Input x Gradient).
    """
    if mode == "gradient":
        cos = (a / a.norm(dim=-1, keepdim=True) * (b / b.norm(dim=-1, keepdim=True))).sum(-1)
    else:
        cos = lrp_uniform_product(lrp_l2_normalize(a), lrp_l2_normalize(b)).sum(-1)
    out = cos * scale
    return out if bias is None else out + bias
