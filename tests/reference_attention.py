"""Explicit float64 AttnLRP / CP-LRP relevance of one attention call, written as relevance formulas.

This is the oracle for the attention kernels: it never uses the gradient trick. It materialises
the full score matrix (small inputs only) and walks the layer backwards rule by rule:

    O_id = sum_j P_ij V_jd            epsilon rule on the terms z_ijd = P_ij V_jd:
                                      R(z_ijd) = z_ijd / O_id * R_O_id, then half to P, half to V
                                      (CP-LRP: everything to V, P is a constant)
    P = softmax(S)                    softmax rule: R_S = S * (R_P - P * sum_j R_P)
                                      (with sinks, gpt-oss: the denominator holds exp(s_h) too, and the
                                      sink is one more softmax entry with R_P = 0 (it attends nowhere):
                                      the formula is unchanged for the keys, and the sink's own share
                                      R_sink = s_h * (0 - P_sink * sum_j R_P) goes to no token)
    S = S_cap + bias                  epsilon rule: R_Scap = S_cap / S * R_S (the bias keeps the rest)
    S_cap = c tanh(S_raw / c)         identity rule: R_Sraw = R_Scap
    S_raw_ij = sum_d scale Q_id K_jd  epsilon rule on the terms, half to Q, half to K
"""

from __future__ import annotations

import math

import torch


def visibility(b, n, m, *, causal, sliding_window, key_padding_mask, device, causal_extent=None):
    """[B, 1, N, M] bool: which key each query sees (queries are the last N of M positions).

    causal_extent [B, N] (with causal): query i sees the keys j <= causal_extent[b, i] (>= its own
    position: the end of its bidirectional block), and a window then bounds the past only, i - j <
    window (a block reaches ahead past the window, as transformers' sliding overlay j > i - window)."""
    q_pos = torch.arange(n, device=device)[:, None] + (m - n)
    k_pos = torch.arange(m, device=device)[None, :]
    vis = torch.ones(n, m, dtype=torch.bool, device=device)
    if causal and causal_extent is not None:
        assert (causal_extent >= q_pos[:, 0]).all(), "causal_extent must reach at least each query's position"
        vis = vis & (k_pos[None] <= causal_extent[:, :, None])  # [B, N, M]
        if sliding_window is not None:
            vis = vis & (q_pos - k_pos < sliding_window)
        vis = vis[:, None]
    else:
        if causal:
            vis &= k_pos <= q_pos
        if sliding_window is not None:
            vis &= (q_pos - k_pos).abs() < sliding_window  # causal: i - j < window; else the band |i - j| < window
        vis = vis.expand(b, 1, n, m)
    if key_padding_mask is not None:
        vis = vis & key_padding_mask[:, None, None, :]
    return vis


def _safe_div(num, den):
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


def dense_relative_bias(relative_bias, n, m):
    """[1, H, N, M] from the compact [H, N + M - 1] form: bias[h, i, j] = rel[h, j - i + N - 1]."""
    offset = torch.arange(m)[None, :] - torch.arange(n)[:, None] + n - 1
    return relative_bias.double()[:, offset][None]


def attention_forward_reference(q, k, v, *, causal, scale=None, key_padding_mask=None, sliding_window=None,
                                softcap=None, bias=None, relative_bias=None, sinks=None, causal_extent=None):
    """float64 eager attention; returns a dict of every intermediate (S_raw, S_cap, S, P, O)."""
    q, k, v = q.double(), k.double(), v.double()
    b, h, n, d = q.shape
    m = k.shape[2]
    if relative_bias is not None:
        dense = dense_relative_bias(relative_bias, n, m)
        bias = dense if bias is None else bias.double() + dense
    g = h // k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kr, vr = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    s_raw = scale * torch.einsum("bhid,bhjd->bhij", q, kr)
    s_cap = softcap * torch.tanh(s_raw / softcap) if softcap is not None else s_raw
    s = s_cap + bias.double() if bias is not None else s_cap
    vis = visibility(b, n, m, causal=causal, sliding_window=sliding_window,
                     key_padding_mask=key_padding_mask, device=q.device,
                     causal_extent=causal_extent).expand(b, h, n, m)
    s_masked = s.masked_fill(~vis, float("-inf"))
    row_max = s_masked.amax(-1, keepdim=True)
    sink = None if sinks is None else sinks.double().view(1, h, 1, 1)
    if sink is not None:
        row_max = torch.maximum(row_max, sink)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(s_masked - row_max)
    denom = e.sum(-1, keepdim=True)
    if sink is not None:
        denom = denom + torch.exp(sink - row_max)
    p = _safe_div(e, denom.expand_as(e))
    out = torch.einsum("bhij,bhjd->bhid", p, vr)
    return dict(q=q, kr=kr, vr=vr, s_raw=s_raw, s_cap=s_cap, s=s, vis=vis, p=p, out=out, scale=scale, g=g)


def attention_relevance_reference(q, k, v, grad_out, *, mode, causal, scale=None, key_padding_mask=None,
                                  sliding_window=None, softcap=None, bias=None, relative_bias=None, sinks=None,
                                  causal_extent=None):
    """(R_q, R_k, R_v) in float64 for the upstream relevance R_O = O * grad_out (AttnLRP or CP-LRP)."""
    f = attention_forward_reference(q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
                                    sliding_window=sliding_window, softcap=softcap, bias=bias,
                                    relative_bias=relative_bias, sinks=sinks, causal_extent=causal_extent)
    return attention_relevance_from(f, f["out"] * grad_out.double(), mode=mode,
                                    has_bias=bias is not None or relative_bias is not None)


def attention_relevance_from(f, r_out, *, mode, has_bias=False):
    """(R_q, R_k, R_v) from the forward record `f` of attention_forward_reference and R_O."""
    assert mode in ("attnlrp", "cp-lrp")
    b, h, n, d = f["q"].shape
    hkv, m = h // f["g"], f["kr"].shape[2]
    out, p, vr = f["out"], f["p"], f["vr"]

    # O = P V, epsilon rule on z_ijd = P_ij V_jd: R(z_ijd) = z_ijd / O_id * R_O_id
    z = torch.einsum("bhij,bhjd->bhijd", p, vr)
    r_z = z * _safe_div(r_out, out)[:, :, :, None, :]
    share_v, share_p = (0.5, 0.5) if mode == "attnlrp" else (1.0, 0.0)
    r_v = share_v * r_z.sum(2).view(b, hkv, h // hkv, m, -1).sum(2)
    if share_p == 0.0:
        return torch.zeros_like(f["q"]), torch.zeros(b, hkv, m, d, dtype=r_v.dtype), r_v  # (D_v may differ from D)
    r_p = share_p * r_z.sum(-1)

    # softmax rule on the visible scores: R_S = S * (R_P - P * sum_j R_P)
    s = torch.where(f["vis"], f["s"], torch.zeros_like(f["s"]))
    r_s = s * (r_p - p * r_p.sum(-1, keepdim=True))
    r_s = torch.where(f["vis"], r_s, torch.zeros_like(r_s))
    # S = S_cap + bias: the bias keeps its epsilon share; soft-capping passes it on unchanged
    r_s_raw = _safe_div(f["s_cap"] * r_s, s) if has_bias else r_s
    # S_raw = sum_d scale Q_id K_jd, epsilon rule on the terms, half to Q and half to K
    zq = f["scale"] * torch.einsum("bhid,bhjd->bhijd", f["q"], f["kr"])
    r_zq = zq * _safe_div(r_s_raw, f["s_raw"])[..., None]
    r_q = 0.5 * r_zq.sum(3)
    r_k = (0.5 * r_zq.sum(2)).view(b, hkv, h // hkv, m, d).sum(2)
    return r_q, r_k, r_v


def attention_gradient_reference(q, k, v, grad_out, **kwargs):
    """(x * dL/dx for q, k, v) in float64 by autograd through the eager reference: Input x Gradient."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = attention_forward_reference(q64, k64, v64, **kwargs)["out"]
    out.backward(grad_out.double())
    return q64 * q64.grad, k64 * k64.grad, v64 * v64.grad
