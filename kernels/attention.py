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

from lrp_triton.kernels import attention_torch
from lrp_triton.kernels.attention_torch import ATTENTION_RULES
from lrp_triton.kernels.triton_setup import INTERPRETING, autotune_configs

_LOG2E = tl.constexpr(1.4426950408889634)
_NEG_INF = tl.constexpr(float("-inf"))


# ----------------------------------------------------------------------------------------------
# Shared tile helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _tanh_over_x(x):
    """tanh(x) / x, 1 at x = 0; tanh written through exp (the interpreter has no libdevice)."""
    # |x| < 0.1: Taylor series tanh(x)/x = 1 - x^2/3 + 2x^4/15 - 17x^6/315 (error < 1e-9);
    # elsewhere tanh(|x|) = (1 - e^{-2|x|}) / (1 + e^{-2|x|}), which never overflows.
    x2 = x * x
    series = 1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 - x2 * (17.0 / 315.0)))
    ax = tl.maximum(tl.abs(x), 0.1)
    e = tl.exp(-2.0 * ax)
    return tl.where(tl.abs(x) < 0.1, series, (1.0 - e) / ((1.0 + e) * ax))


@triton.jit
def _visible(q_idx, k_idx, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """Which (query, key) pairs attend; q_idx and k_idx broadcast against each other."""
    q_pos = q_idx + (M - N)  # bottom-right alignment: the queries are the last N positions
    vis = (q_idx < N) & (k_idx < M)
    if CAUSAL:
        vis = vis & (k_idx <= q_pos)
    if HAS_WINDOW:
        vis = vis & (q_pos - k_idx < window)
    return vis


@triton.jit
def _scores(qk, q_idx, k_idx, vis, bias_base, stride_bn, stride_bm, rel_base, stride_rm, N, scale, softcap,
            HAS_SOFTCAP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr):
    """(S_raw, S) of one tile from the raw dot products qk; S is -inf where not visible."""
    s_raw = qk * scale
    s = s_raw
    if HAS_SOFTCAP:
        s = s_raw * _tanh_over_x(s_raw / softcap)  # c * tanh(S_raw / c)
    if HAS_BIAS:
        s = s + tl.load(bias_base + q_idx.to(tl.int64) * stride_bn + k_idx.to(tl.int64) * stride_bm, mask=vis,
                        other=0.0).to(tl.float32)  # 64-bit offsets: a full bias may exceed 2^31 entries
    if HAS_REL:  # relative-position bias of this head: one value per key - query offset (T5)
        rel = k_idx - q_idx + (N - 1)
        s = s + tl.load(rel_base + rel * stride_rm, mask=vis, other=0.0).to(tl.float32)
    return s_raw, tl.where(vis, s, _NEG_INF)


@triton.jit
def _softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY: tl.constexpr):
    """Factor from dS to dS_raw: identity rule tanh(x)/x, or the derivative 1 - tanh(x)^2."""
    x = s_raw / softcap
    ratio = _tanh_over_x(x)
    if SOFTCAP_IDENTITY:
        return ratio
    t = ratio * x
    return 1.0 - t * t


@triton.jit
def _key_range(m0, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[lo, hi) of keys that some query of the block [m0, m0 + BLOCK_M) can see."""
    lo = 0
    hi = M
    if CAUSAL:  # the block's last query sits at position m0 + BLOCK_M - 1 + M - N
        hi = tl.minimum(M, m0 + BLOCK_M + (M - N))
    if HAS_WINDOW:  # its first query sees keys j > m0 + M - N - window
        lo = tl.maximum(0, m0 + (M - N) - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N
    return lo, hi


@triton.jit
def _query_range(n0, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[lo, hi) of queries that can see some key of the block [n0, n0 + BLOCK_N)."""
    lo = 0
    hi = N
    if CAUSAL:  # key n0 is seen from position n0 on, i.e. from query n0 - (M - N)
        lo = tl.maximum(0, n0 - (M - N))
        lo = (lo // BLOCK_M) * BLOCK_M
    if HAS_WINDOW:  # key n0 + BLOCK_N - 1 is seen up to position n0 + BLOCK_N - 2 + window
        hi = tl.minimum(N, n0 + BLOCK_N - 1 + window - (M - N))
    return lo, hi


# ----------------------------------------------------------------------------------------------
# Autotuning: a few configs on the GPU, exactly one under the interpreter
# ----------------------------------------------------------------------------------------------
def _configs(gpu_blocks, interpreter_blocks):
    """(BLOCK_M, BLOCK_N, warps, stages) tuples as autotune configs; one config when interpreting."""
    gpu = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in gpu_blocks]
    one = triton.Config({"BLOCK_M": interpreter_blocks[0], "BLOCK_N": interpreter_blocks[1]}, num_warps=4, num_stages=1)
    return autotune_configs(gpu, one)


def _prune_for_head_dim(configs, named_args, **kwargs):
    """Tiles that fit in shared memory: smaller for large head dims, and for float32 tiles (twice the
    bytes, exact non-tensor-core products that also compile slowly), which get at most 2 stages."""
    block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D", 128))
    f32 = kwargs.get("DOT_F32", named_args.get("DOT_F32", False))
    limit = 128 * 128 if block_d <= 128 else 64 * 64
    if f32:
        limit = 64 * 64 if block_d <= 64 else (64 * 32 if block_d <= 128 else 32 * 32)
    kept = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= limit
            and (not f32 or c.num_stages <= 2)]
    return kept or [min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_stages))]


_FWD_CONFIGS = _configs(
    [(128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 2), (64, 64, 4, 4),
     (32, 32, 4, 2)], (32, 16))
_BWD_CONFIGS = _configs(
    [(64, 128, 8, 3), (64, 64, 4, 3), (32, 128, 8, 2), (32, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 2)], (16, 32))
# (the smallest entries double as the float32 fallback: see _prune_for_head_dim)
_TUNE_CAP = 16384
_TUNE_KEY = ["N_BUCKET", "M_BUCKET", "BLOCK_D", "CAUSAL", "HAS_WINDOW", "HAS_SOFTCAP", "HAS_KPM", "HAS_BIAS", "HAS_REL"]


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@triton.autotune(configs=_FWD_CONFIGS, key=_TUNE_KEY, prune_configs_by={"early_config_prune": _prune_for_head_dim})
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

    m_i = tl.full([BLOCK_M], _NEG_INF, dtype=tl.float32)  # running row max of S * log2(e)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum of exp2(S * log2(e) - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running sum of P V (unnormalised)

    lo, hi = _key_range(pid_m * BLOCK_M, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < M
        k_t = tl.load(k_base + offs_n[None, :].to(tl.int64) * stride_kn + offs_d[:, None] * stride_kd,
                      mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # K^T tile [BLOCK_D, BLOCK_N]
        if DOT_F32:
            k_t = k_t.to(tl.float32)
        qk = tl.dot(q, k_t, input_precision=PRECISION)
        vis = _visible(offs_m[:, None], offs_n[None, :], N, M, window, CAUSAL, HAS_WINDOW)
        if HAS_KPM:
            keep = tl.load(KPM + b * stride_kpm_b + offs_n, mask=n_ok, other=0)
            vis = vis & (keep[None, :] != 0)
        _, s = _scores(qk, offs_m[:, None], offs_n[None, :], vis, bias_base, stride_bn, stride_bm,
                       rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
        s = s * _LOG2E
        # online softmax: new max, rescale what was accumulated under the old max
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == _NEG_INF, 0.0, m_new)  # rows with nothing visible yet: no NaN
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


@triton.autotune(configs=_BWD_CONFIGS, key=_TUNE_KEY + ["COMPUTE_DQK"],
                 prune_configs_by={"early_config_prune": _prune_for_head_dim})
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
    lo, hi = _query_range(pid_n * BLOCK_N, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
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
            vis = _visible(offs_m[None, :], offs_n[:, None], N, M, window, CAUSAL, HAS_WINDOW)
            vis = vis & (keep[:, None] != 0)
            s_raw, s = _scores(qk_t, offs_m[None, :], offs_n[:, None], vis, bias_base, stride_bn, stride_bm,
                               rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
            p_t = tl.exp2(s * _LOG2E - lse[None, :])  # P^T recomputed from the saved log-sum-exp
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)  # P^T dO
            if COMPUTE_DQK:
                delta = tl.load(DELTA + bh * N + offs_m, mask=m_ok, other=0.0)
                dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (dO V^T)^T
                ds_t = p_t * (dp_t - delta[None, :])  # exact softmax gradient
                if HAS_SOFTCAP:
                    ds_t = ds_t * _softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY)
                dk += tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t), input_precision=PRECISION)  # dS^T Q

    # epilogue: the mode's constant LRP factors (AttnLRP: dK / 4, dV / 2) and the softmax scale
    dk = dk * (scale * dqk_scale)
    dv = dv * dv_scale
    tl.store(DK + pid_bhk.to(tl.int64) * M * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + pid_bhk.to(tl.int64) * M * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.autotune(configs=_FWD_CONFIGS, key=_TUNE_KEY, prune_configs_by={"early_config_prune": _prune_for_head_dim})
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
    lo, hi = _key_range(pid_m * BLOCK_M, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
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
        vis = _visible(offs_m[:, None], offs_n[None, :], N, M, window, CAUSAL, HAS_WINDOW)
        if HAS_KPM:
            keep = tl.load(KPM + b * stride_kpm_b + offs_n, mask=n_ok, other=0)
            vis = vis & (keep[None, :] != 0)
        s_raw, s = _scores(qk, offs_m[:, None], offs_n[None, :], vis, bias_base, stride_bn, stride_bm,
                           rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
        p = tl.exp2(s * _LOG2E - lse[:, None])  # P recomputed from the saved log-sum-exp
        dp = tl.dot(do, v_t, input_precision=PRECISION)  # dO V^T
        ds = p * (dp - delta[:, None])  # exact softmax gradient
        if HAS_SOFTCAP:
            ds = ds * _softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY)
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
                   N_BUCKET=min(triton.next_power_of_2(n), _TUNE_CAP), M_BUCKET=min(triton.next_power_of_2(m), _TUNE_CAP))
    return kpm, kpm_stride, (bias_t, rel_t), bias_strides + rel_strides, scalars, meta


def attention_forward(q, k, v, *, causal, scale, key_padding_mask=None, sliding_window=None,
                      softcap=None, bias=None, relative_bias=None):
    """Exact attention. Returns (out [B, H, N, D] in q's dtype, lse [B, H, N] float32, log2 units)."""
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    out = attention_torch.new_output((b, h, n, d), q.dtype, q.device)
    lse = attention_torch.new_output((b, h, n), torch.float32, q.device)
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

    delta = attention_torch.new_output((b, h, n), torch.float32, q.device)
    if compute_dqk:
        _attn_bwd_delta[(triton.cdiv(n, 32), b * h)](
            out, do, delta, *out.stride(), *do.stride(), h, n, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=32)

    dk = attention_torch.new_output((b, hkv, m, d), k.dtype, q.device)
    dv = attention_torch.new_output((b, hkv, m, d), v.dtype, q.device)
    _attn_bwd_dkdv[lambda META: (triton.cdiv(m, META["BLOCK_N"]), b * hkv)](
        q, k, v, do, lse, delta, dk, dv, kpm, *biases,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), kpm_stride, *bias_strides,
        h, hkv, h // hkv, n, m, float(scale), scalars["softcap"], scalars["window"], rule.dqk, rule.dv,
        scalars["N_BUCKET"], scalars["M_BUCKET"], CAUSAL=bool(causal), COMPUTE_DQK=compute_dqk,
        SOFTCAP_IDENTITY=rule.softcap_identity, **meta)

    if not compute_dqk:
        return torch.zeros_like(q), dk, dv
    dq = attention_torch.new_output((b, h, n, d), q.dtype, q.device)
    _attn_bwd_dq[lambda META: (triton.cdiv(n, META["BLOCK_M"]), b * h)](
        q, k, v, do, lse, delta, dq, kpm, *biases,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), kpm_stride, *bias_strides,
        h, h // hkv, n, m, float(scale), scalars["softcap"], scalars["window"], rule.dqk,
        scalars["N_BUCKET"], scalars["M_BUCKET"], CAUSAL=bool(causal),
        SOFTCAP_IDENTITY=rule.softcap_identity, **meta)
    return dq, dk, dv
