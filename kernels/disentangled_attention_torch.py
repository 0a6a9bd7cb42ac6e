"""DeBERTa's disentangled attention, chunked over query blocks: exact forward, AttnLRP backward.

This is the only path of `lrp_triton.ops.lrp_disentangled_attention` (PyTorch, every backend; see
that op for why it is not fused into the flash kernel). Per head, queries i and keys j in [0, N):

    S_ij = scale * (q_i . k_j  +  q_i . pk[c(j - i)]  +  k_j . pq[p(j - i)])   content-to-content,
                                                                                 content-to-position,
                                                                                 position-to-content
    S    = S masked with finfo.min where query i may not see key j (DeBERTa's masked_fill: a row with
           no visible key is uniform over all keys, as in the model): a dense bool `mask`
           broadcastable to [B, H, N, M], or DeBERTa's pair mask of a padding vector,
           visible_ij = pad_i and pad_j, from `padding_mask` [B, N] (N = M) block by block
    P    = softmax(S),  O = P V

pk, pq [H, R, D] are the projected relative embeddings (R = 2 x the attention span); c and p map the
offset j - i to a row of pk / pq (DeBERTa's log-bucketed, clamped relative positions), given as
compact vectors c2p_index, p2c_index [N + M - 1] indexed by j - i + N - 1: nothing N x N is built
but one [B, H, C, M] block of scores for a block of C queries at a time.

Backward in gradient form (x * x.grad is the relevance of x), with D = rowsum(dO * O):

    dV  = rule.dv  * P^T dO
    dS  = scale * P * (dO V^T - D), 0 where masked          exact softmax gradient; epsilon rule on
                                                             the sum of the three terms (exact)
    dQ  = rule.dqk * (dS K + G_c pk),   dpk = rule.dqk * G_c^T Q    G_c[i, r] = sum_{j: c(j-i)=r} dS_ij
    dK  = rule.dqk * (dS^T Q + G_p pq), dpq = rule.dqk * G_p^T K    G_p[j, r] = sum_{i: p(j-i)=r} dS_ij

Each score term is a bilinear product: the uniform rule gives half of its relevance to each factor,
and O = P V gives half of O's relevance to P, so rule.dqk = 1/4 for q, k, pk and pq alike, rule.dv = 1/2
(`lrp_triton.rules.ATTENTION_RULES`; CP-LRP: dqk = 0, dv = 1; gradient: 1, 1). Relevance reaching pk
and pq flows to the relative-embedding table, a parameter: it is absorbed there, like a bias's share.

Memory: O(B H C M) for one block (C chosen so that a block holds at most 2^24 entries) plus the
O(B H M R) position-to-content products; the N x N score matrix is never stored. Computed in float32
(float64 for float64 inputs).
"""

from __future__ import annotations

import torch

from lrp_triton.kernels.attention_torch import compute_dtype
from lrp_triton.rules import ATTENTION_RULES

_BLOCK_ELEMENTS = 1 << 24  # entries of one [B, H, C, M] score block


def block_size(batch: int, heads: int, n: int, m: int, block: int | None = None) -> int:
    """The number C of queries per block: `block` if given, else as many as fit _BLOCK_ELEMENTS."""
    if block is not None:
        return max(1, min(n, int(block)))
    return max(1, min(n, _BLOCK_ELEMENTS // max(1, batch * heads * m)))


def _offsets(i0: int, i1: int, n: int, m: int, device) -> torch.Tensor:
    """[C, M] long: j - i + N - 1 for the queries i in [i0, i1) and every key j."""
    return torch.arange(m, device=device)[None, :] - torch.arange(i0, i1, device=device)[:, None] + (n - 1)


class _Block:
    """The scores of queries [i0, i1): S [B, H, C, M] and the position-row indices it used."""

    def __init__(self, q, k, pk, pq, kpq, c2p_index, p2c_index, mask, padding_mask, scale, i0, i1):
        b, h, n, _ = q.shape
        m = k.shape[2]
        qc = q[:, :, i0:i1]
        offsets = _offsets(i0, i1, n, m, q.device)
        s = qc @ k.transpose(-1, -2)
        self.c_index = self.p_index = None
        if pk is not None:  # q_i . pk[c(j - i)]
            self.c_index = c2p_index[offsets].expand(b, h, i1 - i0, m)
            s = s + (qc @ pk.transpose(-1, -2)).gather(-1, self.c_index)
        if pq is not None:  # k_j . pq[p(j - i)], from the [B, H, M, R] products kpq
            self.p_index = p2c_index[offsets].T.expand(b, h, m, i1 - i0)
            s = s + kpq.gather(-1, self.p_index).transpose(-1, -2)
        s = s * scale
        self.visible = None
        if mask is not None:
            self.visible = mask[:, :, i0:i1].expand(b, h, i1 - i0, m)
        elif padding_mask is not None:
            pair = padding_mask[:, None, i0:i1, None] & padding_mask[:, None, None, :]
            self.visible = pair.expand(b, h, i1 - i0, m)
        if self.visible is not None:  # a row that sees nothing: all its scores equal (0), P uniform as in the model
            seen = self.visible.any(-1, keepdim=True)
            s = s.masked_fill(~self.visible, torch.finfo(s.dtype).min).masked_fill(~seen, 0.0)
        self.s, self.qc = s, qc


def _upcast(*tensors):
    return [None if t is None else t.to(compute_dtype(t.dtype)) for t in tensors]


def disentangled_attention_forward_torch(q, k, v, pk, pq, c2p_index, p2c_index, mask, padding_mask, *, scale: float,
                                         block: int | None = None):
    """(out [B, H, N, D] in q's dtype, lse [B, H, N] float32/64); arguments as in the module docstring,
    pk / pq None where the model has no c2p / p2c term; mask (bool, broadcastable to [B, H, N, M]) or
    padding_mask (bool [B, N]) or neither."""
    dtype = q.dtype
    q, k, v, pk, pq = _upcast(q, k, v, pk, pq)
    b, h, n, _ = q.shape
    m = k.shape[2]
    kpq = None if pq is None else k @ pq.transpose(-1, -2)
    out = torch.empty(b, h, n, v.shape[-1], dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h, n, dtype=q.dtype, device=q.device)
    c = block_size(b, h, n, m, block)
    for i0 in range(0, n, c):
        i1 = min(n, i0 + c)
        s = _Block(q, k, pk, pq, kpq, c2p_index, p2c_index, mask, padding_mask, scale, i0, i1).s
        lse[:, :, i0:i1] = torch.logsumexp(s, dim=-1)
        out[:, :, i0:i1] = torch.exp(s - lse[:, :, i0:i1, None]) @ v
    return out.to(dtype), lse


def disentangled_attention_backward_torch(do, q, k, v, pk, pq, c2p_index, p2c_index, mask, padding_mask, out, lse, *,
                                          scale: float, mode: str, block: int | None = None):
    """(dq, dk, dv, dpk, dpq) in the gradient form of `mode` (module docstring); dpk / dpq None
    where pk / pq is None. One cotangent dO [B, H, N, D]."""
    rule = ATTENTION_RULES[mode]
    dtypes = [None if t is None else t.dtype for t in (q, k, v, pk, pq)]
    do, q, k, v, pk, pq, out = _upcast(do, q, k, v, pk, pq, out)
    b, h, n, _ = q.shape
    m = k.shape[2]
    kpq = None if pq is None else k @ pq.transpose(-1, -2)
    through_scores = rule.dqk != 0.0
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    dpk = None if pk is None else torch.zeros(b, *pk.shape, dtype=q.dtype, device=q.device)
    g_p = None if pq is None else torch.zeros(b, h, m, pq.shape[1], dtype=q.dtype, device=q.device)
    delta = (do * out).sum(-1)
    c = block_size(b, h, n, m, block)
    for i0 in range(0, n, c):
        i1 = min(n, i0 + c)
        blk = _Block(q, k, pk, pq, kpq, c2p_index, p2c_index, mask, padding_mask, scale, i0, i1)
        p = torch.exp(blk.s - lse[:, :, i0:i1, None])
        doc = do[:, :, i0:i1]
        dv += p.transpose(-1, -2) @ doc
        if not through_scores:
            continue
        ds = p * (doc @ v.transpose(-1, -2) - delta[:, :, i0:i1, None]) * scale
        if blk.visible is not None:
            ds = ds.masked_fill(~blk.visible, 0.0)
        dqc = ds @ k
        dk += ds.transpose(-1, -2) @ blk.qc
        if pk is not None:  # G_c [B, H, C, R]: each score's gradient at the pk row it read
            g_c = torch.zeros(b, h, i1 - i0, pk.shape[1], dtype=q.dtype, device=q.device)
            g_c.scatter_add_(-1, blk.c_index, ds)
            dqc = dqc + g_c @ pk
            dpk += g_c.transpose(-1, -2) @ blk.qc
        if pq is not None:  # G_p [B, H, M, R], summed over the query blocks
            g_p.scatter_add_(-1, blk.p_index, ds.transpose(-1, -2))
        dq[:, :, i0:i1] = dqc
    dpq = None
    if pq is not None and through_scores:
        dk += g_p @ pq
        dpq = (g_p.transpose(-1, -2) @ k).sum(0)
    if dpk is not None:
        dpk = dpk.sum(0)
    if pq is not None and not through_scores:
        dpq = torch.zeros_like(pq)
    grads = [rule.dqk * dq, rule.dqk * dk, rule.dv * dv,
             None if dpk is None else rule.dqk * dpk, None if dpq is None else rule.dqk * dpq]
    return tuple(None if g is None else g.to(t) for g, t in zip(grads, dtypes))
