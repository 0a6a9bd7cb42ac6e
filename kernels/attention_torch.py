"""Plain-PyTorch twin of the flash attention kernel: exact attention forward, AttnLRP backward.

This is the `backend="torch"` path of `lrp_triton.ops.lrp_attention` (the CPU fallback and the
second reference of `attention.py`). It computes the same gradient form as the Triton kernel,
query chunk by query chunk, so memory is O(chunk * M) and never the full N x M matrix for long N.

Attention, per head, with queries the last N of M positions (bottom-right alignment):

    S_raw = scale * Q K^T
    S     = softcap(S_raw) + bias + rel + mask  softcap(x) = c * tanh(x / c); mask is 0 or -inf;
                                                 rel[h, i, j] = relative_bias[h, j - i + N - 1] (T5);
                                                 causal_extent: visible j <= ext[b, i], i - j < window
    P     = softmax(S)                           (rows whose keys are all masked: P = 0)
    O     = P V
    sinks: P_ij = exp(S_ij) / (exp(s_h) + sum_j' exp(S_ij')): a logit per head in the denominator only
           (gpt-oss); it is in the saved log-sum-exp, so the backward below is unchanged (D = rowsum(dO * O)
           holds: the sink has no value), and the sink receives no gradient

Backward, in gradient form (x * x.grad is the relevance of x), with D = rowsum(dO * O):

    dV     = rule.dv  * P^T dO
    dS     = P * (dO V^T - D)                    the exact softmax gradient
    dS_raw = dS * softcap'(S_raw)                identity rule: softcap(S_raw) / S_raw
    dQ     = rule.dqk * scale * dS_raw K
    dK     = rule.dqk * scale * dS_raw^T Q       summed over the query heads of a kv group

The factors per mode (AttnLRP: dqk = 1/4, dv = 1/2; CP-LRP: dqk = 0, dv = 1; gradient: both 1, softcap
by its true derivative) are `lrp_triton.rules.ATTENTION_RULES`.

The value head dim D_v (V, O, dO, dV) may differ from the query/key one D (multi-head latent
attention); nothing above depends on the two being equal.

Scores, softmax and gradients are computed in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import math

import torch

from lrp_triton.kernels import buffers
from lrp_triton.rules import ATTENTION_RULES, tanh_over_x

# Entries of one [B, H, chunk, M] float32 score block the PyTorch path allows itself.
_CHUNK_ELEMENTS = 1 << 24


def softcap_backward_factor(s_raw: torch.Tensor, softcap: float, identity: bool) -> torch.Tensor:
    """What dS is multiplied by to pass soft-capping: the ratio (identity rule) or the derivative."""
    ratio = tanh_over_x(s_raw / softcap)
    if identity:
        return ratio
    t = ratio * (s_raw / softcap)
    return 1.0 - t * t


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float32/float16/bfloat16 inputs, float64 for float64 ones."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_size(batch: int, heads: int, n: int, m: int) -> int:
    return max(1, min(n, _CHUNK_ELEMENTS // max(1, batch * heads * m)))


def _scores(qc, k, n0, n, *, causal, scale, key_padding_mask, sliding_window, softcap, bias, relative_bias,
            causal_extent=None):
    """Scores of the query chunk `qc` [B, Hkv, G, c, D] starting at query n0: (S_raw, S), in compute_dtype.

    S has -inf wherever a key is invisible to a query (causal, window, padding). With `causal_extent`
    [B, N] the causal limit is j <= causal_extent[b, i] and the window bounds the past only, i - j < window.
    """
    m = k.shape[2]
    hkv, g, c = qc.shape[1], qc.shape[2], qc.shape[3]
    acc = compute_dtype(qc.dtype)
    s_raw = torch.einsum("bkgnd,bkmd->bkgnm", qc.to(acc), k.to(acc)) * scale
    s = s_raw * tanh_over_x(s_raw / softcap) if softcap is not None else s_raw
    if bias is not None:
        s = s + bias[:, :, :, n0:n0 + c, :].to(acc)
    if relative_bias is not None:  # S[h, i, j] += rel[h, j - i + N - 1]
        offset = torch.arange(m, device=qc.device)[None, :] - torch.arange(n0, n0 + c, device=qc.device)[:, None]
        s = s + relative_bias[:, offset + n - 1].to(acc).view(1, hkv, g, c, m)
    q_pos = torch.arange(n0, n0 + c, device=qc.device) + (m - n)
    k_pos = torch.arange(m, device=qc.device)
    visible = torch.ones(c, m, dtype=torch.bool, device=qc.device)
    if causal_extent is not None:  # [B, c, M]: up to each row's extent; the window one-sided
        if sliding_window is not None:
            visible &= q_pos[:, None] - k_pos[None, :] < sliding_window
        visible = (visible & (k_pos <= causal_extent[:, n0:n0 + c, None]))[:, None, None]
    else:
        if causal:
            visible &= k_pos[None, :] <= q_pos[:, None]
        if sliding_window is not None:
            visible &= (q_pos[:, None] - k_pos[None, :]).abs() < sliding_window  # symmetric without causality
        visible = visible[None, None, None]
    if key_padding_mask is not None:
        visible = visible & key_padding_mask[:, None, None, None, :]
    return s_raw, s.masked_fill(~visible, float("-inf"))


def _grouped(q, k, bias):
    """Views q as [B, Hkv, G, N, D] and bias as [B, Hkv, G, N, M] (no copies of k or v)."""
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    qg = q.view(b, hkv, h // hkv, n, d) if q.is_contiguous() else q.reshape(b, hkv, h // hkv, n, d)
    bg = None
    if bias is not None:
        bg = bias.expand(b, h, n, m).view(b, hkv, h // hkv, n, m)
    return qg, bg


def attention_forward_torch(q, k, v, *, causal, scale, key_padding_mask=None, sliding_window=None,
                            softcap=None, bias=None, relative_bias=None, sinks=None, causal_extent=None):
    """Exact attention. Returns (out [B, H, N, D_v] in q's dtype, lse [B, H, N] in compute_dtype).

    `lse` is the natural log-sum-exp of each score row (with the head's sink logit, `sinks` [H], when
    given), +inf for rows with no visible key (and no sink).
    """
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    qg, bias_g = _grouped(q, k, bias)
    out = buffers.new_output((b, hkv, h // hkv, n, v.shape[3]), q.dtype, q.device)
    acc = compute_dtype(q.dtype)
    lse = buffers.new_output((b, hkv, h // hkv, n), acc, q.device)
    step = _chunk_size(b, h, n, m)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        _, s = _scores(qg[:, :, :, n0:n1], k, n0, n, causal=causal, scale=scale,
                       key_padding_mask=key_padding_mask, sliding_window=sliding_window,
                       softcap=softcap, bias=bias_g, relative_bias=relative_bias, causal_extent=causal_extent)
        row_lse = torch.logsumexp(s, dim=-1)
        if sinks is not None:
            row_lse = torch.logaddexp(row_lse, sinks.to(acc).view(1, hkv, h // hkv, 1))
        empty = torch.isneginf(row_lse)
        row_lse = row_lse.masked_fill(empty, float("inf"))
        p = torch.exp(s - row_lse[..., None])
        out[:, :, :, n0:n1] = torch.einsum("bkgnm,bkmd->bkgnd", p, v.to(acc)).to(q.dtype)
        lse[:, :, :, n0:n1] = row_lse
    return out.view(b, h, n, -1), lse.view(b, h, n)


def attention_backward_torch(do, q, k, v, out, lse, *, causal, scale, mode, key_padding_mask=None,
                             sliding_window=None, softcap=None, bias=None, relative_bias=None, causal_extent=None):
    """The mode's gradient form (module docstring) for (q, k, v), each in its input's dtype.

    `do` is one cotangent [B, H, N, D_v] or K stacked ones [K, B, H, N, D_v] (several explained scores
    in one backward): then dq is [K, B, H, N, D], dk [K, B, Hkv, M, D] and dv [K, B, Hkv, M, D_v], and
    the scores and probabilities P of each query chunk are computed once and applied to the K streams."""
    rule = ATTENTION_RULES[mode]
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    g = h // hkv
    stacked = do.dim() == 5
    if do.shape[stacked:] != out.shape:
        raise ValueError(f"attention backward: do must have shape {tuple(out.shape)} or [K, *that], "
                         f"got {tuple(do.shape)}")
    streams = do.shape[0] if stacked else 1
    qg, bias_g = _grouped(q, k, bias)
    acc = compute_dtype(q.dtype)
    # the streams sit after the kv heads, [B, Hkv, K, G, N, D]: each product below is one batched matmul
    dog = do.reshape(streams, b, hkv, g, n, -1).to(acc).permute(1, 2, 0, 3, 4, 5).contiguous()
    lse_g = lse.view(b, hkv, 1, g, n).to(acc)
    delta = (dog * out.reshape(b, hkv, 1, g, n, -1).to(acc)).sum(-1)  # D = rowsum(dO * O), per stream
    dq = torch.zeros(b, hkv, streams, g, n, d, dtype=acc, device=q.device)
    dk = torch.zeros(b, hkv, streams, m, d, dtype=acc, device=q.device)
    dv = torch.zeros(b, hkv, streams, m, v.shape[3], dtype=acc, device=q.device)
    k_acc, v_t = k.to(acc), v.to(acc).transpose(-1, -2)  # [B, Hkv, M, D], [B, Hkv, D, M]
    step = _chunk_size(streams * b, h, n, m)  # the dS block holds K streams
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        rows = g * (n1 - n0)  # the query rows of a kv head in this chunk
        qc = qg[:, :, :, n0:n1]
        s_raw, s = _scores(qc, k, n0, n, causal=causal, scale=scale,
                           key_padding_mask=key_padding_mask, sliding_window=sliding_window,
                           softcap=softcap, bias=bias_g, relative_bias=relative_bias, causal_extent=causal_extent)
        # the recomputed attention weights, once for the K streams: [B, Hkv, 1, G * c, M]
        p = torch.exp(s - lse_g[:, :, 0, :, n0:n1, None]).reshape(b, hkv, 1, rows, m)
        doc = dog[:, :, :, :, n0:n1].reshape(b, hkv, streams, rows, -1)
        dv += (p[:, :, 0].transpose(-1, -2) @ doc.transpose(2, 3).reshape(b, hkv, rows, -1)).view(
            b, hkv, m, streams, -1).transpose(2, 3)
        if rule.dqk == 0.0:
            continue
        dp = (doc.reshape(b, hkv, streams * rows, -1) @ v_t).view(b, hkv, streams, rows, m)
        ds = p * (dp - delta[:, :, :, :, n0:n1].reshape(b, hkv, streams, rows, 1))
        if softcap is not None:
            ds = ds * softcap_backward_factor(s_raw, softcap, rule.softcap_identity).reshape(b, hkv, 1, rows, m)
        dq[:, :, :, :, n0:n1] = (ds.view(b, hkv, streams * rows, m) @ k_acc).view(b, hkv, streams, g, n1 - n0, d)
        dk += ds.transpose(-1, -2) @ qc.to(acc).reshape(b, hkv, 1, rows, d)
    factor = scale * rule.dqk
    dq = (dq * factor).permute(2, 0, 1, 3, 4, 5).reshape(streams, b, h, n, d).to(q.dtype)
    dk, dv = (dk * factor).permute(2, 0, 1, 3, 4).to(k.dtype), (dv * rule.dv).permute(2, 0, 1, 3, 4).to(v.dtype)
    return (dq, dk, dv) if stacked else (dq[0], dk[0], dv[0])


def default_scale(head_dim: int) -> float:
    """The usual softmax temperature, head_dim ** -0.5."""
    return 1.0 / math.sqrt(head_dim)
