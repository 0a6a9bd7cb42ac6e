"""Flash-style attention in Triton: exact forward, AttnLRP relevance in the backward.

Plain-PyTorch twin (same rules, same signature): `attention_torch.py` beside this file.

Per (batch, head), queries are the last N of M positions (query i sits at position i + M - N):

    S_raw = scale * Q K^T
    S     = c * tanh(S_raw / c) [if softcap] + bias [if bias] + rel[h, j - i + N - 1] [if relative
            bias], -inf where a key is invisible
    P     = softmax(S),   O = P V

Forward (FlashAttention-2): one program per block of queries walks the visible key blocks with an
online softmax (running max m, running sum l, rescaled accumulator) and stores O and the log2
log-sum-exp L = m + log2(l) per row (+inf for a row with no visible key, so that P = 0 there).

Backward: recompute P = exp2(S * log2(e) - L) tile by tile (no N x M buffer anywhere), with
D = rowsum(dO * O):

    dV     = rule.dv  * P^T dO                               kernel _attn_bwd_dkdv
    dS     = P * (dO V^T - D)                                 exact softmax gradient
    dS_raw = dS * (tanh(x)/x  [AttnLRP identity rule]  or  1 - tanh(x)^2 [gradient]),  x = S_raw/c
    dK     = rule.dqk * scale * dS_raw^T Q                   kernel _attn_bwd_dkdv (loops over the
                                                             query heads of its kv group: no atomics)
    dQ     = rule.dqk * scale * dS_raw K                     kernel _attn_bwd_dq

AttnLRP folds its constant factors into the epilogue (dqk = 1/4, dv = 1/2); CP-LRP skips dQ and
dK (dqk = 0). Grouped-query attention maps query head h to kv head h // (H / Hkv) in the kernel;
repeated keys are never materialised.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lrp_triton.kernels import buffers
from lrp_triton.kernels.attention_tiles import (BWD_CONFIGS, FWD_CONFIGS, LOG2E, NEG_INF, TUNE_CAP, TUNE_KEY, key_range,
                                             prune_for_head_dim, query_range, softcap_grad_factor, tile_scores,
                                             visible)
from lrp_triton.kernels.triton_setup import INTERPRETING
from lrp_triton.rules import ATTENTION_RULES

# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@triton.autotune(configs=FWD_CONFIGS, key=TUNE_KEY, prune_configs_by={"early_config_prune": prune_for_head_dim})
@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE, KPM, BIAS, REL,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_kpm_b, stride_bb, stride_bh, stride_bn, stride_bm, stride_rh, stride_rm,
    H, GROUP, N, M, scale, softcap, window, N_BUCKET, M_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hk = h // GROUP  # grouped-query attention: kv head of this query head

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None].to(tl.int64) * stride_qn + offs_d[None, :] * stride_qd,
                mask=(offs_m[:, None] < N) & d_ok[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    bias_base = BIAS + b * stride_bb + h * stride_bh
    rel_base = REL + h * stride_rh

    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)  # running row max of S * log2(e)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum of exp2(S * log2(e) - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running sum of P V (unnormalised)

    lo, hi = key_range(pid_m * BLOCK_M, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < M
        k_t = tl.load(k_base + offs_n[None, :].to(tl.int64) * stride_kn + offs_d[:, None] * stride_kd,
                      mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # K^T tile [BLOCK_D, BLOCK_N]
        if DOT_F32:
            k_t = k_t.to(tl.float32)
        qk = tl.dot(q, k_t, input_precision=PRECISION)
        vis = visible(offs_m[:, None], offs_n[None, :], N, M, window, CAUSAL, HAS_WINDOW)
        if HAS_KPM:
            keep = tl.load(KPM + b * stride_kpm_b + offs_n, mask=n_ok, other=0)
            vis = vis & (keep[None, :] != 0)
        _, s = tile_scores(qk, offs_m[:, None], offs_n[None, :], vis, bias_base, stride_bn, stride_bm,
                       rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
        s = s * LOG2E
        # online softmax: new max, rescale what was accumulated under the old max
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == NEG_INF, 0.0, m_new)  # rows with nothing visible yet: no NaN
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        if DOT_F32:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    empty = l_i == 0.0  # a row whose keys are all masked: output 0, P = 0 in the backward
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    tl.store(O + b * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_on + offs_d[None, :] * stride_od,
             out.to(O.dtype.element_ty), mask=(offs_m[:, None] < N) & d_ok[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * N + offs_m, lse, mask=offs_m < N)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _attn_bwd_delta(
    O, DO, DELTA, stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod, H, N,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """D = rowsum(dO * O), the softmax-gradient correction of each query row."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m[:, None] < N) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_on + offs_d[None, :] * stride_od,
                mask=ok, other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None].to(tl.int64) * stride_don + offs_d[None, :] * stride_dod,
                 mask=ok, other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh.to(tl.int64) * N + offs_m, tl.sum(o * do, 1), mask=offs_m < N)


@triton.autotune(configs=BWD_CONFIGS, key=TUNE_KEY + ["COMPUTE_DQK"],
                 prune_configs_by={"early_config_prune": prune_for_head_dim})
@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV, KPM, BIAS, REL,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_kpm_b, stride_bb, stride_bh, stride_bn, stride_bm, stride_rh, stride_rm,
    H, HKV, GROUP, N, M, scale, softcap, window, dqk_scale, dv_scale, N_BUCKET, M_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr,
    COMPUTE_DQK: tl.constexpr, SOFTCAP_IDENTITY: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dK and dV of one block of keys of one kv head, summed over the query heads of its group."""
    pid_n = tl.program_id(0)
    pid_bhk = tl.program_id(1)
    b = (pid_bhk // HKV).to(tl.int64)
    hk = (pid_bhk % HKV).to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < M
    d_ok = offs_d < HEAD_DIM
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * stride_kb + hk * stride_kh + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :] * stride_kd,
                mask=kv_mask, other=0.0)
    v = tl.load(V + b * stride_vb + hk * stride_vh + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd,
                mask=kv_mask, other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    keep = tl.full([BLOCK_N], 1, dtype=tl.int8)
    if HAS_KPM:
        keep = tl.load(KPM + b * stride_kpm_b + offs_n, mask=n_ok, other=0).to(tl.int8)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo, hi = query_range(pid_n * BLOCK_N, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for g in range(0, GROUP):
        h = hk * GROUP + g
        bh = b * H + h
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        bias_base = BIAS + b * stride_bb + h * stride_bh
        rel_base = REL + h * stride_rh
        for start_m in range(lo, hi, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_ok = offs_m < N
            q_t = tl.load(q_base + offs_m[None, :].to(tl.int64) * stride_qn + offs_d[:, None] * stride_qd,
                          mask=m_ok[None, :] & d_ok[:, None], other=0.0)  # Q^T tile [BLOCK_D, BLOCK_M]
            do = tl.load(do_base + offs_m[:, None].to(tl.int64) * stride_don + offs_d[None, :] * stride_dod,
                         mask=m_ok[:, None] & d_ok[None, :], other=0.0)
            if DOT_F32:
                q_t = q_t.to(tl.float32)
                do = do.to(tl.float32)
            lse = tl.load(LSE + bh * N + offs_m, mask=m_ok, other=float("inf"))
            # transposed tiles [BLOCK_N, BLOCK_M]: rows are keys, columns queries
            qk_t = tl.dot(k, q_t, input_precision=PRECISION)
            vis = visible(offs_m[None, :], offs_n[:, None], N, M, window, CAUSAL, HAS_WINDOW)
            vis = vis & (keep[:, None] != 0)
            s_raw, s = tile_scores(qk_t, offs_m[None, :], offs_n[:, None], vis, bias_base, stride_bn, stride_bm,
                               rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
            p_t = tl.exp2(s * LOG2E - lse[None, :])  # P^T recomputed from the saved log-sum-exp
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)  # P^T dO
            if COMPUTE_DQK:
                delta = tl.load(DELTA + bh * N + offs_m, mask=m_ok, other=0.0)
                dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (dO V^T)^T
                ds_t = p_t * (dp_t - delta[None, :])  # exact softmax gradient
                if HAS_SOFTCAP:
                    ds_t = ds_t * softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY)
                dk += tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t), input_precision=PRECISION)  # dS^T Q

    # epilogue: the mode's constant LRP factors (AttnLRP: dK / 4, dV / 2) and the softmax scale
    dk = dk * (scale * dqk_scale)
    dv = dv * dv_scale
    tl.store(DK + pid_bhk.to(tl.int64) * M * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + pid_bhk.to(tl.int64) * M * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.autotune(configs=FWD_CONFIGS, key=TUNE_KEY, prune_configs_by={"early_config_prune": prune_for_head_dim})
@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, KPM, BIAS, REL,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_kpm_b, stride_bb, stride_bh, stride_bn, stride_bm, stride_rh, stride_rm,
    H, GROUP, N, M, scale, softcap, window, dqk_scale, N_BUCKET, M_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr,
    SOFTCAP_IDENTITY: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dQ of one block of queries of one head."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hk = h // GROUP

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N
    d_ok = offs_d < HEAD_DIM
    q_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None].to(tl.int64) * stride_qn + offs_d[None, :] * stride_qd,
                mask=q_mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None].to(tl.int64) * stride_don + offs_d[None, :] * stride_dod,
                 mask=q_mask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + pid_bh.to(tl.int64) * N + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + pid_bh.to(tl.int64) * N + offs_m, mask=m_ok, other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    bias_base = BIAS + b * stride_bb + h * stride_bh
    rel_base = REL + h * stride_rh

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = key_range(pid_m * BLOCK_M, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < M
        kv_t_mask = n_ok[None, :] & d_ok[:, None]
        k_t = tl.load(k_base + offs_n[None, :].to(tl.int64) * stride_kn + offs_d[:, None] * stride_kd, mask=kv_t_mask, other=0.0)
        v_t = tl.load(v_base + offs_n[None, :].to(tl.int64) * stride_vn + offs_d[:, None] * stride_vd, mask=kv_t_mask, other=0.0)
        if DOT_F32:
            k_t = k_t.to(tl.float32)
            v_t = v_t.to(tl.float32)
        qk = tl.dot(q, k_t, input_precision=PRECISION)
        vis = visible(offs_m[:, None], offs_n[None, :], N, M, window, CAUSAL, HAS_WINDOW)
        if HAS_KPM:
            keep = tl.load(KPM + b * stride_kpm_b + offs_n, mask=n_ok, other=0)
            vis = vis & (keep[None, :] != 0)
        s_raw, s = tile_scores(qk, offs_m[:, None], offs_n[None, :], vis, bias_base, stride_bn, stride_bm,
                           rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
        p = tl.exp2(s * LOG2E - lse[:, None])  # P recomputed from the saved log-sum-exp
        dp = tl.dot(do, v_t, input_precision=PRECISION)  # dO V^T
        ds = p * (dp - delta[:, None])  # exact softmax gradient
        if HAS_SOFTCAP:
            ds = ds * softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY)
        dq += tl.dot(ds.to(k_t.dtype), tl.trans(k_t), input_precision=PRECISION)  # dS K

    dq = dq * (scale * dqk_scale)  # epilogue: AttnLRP dQ / 4 and the softmax scale
    tl.store(DQ + pid_bh.to(tl.int64) * N * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=q_mask)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------
def _common(q, k, key_padding_mask, bias, relative_bias, sliding_window, softcap):
    """Arguments every kernel shares: optional tensors (or q as a never-read dummy) and flags."""
    b, h, n, d = q.shape
    m = k.shape[2]
    if key_padding_mask is not None:
        kpm = key_padding_mask.to(torch.uint8)
        kpm_stride = kpm.stride(0)
    else:
        kpm, kpm_stride = q, 0
    if bias is not None:
        bias_t = bias.expand(b, h, n, m)
        bias_strides = bias_t.stride()
    else:
        bias_t, bias_strides = q, (0, 0, 0, 0)
    if relative_bias is not None:
        rel_t, rel_strides = relative_bias, tuple(relative_bias.stride())
    else:
        rel_t, rel_strides = q, (0, 0)
    dot_f32 = INTERPRETING or q.dtype == torch.float32  # the interpreter's tl.dot is wrong on bf16
    meta = dict(
        HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), HAS_WINDOW=sliding_window is not None,
        HAS_SOFTCAP=softcap is not None, HAS_KPM=key_padding_mask is not None, HAS_BIAS=bias is not None,
        HAS_REL=relative_bias is not None,
        # float32 inputs: exact float32 products ("ieee", not TF32); for fp16/bf16 tiles the value is unused
        DOT_F32=dot_f32, PRECISION="ieee" if dot_f32 else "tf32",
    )
    # autotune key: lengths by power of two, capped so that long contexts reuse the 16k choice
    # instead of re-tuning (on real data, at full cost) at every new power of two
    scalars = dict(softcap=float(softcap or 1.0), window=int(sliding_window or 0),
                   N_BUCKET=min(triton.next_power_of_2(n), TUNE_CAP), M_BUCKET=min(triton.next_power_of_2(m), TUNE_CAP))
    return kpm, kpm_stride, (bias_t, rel_t), bias_strides + rel_strides, scalars, meta


def attention_forward(q, k, v, *, causal, scale, key_padding_mask=None, sliding_window=None,
                      softcap=None, bias=None, relative_bias=None):
    """Exact attention. Returns (out [B, H, N, D] in q's dtype, lse [B, H, N] float32, log2 units)."""
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    out = buffers.new_output((b, h, n, d), q.dtype, q.device)
    lse = buffers.new_output((b, h, n), torch.float32, q.device)
    kpm, kpm_stride, biases, bias_strides, scalars, meta = _common(
        q, k, key_padding_mask, bias, relative_bias, sliding_window, softcap)
    grid = lambda META: (triton.cdiv(n, META["BLOCK_M"]), b * h)  # noqa: E731
    _attn_fwd[grid](
        q, k, v, out, lse, kpm, *biases, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        kpm_stride, *bias_strides, h, h // hkv, n, m, float(scale), CAUSAL=bool(causal), **scalars, **meta)
    return out, lse


def attention_backward(do, q, k, v, out, lse, *, causal, scale, mode, key_padding_mask=None,
                       sliding_window=None, softcap=None, bias=None, relative_bias=None):
    """The mode's gradient form (module docstring) for (q, k, v), each in its input's dtype."""
    rule = ATTENTION_RULES[mode]
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    kpm, kpm_stride, biases, bias_strides, scalars, meta = _common(
        q, k, key_padding_mask, bias, relative_bias, sliding_window, softcap)
    block_d = meta["BLOCK_D"]
    compute_dqk = rule.dqk != 0.0

    delta = buffers.new_output((b, h, n), torch.float32, q.device)
    if compute_dqk:
        _attn_bwd_delta[(triton.cdiv(n, 32), b * h)](
            out, do, delta, *out.stride(), *do.stride(), h, n, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=32)

    dk = buffers.new_output((b, hkv, m, d), k.dtype, q.device)
    dv = buffers.new_output((b, hkv, m, d), v.dtype, q.device)
    _attn_bwd_dkdv[lambda META: (triton.cdiv(m, META["BLOCK_N"]), b * hkv)](
        q, k, v, do, lse, delta, dk, dv, kpm, *biases,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), kpm_stride, *bias_strides,
        h, hkv, h // hkv, n, m, float(scale), scalars["softcap"], scalars["window"], rule.dqk, rule.dv,
        scalars["N_BUCKET"], scalars["M_BUCKET"], CAUSAL=bool(causal), COMPUTE_DQK=compute_dqk,
        SOFTCAP_IDENTITY=rule.softcap_identity, **meta)

    if not compute_dqk:
        return torch.zeros_like(q), dk, dv
    dq = buffers.new_output((b, h, n, d), q.dtype, q.device)
    _attn_bwd_dq[lambda META: (triton.cdiv(n, META["BLOCK_M"]), b * h)](
        q, k, v, do, lse, delta, dq, kpm, *biases,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), kpm_stride, *bias_strides,
        h, h // hkv, n, m, float(scale), scalars["softcap"], scalars["window"], rule.dqk,
        scalars["N_BUCKET"], scalars["M_BUCKET"], CAUSAL=bool(causal),
        SOFTCAP_IDENTITY=rule.softcap_identity, **meta)
    return dq, dk, dv
