"""`LRPMultiheadAttention`: drop-in for torch.nn.MultiheadAttention (SigLIP's attention-pooling head).

    q = query W_q^T + b_q,  k = key W_k^T + b_k,  v = value W_v^T + b_v   (one packed in_proj, or three)
    O = softmax(q k^T / sqrt(d)) v per head,  y = out_proj(merge_heads(O))

Rules: the projections are linear (epsilon rule: the exact gradient; the gamma rule of
`linear_rule="gamma"` / `"gamma-signed"` through `lrp_gamma_linear`, on the in-projection and on
`out_proj`, a NonDynamicallyQuantizableLinear that the nn.Linear swap does not take); the attention
core is `lrp_attention`, so it takes the mode's attention rule (AttnLRP: dQ, dK x 1/4 and dV x 1/2;
CP-LRP: no relevance through q and k).
Only what the HF models pass is taken: a boolean or additive `key_padding_mask` (True / -inf =
ignore, torch's convention), no `attn_mask`, no bias_k / bias_v / add_zero_attn; the attention
weights are not returned (None), as the pooling head discards them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lrp_triton.ops.attention import lrp_attention
from lrp_triton.ops.gamma import lrp_gamma_linear
from lrp_triton.options import LRPOptions


class LRPMultiheadAttention(nn.Module):
    """Drop-in for torch.nn.MultiheadAttention; shares its parameters."""

    def __init__(self, module: nn.MultiheadAttention, options: LRPOptions):
        super().__init__()
        if module.bias_k is not None or module.bias_v is not None or module.add_zero_attn:
            raise NotImplementedError("LRPMultiheadAttention: bias_k / bias_v / add_zero_attn are not supported")
        self.embed_dim, self.num_heads, self.batch_first = module.embed_dim, module.num_heads, module.batch_first
        self.head_dim = module.head_dim
        self.in_proj_weight, self.in_proj_bias = module.in_proj_weight, module.in_proj_bias
        self.q_proj_weight, self.k_proj_weight, self.v_proj_weight = (
            module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        self.out_proj = module.out_proj
        self.dropout = module.dropout
        self.mode, self.backend = options.mode, options.backend
        self.linear_rule, self.gamma = options.linear_rule, options.gamma

    @classmethod
    def from_hf(cls, module: nn.MultiheadAttention, options: LRPOptions) -> "LRPMultiheadAttention":
        return cls(module, options)

    def _projection(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W, b) of the query (0), key (1) or value (2) projection."""
        e = self.embed_dim
        if self.in_proj_weight is not None:
            weight = self.in_proj_weight[i * e:(i + 1) * e]
        else:
            weight = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]
        bias = None if self.in_proj_bias is None else self.in_proj_bias[i * e:(i + 1) * e]
        return weight, bias

    def _project(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self._linear(x, *self._projection(i))

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.linear_rule == "epsilon":
            return F.linear(x, weight, bias)
        return lrp_gamma_linear(x, weight, bias, self.gamma, signed=self.linear_rule == "gamma-signed")

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if attn_mask is not None or is_causal:
            raise NotImplementedError("LRPMultiheadAttention: attn_mask and is_causal are not supported")
        if self.training and self.dropout:
            raise RuntimeError("LRPMultiheadAttention: attention dropout is not an LRP rule; put the model in "
                               "eval mode")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        keep = None
        if key_padding_mask is not None:  # torch: True (or -inf) = ignore; lrp_attention: True = attend
            if key_padding_mask.dtype == torch.bool:
                keep = ~key_padding_mask
            elif bool(((key_padding_mask == 0) | (key_padding_mask == float("-inf"))).all()):
                keep = key_padding_mask == 0
            else:
                raise NotImplementedError("LRPMultiheadAttention: an additive key_padding_mask must hold 0 and "
                                          "-inf only")
        q, k, v = (self._heads(self._project(t, i)) for i, t in enumerate((query, key, value)))
        out = lrp_attention(q, k, v, causal=False, scale=self.head_dim ** -0.5, mode=self.mode,
                            key_padding_mask=keep, backend=self.backend)
        b, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(b, n, self.embed_dim)
        out = self._linear(out, self.out_proj.weight, self.out_proj.bias)
        return (out if self.batch_first else out.transpose(0, 1)), None

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, mode={self.mode!r}"
