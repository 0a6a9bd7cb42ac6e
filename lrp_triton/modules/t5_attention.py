"""T5 attention whose relative-position bias never becomes an [B, H, N, M] tensor.

transformers' T5Attention materialises `position_bias` [1, H, N, M] from its bucket table and adds
it to the scores. This layer computes one bias value per (head, key - query offset) instead,
`rel[h, t] = table[bucket(t - (M - 1)), h]` for t in [0, N + M - 1), and hands that [H, N + M - 1]
vector to the attention kernel, which adds `rel[h, j - i + N - 1]` to each score tile: O(N + M)
memory. The bucket function is transformers' own `T5Attention._relative_position_bucket`, so the
bias is exactly the one the model was trained with. As an additive constant the bias absorbs its
share of relevance and receives none. T5 does not scale q k^T (scale 1).

The compact vector is returned in place of `position_bias`, which T5Stack passes on unchanged to
the later layers of the stack, exactly as it passes the dense tensor. mT5 shares T5's attention
under the MT5 prefix.

umT5 (`LRPUMT5Attention`) gives every self-attention layer a bias table of its own, computed in
each layer and never passed on, with a bucket function of its own signature (an instance method
reading the layer's bucket count, distance and direction): the layer calls the original module's
own bucket method, and takes UMT5Attention's call signature.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_triton.ops.attention import lrp_attention
from lrp_triton.options import LatentTaps, LRPOptions


class LRPT5Attention(nn.Module):
    """Drop-in for T5Attention (self- and cross-attention) sharing its projections and bias table."""

    def __init__(self, original: nn.Module, *, mode: str, backend: str, taps: LatentTaps | None = None):
        super().__init__()
        self.mode, self.backend, self.taps = mode, backend, taps
        self.q, self.k, self.v, self.o = original.q, original.k, original.v, original.o
        self.relative_attention_bias = getattr(original, "relative_attention_bias", None)
        self.has_relative_attention_bias = original.has_relative_attention_bias
        self.is_decoder, self.is_causal = original.is_decoder, original.is_causal
        self.num_buckets = original.relative_attention_num_buckets
        self.max_distance = original.relative_attention_max_distance
        self.n_heads, self.head_dim = original.n_heads, original.key_value_proj_dim
        self.layer_idx = original.layer_idx
        self._bucket = type(original)._relative_position_bucket  # T5's static bucket function

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module, mode=options.mode, backend=options.backend, taps=options.taps)

    def relative_bias(self, n: int, m: int, device) -> torch.Tensor:
        """[H, N + M - 1]: bias of each key - query offset, queries the last N of M positions."""
        relative = torch.arange(n + m - 1, device=device) - (m - 1)  # memory - query position
        return self.relative_attention_bias(self.buckets(relative)).T.contiguous()

    def buckets(self, relative: torch.Tensor) -> torch.Tensor:
        """transformers' bucket of each relative position (memory - query)."""
        return self._bucket(relative, bidirectional=not self.is_decoder, num_buckets=self.num_buckets,
                            max_distance=self.max_distance)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
        if cache is not None:
            raise NotImplementedError("lrp_triton's T5 attention explains full sequences: pass use_cache=False")
        out, position_bias = self.attend(hidden_states, key_value_states, mask, position_bias)
        return out, position_bias, None

    def attend(self, hidden_states, key_value_states, mask, position_bias):
        """(attention output after `o`, the compact bias used or None)."""
        b, n, _ = hidden_states.shape
        source = hidden_states if key_value_states is None else key_value_states
        q = self.q(hidden_states).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k(source).view(b, source.shape[1], -1, self.head_dim).transpose(1, 2)
        v = self.v(source).view(b, source.shape[1], -1, self.head_dim).transpose(1, 2)
        m = k.shape[2]
        if position_bias is None and self.has_relative_attention_bias:
            position_bias = self.relative_bias(n, m, q.device).to(q.dtype)
        key_padding_mask = None
        if mask is not None:
            if mask.dim() != 2:
                raise ValueError("LRPT5Attention expects the 2-D padding mask of the lrp_triton mask interface")
            key_padding_mask = mask[:, -m:].to(torch.bool)
        out = lrp_attention(q, k, v, causal=self.is_causal, scale=1.0, mode=self.mode,
                            key_padding_mask=key_padding_mask, relative_bias=position_bias, backend=self.backend)
        out = out.transpose(1, 2)
        if self.taps is not None:
            self.taps.heads(out)
        return self.o(out.reshape(b, n, -1)), position_bias


class LRPUMT5Attention(LRPT5Attention):
    """Drop-in for UMT5Attention: its own bias table in every self-attention layer, its bucket method."""

    def __init__(self, original: nn.Module, *, mode: str, backend: str, taps: LatentTaps | None = None):
        super().__init__(original, mode=mode, backend=backend, taps=taps)
        self._bucket = original._relative_position_bucket  # bound: reads the layer's own bucket settings

    def buckets(self, relative: torch.Tensor) -> torch.Tensor:
        return self._bucket(relative)

    def forward(self, hidden_states, encoder_hidden_states=None, cache=None, attention_mask=None, **kwargs):
        if cache is not None:
            raise NotImplementedError("lrp_triton's umT5 attention explains full sequences: pass use_cache=False")
        return self.attend(hidden_states, encoder_hidden_states, attention_mask, None)[0], None
