"""DeBERTa (v1, model type "deberta") attention with LRP rules: `LRPDebertaSelfAttention`.

Drop-in for deberta's DisentangledSelfAttention, sharing its parameters: q, k, v from one fused
`in_proj` (per head [q | k | v]) with the separate q_bias and v_bias (epsilon rule: the biases keep
their shares), scores q_i . k_j plus, per `pos_att_type`, content-to-position q_i . pk[c] (pk =
pos_proj of the relative embeddings) and position-to-content k_j . pq[c] (pq = pos_q_proj), all
times 1 / sqrt(D * (1 + len(pos_att_type))). Relative positions are unbucketed, i - j clamped to
the attention span min(N, max_relative_positions), which selects the middle 2 x span rows of the
relative-embedding table: row c = clamp(i - j + span, 0, 2 span - 1) for both terms, computed per
offset (a compact vector [2N - 1]). The same op and rules as deberta-v2's
(`lrp_triton.modules.deberta.LRPDisentangledSelfAttention`): softmax rule, epsilon on the sum of the
score terms, uniform on each bilinear term and on P V. The talking-head variant (scores mixed
across heads) is not supported.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lrp_triton.modules.deberta import attend, check_call, split_heads
from lrp_triton.options import LatentTaps, LRPOptions


class LRPDebertaSelfAttention(nn.Module):
    """Drop-in for deberta (v1)'s DisentangledSelfAttention (module docstring)."""

    def __init__(self, original: nn.Module, *, mode: str, taps: LatentTaps | None = None):
        super().__init__()
        if original.talking_head:
            raise NotImplementedError("lrp_triton's DeBERTa attention: talking_head (scores mixed across heads) "
                                      "is not supported")
        unknown = set(original.pos_att_type) - {"c2p", "p2c"}
        if unknown:
            raise NotImplementedError(f"LRPDebertaSelfAttention: pos_att_type {sorted(unknown)} is not supported "
                                      "(c2p, p2c are)")
        self.mode, self.taps = mode, taps
        self.num_attention_heads, self.attention_head_size = original.num_attention_heads, original.attention_head_size
        self.in_proj, self.q_bias, self.v_bias = original.in_proj, original.q_bias, original.v_bias
        self.pos_att_type = list(original.pos_att_type)
        self.relative_attention = original.relative_attention
        if self.relative_attention:
            self.max_relative_positions = original.max_relative_positions
            self.pos_proj = getattr(original, "pos_proj", None)
            self.pos_q_proj = getattr(original, "pos_q_proj", None)

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module, mode=options.mode, taps=options.taps)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return split_heads(x, self.num_attention_heads)

    def forward(self, hidden_states, attention_mask, output_attentions=False, query_states=None, relative_pos=None,
                rel_embeddings=None):
        check_call(output_attentions, query_states, hidden_states, relative_pos)
        n = hidden_states.shape[1]
        q, k, v = self.heads(self.in_proj(hidden_states)).chunk(3, dim=-1)
        q = q + self.heads(self.q_bias[None, None, :])
        v = v + self.heads(self.v_bias[None, None, :])
        scale = 1.0 / math.sqrt(self.attention_head_size * (1 + len(self.pos_att_type)))
        pk = pq = rows = None
        if self.relative_attention and rel_embeddings is not None and relative_pos is not None:
            span = min(n, self.max_relative_positions)
            rel = rel_embeddings[self.max_relative_positions - span: self.max_relative_positions + span][None]
            offset = torch.arange(2 * n - 1, device=q.device) - (n - 1)  # j - i
            rows = torch.clamp(-offset + span, 0, 2 * span - 1)  # the row of i - j, for c2p and p2c alike
            if "c2p" in self.pos_att_type:
                pk = self.heads(self.pos_proj(rel))[0]  # [H, 2 span, D]
            if "p2c" in self.pos_att_type:
                pq = self.heads(self.pos_q_proj(rel))[0]
        return attend(q, k, v, pk, pq, rows, rows, attention_mask, scale, self.mode, self.taps), None
