"""DeBERTa-v2 / v3 layers with LRP rules: disentangled attention, the context pooler, the MLM head
(the pooler, the head and the helpers `attend`, `check_call`, `masks` serve DeBERTa v1 too:
lrp_triton/modules/deberta_v1.py).

- `LRPDisentangledSelfAttention`: drop-in for DisentangledSelfAttention (deberta-v2), sharing its
  projections. Scores are content-to-content q_i . k_j plus, per `pos_att_type`, content-to-position
  q_i . pk[c(i - j)] and position-to-content k_j . pq[p(j - i)], all times 1 / sqrt(D * (1 + number
  of position terms)); pk = key projection of the relative embeddings (pos_key_proj unless
  share_att_key), pq = query projection (pos_query_proj unless share_att_key). The relative
  positions are the model's own (its `make_log_bucket_position` with position_buckets and
  max_relative_positions, clamped to the attention span), computed per offset j - i as two compact
  vectors [2N - 1]: the op `lrp_disentangled_attention` gathers from them block by block, never
  building an N x N position tensor (the encoder's pair mask of a padding vector is taken as the
  vector). Rules: softmax rule, epsilon on the sum of the three terms,
  uniform (half to each factor) on every bilinear term and on P V (see that op). The relative
  embeddings' share is absorbed (they are a parameter). Swapped in every mode, "gradient"
  included (its backward is then the exact gradient). The relative positions the encoder passes
  (`relative_pos`) are the ones recomputed here: DebertaV2Encoder builds them from the sequence
  length alone.
- `LRPContextPooler`: ContextPooler, act(dense(h[:, 0])) (pooler_hidden_act; identity rule).
- `LRPDebertaLMHead`: DebertaV2LMPredictionHead (v1: DebertaLMPredictionHead),
  LayerNorm(act(dense(h))) @ word_embeddings^T + bias
  (identity rule on act, the constant-std rule on the LayerNorm, epsilon on the products).
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from lrp_triton.modules.encoder import encoder_activation_name, lrp_act
from lrp_triton.modules.norms import LRPLayerNorm
from lrp_triton.ops.disentangled_attention import lrp_disentangled_attention
from lrp_triton.options import LatentTaps, LRPOptions


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, H * D] -> [B, H, N, D] (DeBERTa v1 and v2 lay their projections out per head)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


class LRPDisentangledSelfAttention(nn.Module):
    """Drop-in for deberta-v2's DisentangledSelfAttention (module docstring)."""

    def __init__(self, original: nn.Module, *, mode: str, taps: LatentTaps | None = None):
        super().__init__()
        self.mode, self.taps = mode, taps
        self.num_attention_heads, self.attention_head_size = original.num_attention_heads, original.attention_head_size
        self.query_proj, self.key_proj, self.value_proj = original.query_proj, original.key_proj, original.value_proj
        self.relative_attention = original.relative_attention
        self.pos_att_type = list(original.pos_att_type)
        unknown = set(self.pos_att_type) - {"c2p", "p2c"}
        if unknown:
            raise NotImplementedError(f"LRPDisentangledSelfAttention: pos_att_type {sorted(unknown)} is not "
                                      "supported (c2p, p2c are)")
        self.share_att_key = original.share_att_key
        if self.relative_attention:
            self.position_buckets = original.position_buckets
            self.max_relative_positions = original.max_relative_positions
            self.pos_ebd_size = original.pos_ebd_size
            if not self.share_att_key:
                self.pos_key_proj = getattr(original, "pos_key_proj", None)
                self.pos_query_proj = getattr(original, "pos_query_proj", None)
        # the modeling file's own bucket function (transformers' make_log_bucket_position)
        self._log_bucket = sys.modules[type(original).__module__].make_log_bucket_position

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module, mode=options.mode, taps=options.taps)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return split_heads(x, self.num_attention_heads)

    def relative_indices(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(c2p, p2c) long [2N - 1]: the relative-embedding row of each offset t = j - i (at t + N - 1).

        The model's c2p term reads row clamp(delta(i - j) + span) and its p2c term row
        clamp(-delta(j - i) + span), delta the (log-bucketed) relative position."""
        offset = torch.arange(2 * n - 1, device=device) - (n - 1)  # j - i
        span = self.pos_ebd_size

        def delta(rel):  # as transformers' build_relative_position, on a vector of offsets
            if self.position_buckets > 0 and self.max_relative_positions > 0:
                rel = self._log_bucket(rel, self.position_buckets, self.max_relative_positions)
            return rel.to(torch.long)
        c2p = torch.clamp(delta(-offset) + span, 0, 2 * span - 1)
        p2c = torch.clamp(-delta(offset) + span, 0, 2 * span - 1)
        return c2p, p2c

    def forward(self, hidden_states, attention_mask, output_attentions=False, query_states=None, relative_pos=None,
                rel_embeddings=None):
        check_call(output_attentions, query_states, hidden_states, relative_pos)
        n = hidden_states.shape[1]
        q = self.heads(self.query_proj(hidden_states))
        k = self.heads(self.key_proj(hidden_states))
        v = self.heads(self.value_proj(hidden_states))
        terms = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
        scale = 1.0 / math.sqrt(self.attention_head_size * terms)
        pk = pq = c2p = p2c = None
        if self.relative_attention:
            rel = rel_embeddings[: 2 * self.pos_ebd_size][None]  # [1, R, hidden]
            c2p, p2c = self.relative_indices(n, q.device)
            if "c2p" in self.pos_att_type:
                proj = self.key_proj if self.share_att_key else self.pos_key_proj
                pk = self.heads(proj(rel))[0]  # [H, R, D]
            if "p2c" in self.pos_att_type:
                proj = self.query_proj if self.share_att_key else self.pos_query_proj
                pq = self.heads(proj(rel))[0]
        return attend(q, k, v, pk, pq, c2p, p2c, attention_mask, scale, self.mode, self.taps), None


def attend(q, k, v, pk, pq, c2p, p2c, attention_mask, scale: float, mode: str, taps: LatentTaps | None):
    """The disentangled attention of heads q, k, v [B, H, N, D] with the position tables pk / pq [H, R, D]
    (or None) read at the compact rows c2p / p2c [2N - 1], under the encoder's mask: [B, N, H * D]."""
    mask, padding = masks(attention_mask)
    out = lrp_disentangled_attention(q, k, v, scale=scale, mode=mode, pos_key=pk, pos_query=pq,
                                     c2p_index=c2p if pk is not None else None,
                                     p2c_index=p2c if pq is not None else None, mask=mask, padding_mask=padding)
    out = out.transpose(1, 2)  # [B, N, H, D]
    if taps is not None:
        taps.heads(out)
    return out.reshape(out.shape[0], out.shape[1], -1)


def check_call(output_attentions, query_states, hidden_states, relative_pos) -> None:
    """What lrp_triton's DeBERTa attention (v1, v2) does not do: an error naming it."""
    if output_attentions:
        raise NotImplementedError("lrp_triton's DeBERTa attention never builds the attention matrix: "
                                  "pass output_attentions=False")
    if query_states is not None and query_states is not hidden_states:
        raise NotImplementedError("lrp_triton's DeBERTa attention explains self-attention only (no "
                                  "query_states, z_steps 0)")
    n = hidden_states.shape[1]
    if relative_pos is not None and tuple(relative_pos.shape[-2:]) != (n, n):
        raise ValueError(f"lrp_triton's DeBERTa attention: relative_pos of shape {tuple(relative_pos.shape)} for "
                         f"{n} tokens")


def masks(attention_mask) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dense bool mask [B, 1, N, N] or None, padding vector [B, N] or None) of the mask the encoder
    passes: DebertaV2Encoder expands a 2-D mask m to the pair mask m_i m_j, which is taken back as m
    (O(N) in the op); any other mask (a 3-D one the caller gave) stays dense."""
    if attention_mask is None:
        return None, None
    mask = attention_mask.bool()
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == mask.shape[3]:
        pad = mask[:, 0].diagonal(dim1=-2, dim2=-1)
        if torch.equal(mask[:, 0], pad[:, :, None] & pad[:, None, :]):
            return None, pad.contiguous()
    return mask, None


class LRPContextPooler(nn.Module):
    """Drop-in for DeBERTa's ContextPooler: act(dense(h[:, 0])) (dropout: eval identity)."""

    def __init__(self, dense, activation: str, config, *, backend: str):
        super().__init__()
        self.dense, self.activation, self.config, self.backend = dense, activation, config, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        from transformers.activations import ACT2FN  # the pooler looks its activation up by name
        return cls(module.dense, encoder_activation_name(ACT2FN[module.config.pooler_hidden_act]), module.config,
                   backend=options.backend)

    @property
    def output_dim(self):
        return self.config.hidden_size

    def forward(self, hidden_states):
        return lrp_act(self.dense(hidden_states[:, 0]), self.activation, self.backend)


class LRPDebertaLMHead(nn.Module):
    """Drop-in for DebertaV2LMPredictionHead / DebertaLMPredictionHead:
    LayerNorm(act(dense(h))) @ word_embeddings.weight^T + bias."""

    def __init__(self, dense, activation: str, layer_norm: LRPLayerNorm, bias, *, backend: str):
        super().__init__()
        self.dense, self.activation, self.LayerNorm, self.bias = dense, activation, layer_norm, bias
        self.backend = backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.dense, encoder_activation_name(module.transform_act_fn),
                   LRPLayerNorm.from_hf(module.LayerNorm, options), module.bias, backend=options.backend)

    def forward(self, hidden_states, word_embeddings):
        x = self.LayerNorm(lrp_act(self.dense(hidden_states), self.activation, self.backend))
        return torch.matmul(x, word_embeddings.weight.t()) + self.bias
