"""`lrp_disentangled_attention`: DeBERTa's attention with relative-position score terms, AttnLRP backward.

    S_ij = scale * (q_i . k_j + q_i . pk[c2p_index[j - i + N - 1]] + k_j . pq[p2c_index[j - i + N - 1]])
    O    = softmax(S masked) V

Rules (gradient form, `kernels/disentangled_attention_torch.py`): the softmax rule on S (its exact
gradient), the epsilon rule on the sum of the three terms (exact), the uniform rule on each bilinear
term (half to each factor, as for Q K^T) and on P V: dq, dk, dpk, dpq = exact / 4, dv = exact / 2
(CP-LRP: no relevance through the scores, dv exact; "gradient": the exact gradient).

Why not the flash kernel: its `bias` / `relative_bias` are constants with no gradient, but the
content-to-position term q_i . pk[c(j - i)] depends on the query (and position-to-content on the
key): a per-(query, offset) gather that the kernel's tiles do not do. The op therefore runs a
chunked PyTorch path for every backend: one block of queries at a time, O(B H C M) transient memory,
no N x N matrix stored between forward and backward (only the log-sum-exp per row; DeBERTa's pair
mask of a padding vector is taken as the [B, N] vector).
"""

from __future__ import annotations

import torch

from lrp_triton.kernels.disentangled_attention_torch import (disentangled_attention_backward_torch,
                                                             disentangled_attention_forward_torch)
from lrp_triton.ops.streams import StreamKernel, refuse_batched_inputs, stream_backward
from lrp_triton.rules import MODES


class LRPDisentangledAttentionFunction(torch.autograd.Function):
    """The chunked forward, then the mode's backward (one stream, or K under vmap one after another)."""

    @staticmethod
    def forward(q, k, v, pk, pq, c2p_index, p2c_index, mask, padding_mask, options):
        return disentangled_attention_forward_torch(q, k, v, pk, pq, c2p_index, p2c_index, mask, padding_mask,
                                                    scale=options["scale"], block=options["block"])

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, pk, pq, c2p_index, p2c_index, mask, padding_mask, options = inputs
        out, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, pk, pq, c2p_index, p2c_index, mask, padding_mask, out, lse)
        ctx.options = options

    vmap = refuse_batched_inputs("lrp_disentangled_attention")

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        if not any(ctx.needs_input_grad[:5]):
            return (None,) * 10
        o = ctx.options

        def call(do, *saved):  # five tensors (an empty one for a missing table): vmap stacks each
            grads = disentangled_attention_backward_torch(do, *saved, scale=o["scale"], mode=o["mode"],
                                                          block=o["block"])
            return tuple(do.new_zeros(0) if g is None else g for g in grads)

        pk, pq = ctx.saved_tensors[3:5]
        dq, dk, dv, dpk, dpq = stream_backward(StreamKernel(call), 1, grad_out, *ctx.saved_tensors)
        return dq, dk, dv, None if pk is None else dpk, None if pq is None else dpq, None, None, None, None, None


def _check(q, k, v, pk, pq, c2p_index, p2c_index, mask, padding_mask, mode):
    if mode not in MODES:
        raise ValueError(f"lrp_disentangled_attention: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if q.dim() != 4 or k.shape != v.shape[:3] + (q.shape[3],) or k.shape[:2] != q.shape[:2]:
        raise ValueError(f"lrp_disentangled_attention: q, k, v must be [B, H, N, D], [B, H, M, D], [B, H, M, Dv]; "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    n, m = q.shape[2], k.shape[2]
    for name, table, index in (("pk", pk, c2p_index), ("pq", pq, p2c_index)):
        if table is None:
            continue
        if table.dim() != 3 or table.shape[0] != q.shape[1] or table.shape[2] != q.shape[3]:
            raise ValueError(f"lrp_disentangled_attention: {name} must be [H, R, D]; got {tuple(table.shape)}")
        if index is None or index.dtype != torch.long or index.shape != (n + m - 1,):
            raise ValueError(f"lrp_disentangled_attention: {name} needs a long index of shape [N + M - 1] = "
                             f"[{n + m - 1}]")
        if index.numel() and (index.min() < 0 or index.max() >= table.shape[1]):
            raise ValueError(f"lrp_disentangled_attention: an index of {name} is outside its {table.shape[1]} rows")
    if mask is not None and (mask.dtype != torch.bool or mask.dim() != 4):
        raise ValueError("lrp_disentangled_attention: mask must be a bool tensor broadcastable to [B, H, N, M]")
    if padding_mask is not None:
        if mask is not None:
            raise ValueError("lrp_disentangled_attention: pass mask or padding_mask, not both")
        if padding_mask.dtype != torch.bool or padding_mask.shape != (q.shape[0], n) or n != m:
            raise ValueError(f"lrp_disentangled_attention: padding_mask must be bool [B, N] = [{q.shape[0]}, {n}] "
                             f"for self-attention (N = M); got {tuple(padding_mask.shape)} {padding_mask.dtype}")


def lrp_disentangled_attention(q, k, v, *, scale: float, mode: str = "attnlrp", pos_key=None, pos_query=None,
                               c2p_index=None, p2c_index=None, mask=None, padding_mask=None, block: int | None = None):
    """Disentangled attention whose backward propagates relevance by `mode`'s rule (module docstring).

    Args:
        q, k, v: [B, H, N, D], [B, H, M, D], [B, H, M, Dv].
        scale: the factor on every score term (DeBERTa: 1 / sqrt(D * (1 + number of position terms))).
        pos_key: [H, R, D] projected relative embeddings of the content-to-position term, with
            c2p_index long [N + M - 1]: S_ij += scale * q_i . pos_key[c2p_index[j - i + N - 1]].
        pos_query: [H, R, D], with p2c_index long [N + M - 1]:
            S_ij += scale * k_j . pos_query[p2c_index[j - i + N - 1]].
        mask: bool, broadcastable to [B, H, N, M], True = attend (DeBERTa's masked_fill with finfo.min:
            a row with no visible key is uniform over all keys, as in the model).
        padding_mask: instead of mask, bool [B, N] (N = M): query i sees key j iff both are True
            (DeBERTa's pair mask of a 2-D attention mask), expanded block by block: O(N) memory.
        block: queries per block (default: as many as keep a score block within 2^24 entries).

    Returns:
        out [B, H, N, Dv] in q's dtype.
    """
    _check(q, k, v, pos_key, pos_query, c2p_index, p2c_index, mask, padding_mask, mode)
    options = dict(scale=float(scale), mode=mode, block=block)
    return LRPDisentangledAttentionFunction.apply(q, k, v, pos_key, pos_query, c2p_index, p2c_index, mask,
                                                  padding_mask, options)[0]
