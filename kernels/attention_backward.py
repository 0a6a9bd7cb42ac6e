"""The attention backward kernels (the math is in kernels/attention.py's docstring; launched by its
`attention_backward`).

Every kernel has a third grid axis over cotangent streams: dO may be K stacked cotangents
[K, B, H, N, D] (several explained scores in one backward), q, k, v, O and the log-sum-exp are shared,
and every output has a leading K. Each kernel walks its range of tiles in two runs: the masked
boundary tiles (diagonal, window edge, lengths that are not a multiple of the block), then an
unmasked interior (`interior_keys` / `interior_queries`: no causal, window or bounds masks, the
exponent one fused multiply-add exp2(qk * scale * log2(e) - L)).
dQ is its own kernel (7 matmuls per tile pair, where FlashAttention-2 has 5): dQ accumulated by
atomics from the dK-dV kernel would make relevance on a GPU non-deterministic.
"""

from __future__ import annotations

import triton
import triton.language as tl

from lrp_triton.kernels.attention_tiles import (BWD_CONFIGS, BWD_HOPPER, DQ_CONFIGS, DQ_HOPPER, LOG2E, NEG_INF, TUNE_KEY,
                                             extent_keys, extent_queries, interior_keys, interior_queries,
                                             key_range, load_tile, pruner, query_range, softcap_grad_factor,
                                             tile_scores, tile_src, visible)


@triton.jit
def attn_bwd_delta(
    O, DO, DELTA, stride_ob, stride_oh, stride_on, stride_od,
    stride_dok, stride_dob, stride_doh, stride_don, stride_dod, BH, H, N,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """D = rowsum(dO * O), the softmax-gradient correction of each query row (per stream)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_k = tl.program_id(2).to(tl.int64)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m[:, None] < N) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_on + offs_d[None, :] * stride_od,
                mask=ok, other=0.0).to(tl.float32)
    do = tl.load(DO + pid_k * stride_dok + b * stride_dob + h * stride_doh + offs_m[:, None].to(tl.int64) * stride_don
                 + offs_d[None, :] * stride_dod, mask=ok, other=0.0).to(tl.float32)
    tl.store(DELTA + (pid_k * BH + pid_bh) * N + offs_m, tl.sum(o * do, 1), mask=offs_m < N)


@triton.jit
def _dkdv_tile(dk, dv, k, v, keep, q_src, do_src, hq, lse_row, delta_row, offs_n, start_m, d_ok, dv_ok, bias_base,
               stride_bn, stride_bm, rel_base, stride_rm, N, M, scale, qk_scale, softcap, window, ext_base,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
               HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr, COMPUTE_DQK: tl.constexpr,
               SOFTCAP_IDENTITY: tl.constexpr, EVEN_D: tl.constexpr, EVEN_DV: tl.constexpr, DOT_F32: tl.constexpr,
               PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, USE_TMA: tl.constexpr, HAS_EXTENT: tl.constexpr):
    """One query tile (query head hq) of the dK-dV accumulation, in transposed tiles [BLOCK_N, BLOCK_M]
    (rows: keys); q_src, do_src: pointer tiles, or (USE_TMA) [heads, rows, head dim] tensor descriptors.

    Interior tiles (MASKED False) need no masks: rows past N do not occur there, and keys past M
    only feed rows of dK, dV that are never stored."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    m_ok = offs_m < N
    q_t = load_tile(q_src, hq, start_m, m_ok[None, :], d_ok[:, None], MASKED, not EVEN_D, USE_TMA, True, True,
                    BLOCK_M, k.shape[1])  # Q^T tile [BLOCK_D, BLOCK_M]
    do = load_tile(do_src, hq, start_m, m_ok[:, None], dv_ok[None, :], MASKED, not EVEN_DV, USE_TMA, True, False,
                   BLOCK_M, v.shape[1])  # dO tile [BLOCK_M, BLOCK_DV]
    if DOT_F32:
        q_t = q_t.to(tl.float32)
        do = do.to(tl.float32)
    if MASKED:
        lse = tl.load(lse_row + tl.arange(0, BLOCK_M), mask=m_ok, other=float("inf"))  # rows past N: P = 0
    else:
        lse = tl.load(lse_row + tl.arange(0, BLOCK_M))
    qk_t = tl.dot(k, q_t, input_precision=PRECISION)
    s_raw = qk_t
    if HAS_SOFTCAP or HAS_BIAS or HAS_REL or MASKED:
        if MASKED:
            ext = offs_m  # (unused without causal extents)
            if HAS_EXTENT:
                ext = tl.load(ext_base + offs_m, mask=m_ok, other=-1)
            vis = visible(offs_m[None, :], offs_n[:, None], N, M, window, CAUSAL, HAS_WINDOW, ext[None, :],
                          HAS_EXTENT)
        else:
            vis = offs_m[None, :] >= 0  # (all true)
        vis = vis & (keep[:, None] != 0)
        if HAS_SOFTCAP or HAS_BIAS or HAS_REL:
            s_raw, s = tile_scores(qk_t, offs_m[None, :], offs_n[:, None], vis, bias_base, stride_bn, stride_bm,
                                   rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
            p_t = tl.exp2(s * LOG2E - lse[None, :])  # P^T recomputed from the saved log-sum-exp
        else:
            p_t = tl.exp2(tl.where(vis, qk_t * qk_scale, NEG_INF) - lse[None, :])
    else:
        p_t = tl.exp2(qk_t * qk_scale - lse[None, :])  # one FFMA per element
        if HAS_KPM:
            p_t = tl.where(keep[:, None] != 0, p_t, 0.0)
    dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)  # P^T dO
    if COMPUTE_DQK:
        if MASKED:
            delta = tl.load(delta_row + tl.arange(0, BLOCK_M), mask=m_ok, other=0.0)
        else:
            delta = tl.load(delta_row + tl.arange(0, BLOCK_M))
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (dO V^T)^T
        ds_t = p_t * (dp_t - delta[None, :])  # exact softmax gradient
        if HAS_SOFTCAP:
            ds_t = ds_t * softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY)
        dk += tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t), input_precision=PRECISION)  # dS^T Q
    return dk, dv


@triton.jit
def _head_tile(Q, DO, LSE, DELTA, BIAS, REL, qt_off, do_off, b, h, pid_k, start_m, B, H, N, stride_qb, stride_qh,
               stride_qn, stride_dok, stride_dob, stride_doh, stride_don, stride_bb, stride_bh, stride_rh):
    """Where query head h's tile at query start_m lives: Q^T and dO tile pointers, its log-sum-exp and
    delta entries, its bias and relative-bias bases."""
    row0 = tl.cast(start_m, tl.int64)
    bh = b * H + h
    q_ptrs = Q + b * stride_qb + h * stride_qh + row0 * stride_qn + qt_off
    do_ptrs = DO + pid_k * stride_dok + b * stride_dob + h * stride_doh + row0 * stride_don + do_off
    return (q_ptrs, do_ptrs, LSE + bh * N + start_m, DELTA + (pid_k * B * H + bh) * N + start_m,
            BIAS + b * stride_bb + h * stride_bh, REL + h * stride_rh)


@triton.autotune(configs=BWD_CONFIGS, key=TUNE_KEY + ["COMPUTE_DQK"],
                 prune_configs_by={"early_config_prune": pruner(BWD_HOPPER)})
@triton.jit
def attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV, KPM, BIAS, REL, EXT, FIRST, stride_eb, stride_fb,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dok, stride_dob, stride_doh, stride_don, stride_dod,
    stride_kpm_b, stride_bb, stride_bh, stride_bn, stride_bm, stride_rh, stride_rm,
    B, H, HKV, GROUP, N, M, scale, softcap, window, dqk_scale, dv_scale, N_BUCKET, M_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr,
    COMPUTE_DQK: tl.constexpr, SOFTCAP_IDENTITY: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_TMA: tl.constexpr, HAS_EXTENT: tl.constexpr,
):
    """dK and dV of one block of keys of one kv head (one stream), summed over the query heads of its group."""
    pid_n = tl.program_id(0)  # causal: the first key blocks are seen by the most queries, and start first
    pid_bhk = tl.program_id(1)
    pid_k = tl.program_id(2).to(tl.int64)
    b = (pid_bhk // HKV).to(tl.int64)
    hk = (pid_bhk % HKV).to(tl.int64)
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D
    EVEN_DV: tl.constexpr = HEAD_DV == BLOCK_DV

    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)  # the value head dim (V, dO, dV) may differ from the query/key one
    n_ok = offs_n < M
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DV
    kv_mask = n_ok[:, None] & d_ok[None, :]
    v_mask = n_ok[:, None] & dv_ok[None, :]
    k = tl.load(K + b * stride_kb + hk * stride_kh + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :] * stride_kd,
                mask=kv_mask, other=0.0)
    v = tl.load(V + b * stride_vb + hk * stride_vh + offs_n[:, None].to(tl.int64) * stride_vn
                + offs_dv[None, :] * stride_vd, mask=v_mask, other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    keep = tl.full([BLOCK_N], 1, dtype=tl.int8)
    if HAS_KPM:
        keep = tl.load(KPM + b * stride_kpm_b + offs_n, mask=n_ok, other=0).to(tl.int8)
    qk_scale = scale * LOG2E

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    # queries [lo, hi): the masked boundary tiles [lo, a) and [b, hi) in one run, then the unmasked interior
    # [a, b); each run walks the query heads of the kv group one after the other as ONE loop (head g, tile
    # j carried as counters: no nested loop, whose live state would spill the accumulators); addresses:
    # a 64-bit scalar base plus 32-bit tile offsets
    lo, hi = query_range(n0, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    if HAS_EXTENT:  # the first query that sees key n0 (host: first_query), the window's end unchanged
        lo, hi = extent_queries(tl.load(FIRST + b * stride_fb + n0), hi, BLOCK_M)
    a, b_int = interior_queries(n0, lo, hi, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    n_lo = tl.cdiv(a - lo, BLOCK_M)  # (a may sit at hi, off the tile grid)
    n_bnd = n_lo + tl.cdiv(hi - b_int, BLOCK_M)
    n_int = tl.cdiv(b_int - a, BLOCK_M)
    rows = tl.arange(0, BLOCK_M)
    qt_off = rows[None, :] * stride_qn + offs_d[:, None] * stride_qd  # Q^T tile [BLOCK_D, BLOCK_M]
    do_off = rows[:, None] * stride_don + offs_dv[None, :] * stride_dod
    if USE_TMA:  # descriptors of this batch's [heads, rows, head dim] Q and dO (of this stream): TMA tiles
        q_desc = tl.make_tensor_descriptor(Q + b * stride_qb, [H, N, HEAD_DIM], [stride_qh, stride_qn, 1],
                                           [1, BLOCK_M, BLOCK_D])
        do_desc = tl.make_tensor_descriptor(DO + pid_k * stride_dok + b * stride_dob, [H, N, HEAD_DV],
                                            [stride_doh, stride_don, 1], [1, BLOCK_M, BLOCK_DV])
    ext_base = EXT + b * stride_eb
    g = 0
    j = 0
    for _ in range(0, GROUP * n_bnd):
        start_m = lo + j * BLOCK_M + (j >= n_lo).to(tl.int32) * (b_int - lo - n_lo * BLOCK_M)
        q_ptrs, do_ptrs, lse_ptr, delta_ptr, bias_base, rel_base = _head_tile(
            Q, DO, LSE, DELTA, BIAS, REL, qt_off, do_off, b, hk * GROUP + g, pid_k, start_m, B, H, N, stride_qb,
            stride_qh, stride_qn, stride_dok, stride_dob, stride_doh, stride_don, stride_bb, stride_bh, stride_rh)
        if USE_TMA:
            q_ptrs = q_desc
            do_ptrs = do_desc
        dk, dv = _dkdv_tile(dk, dv, k, v, keep, q_ptrs, do_ptrs, hk * GROUP + g, lse_ptr, delta_ptr, offs_n, start_m, d_ok, dv_ok,
                            bias_base, stride_bn, stride_bm, rel_base, stride_rm, N, M, scale, qk_scale, softcap, window,
                            ext_base, True, CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_KPM, HAS_BIAS, HAS_REL,
                            COMPUTE_DQK, SOFTCAP_IDENTITY, EVEN_D, EVEN_DV, DOT_F32, PRECISION, BLOCK_M, USE_TMA,
                            HAS_EXTENT)
        j += 1
        g = tl.where(j == n_bnd, g + 1, g)
        j = tl.where(j == n_bnd, 0, j)
    # interior: the tile pointers of head g's tile j are stepped, not recomputed: one tile down, or to the
    # next head's first interior tile when j wraps (scalar selects)
    q_row, do_row, lse_row, delta_row, bias_base, rel_base = _head_tile(
        Q, DO, LSE, DELTA, BIAS, REL, 0, 0, b, hk * GROUP, pid_k, a, B, H, N, stride_qb, stride_qh, stride_qn,
        stride_dok, stride_dob, stride_doh, stride_don, stride_bb, stride_bh, stride_rh)
    back = tl.cast(n_int - 1, tl.int64) * BLOCK_M  # rows from the last interior tile back to the first
    if USE_TMA:
        q_row = q_desc
        do_row = do_desc
    start_m = a
    j = 0
    hq = hk * GROUP
    for _ in range(0, GROUP * n_int):
        dk, dv = _dkdv_tile(dk, dv, k, v, keep, tile_src(q_row, 0, 0, qt_off, USE_TMA),
                            tile_src(do_row, 0, 0, do_off, USE_TMA), hq, lse_row, delta_row, offs_n, start_m,
                            d_ok, dv_ok, bias_base, stride_bn, stride_bm, rel_base, stride_rm, N, M, scale, qk_scale,
                            softcap, window, ext_base, False, CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_KPM, HAS_BIAS,
                            HAS_REL, COMPUTE_DQK, SOFTCAP_IDENTITY, EVEN_D, EVEN_DV, DOT_F32, PRECISION, BLOCK_M,
                            USE_TMA, HAS_EXTENT)
        j += 1
        wrap = j == n_int
        j = tl.where(wrap, 0, j)
        start_m = tl.where(wrap, a, start_m + BLOCK_M)
        hq = tl.where(wrap, hq + 1, hq)
        if not USE_TMA:
            q_row += tl.where(wrap, stride_qh - back * stride_qn, BLOCK_M * stride_qn)
            do_row += tl.where(wrap, stride_doh - back * stride_don, BLOCK_M * stride_don)
        lse_row += tl.where(wrap, N - back, BLOCK_M)
        delta_row += tl.where(wrap, N - back, BLOCK_M)
        bias_base += tl.where(wrap, stride_bh, 0)
        rel_base += tl.where(wrap, stride_rh, 0)

    # epilogue: the mode's constant LRP factors (AttnLRP: dK / 4, dV / 2) and the softmax scale
    dk = dk * (scale * dqk_scale)
    dv = dv * dv_scale
    out = (pid_k * B * HKV + pid_bhk) * M * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=kv_mask)
    out_v = (pid_k * B * HKV + pid_bhk) * M * HEAD_DV + offs_n[:, None] * HEAD_DV + offs_dv[None, :]
    tl.store(DV + out_v, dv.to(DV.dtype.element_ty), mask=v_mask)


@triton.jit
def _dq_tile(dq, q, do, lse, delta, k_src, v_src, offs_m, start_n, d_ok, dv_ok, kpm_base, bias_base, stride_bn,
             stride_bm, rel_base, stride_rm, N, M, scale, qk_scale, softcap, window, ext,
             MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
             HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr, SOFTCAP_IDENTITY: tl.constexpr,
             EVEN_D: tl.constexpr, EVEN_DV: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
             BLOCK_N: tl.constexpr, USE_TMA: tl.constexpr, HAS_EXTENT: tl.constexpr):
    """One key tile of the dQ accumulation (interior tiles as in `_fwd_tile`: no masks, one FFMA exponent)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    n_ok = offs_n < M
    k_t = load_tile(k_src, 0, start_n, n_ok[None, :], d_ok[:, None], MASKED, not EVEN_D, USE_TMA, False, True,
                    BLOCK_N, BLOCK_N)  # K^T tile [BLOCK_D, BLOCK_N]
    v_t = load_tile(v_src, 0, start_n, n_ok[None, :], dv_ok[:, None], MASKED, not EVEN_DV, USE_TMA, False, True,
                    BLOCK_N, BLOCK_N)  # V^T tile [BLOCK_DV, BLOCK_N]
    if DOT_F32:
        k_t = k_t.to(tl.float32)
        v_t = v_t.to(tl.float32)
    qk = tl.dot(q, k_t, input_precision=PRECISION)
    s_raw = qk
    if HAS_SOFTCAP or HAS_BIAS or HAS_REL or MASKED or HAS_KPM:
        if MASKED:
            vis = visible(offs_m[:, None], offs_n[None, :], N, M, window, CAUSAL, HAS_WINDOW, ext[:, None],
                          HAS_EXTENT)
        else:
            vis = offs_n[None, :] >= 0  # (all true)
        if HAS_KPM:
            keep = tl.load(kpm_base + offs_n, mask=n_ok, other=0)
            vis = vis & (keep[None, :] != 0)
        if HAS_SOFTCAP or HAS_BIAS or HAS_REL:
            s_raw, s = tile_scores(qk, offs_m[:, None], offs_n[None, :], vis, bias_base, stride_bn, stride_bm,
                                   rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
            p = tl.exp2(s * LOG2E - lse[:, None])  # P recomputed from the saved log-sum-exp
        else:
            p = tl.exp2(tl.where(vis, qk * qk_scale, NEG_INF) - lse[:, None])
    else:
        p = tl.exp2(qk * qk_scale - lse[:, None])  # one FFMA per element
    dp = tl.dot(do, v_t, input_precision=PRECISION)  # dO V^T
    ds = p * (dp - delta[:, None])  # exact softmax gradient
    if HAS_SOFTCAP:
        ds = ds * softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY)
    dq += tl.dot(ds.to(k_t.dtype), tl.trans(k_t), input_precision=PRECISION)  # dS K
    return dq


@triton.autotune(configs=DQ_CONFIGS, key=TUNE_KEY, prune_configs_by={"early_config_prune": pruner(DQ_HOPPER)})
@triton.jit
def attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, KPM, BIAS, REL, EXT, stride_eb,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dok, stride_dob, stride_doh, stride_don, stride_dod,
    stride_kpm_b, stride_bb, stride_bh, stride_bn, stride_bm, stride_rh, stride_rm,
    B, H, GROUP, N, M, scale, softcap, window, dqk_scale, N_BUCKET, M_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr,
    SOFTCAP_IDENTITY: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_TMA: tl.constexpr, HAS_EXTENT: tl.constexpr,
):
    """dQ of one block of queries of one head (one stream)."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)  # heaviest first
    pid_bh = tl.program_id(1)
    pid_k = tl.program_id(2).to(tl.int64)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hk = h // GROUP
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D
    EVEN_DV: tl.constexpr = HEAD_DV == BLOCK_DV

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)  # the value head dim (V, dO) may differ from the query/key one
    m_ok = offs_m < N
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DV
    q_mask = m_ok[:, None] & d_ok[None, :]
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    if USE_TMA:  # TMA tensor descriptors of this head's [rows, head dim] slices (tiles zero-filled past the edges)
        q = tl.make_tensor_descriptor(Q + b * stride_qb + h * stride_qh, [N, HEAD_DIM], [stride_qn, 1],
                                      [BLOCK_M, BLOCK_D]).load([m0, 0])
        do = tl.make_tensor_descriptor(DO + pid_k * stride_dok + b * stride_dob + h * stride_doh, [N, HEAD_DV],
                                       [stride_don, 1], [BLOCK_M, BLOCK_DV]).load([m0, 0])
        k_base = tl.make_tensor_descriptor(k_base, [M, HEAD_DIM], [stride_kn, 1], [BLOCK_N, BLOCK_D])
        v_base = tl.make_tensor_descriptor(v_base, [M, HEAD_DV], [stride_vn, 1], [BLOCK_N, BLOCK_DV])
    else:
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None].to(tl.int64) * stride_qn
                    + offs_d[None, :] * stride_qd, mask=q_mask, other=0.0)
        do = tl.load(DO + pid_k * stride_dok + b * stride_dob + h * stride_doh + offs_m[:, None].to(tl.int64)
                     * stride_don + offs_dv[None, :] * stride_dod, mask=m_ok[:, None] & dv_ok[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + pid_bh.to(tl.int64) * N + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + (pid_k * B * H + pid_bh) * N + offs_m, mask=m_ok, other=0.0)
    kpm_base = KPM + b * stride_kpm_b
    bias_base = BIAS + b * stride_bb + h * stride_bh
    rel_base = REL + h * stride_rh
    qk_scale = scale * LOG2E

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    # keys [lo, hi): the masked boundary tiles in one run, then the unmasked interior (as in the forward)
    lo, hi = key_range(m0, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    a, b_int = interior_keys(m0, lo, hi, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    ext = offs_m  # (unused without causal extents)
    if HAS_EXTENT:  # as in the forward: keys up to the block's largest extent
        ext = tl.load(EXT + b * stride_eb + offs_m, mask=m_ok, other=-1)
        hi, b_int = extent_keys(ext, m0, lo, a, N, M, BLOCK_M, BLOCK_N)
    rows = tl.arange(0, BLOCK_N)
    kt_off = rows[None, :] * stride_kn + offs_d[:, None] * stride_kd  # K^T, V^T tiles [BLOCK_D, BLOCK_N]
    vt_off = rows[None, :] * stride_vn + offs_dv[:, None] * stride_vd
    n_lo = tl.cdiv(a - lo, BLOCK_N)  # (a may sit at hi, off the tile grid)
    for t in range(0, n_lo + tl.cdiv(hi - b_int, BLOCK_N)):
        start_n = lo + t * BLOCK_N + (t >= n_lo).to(tl.int32) * (b_int - lo - n_lo * BLOCK_N)
        row0 = tl.cast(start_n, tl.int64)
        dq = _dq_tile(dq, q, do, lse, delta, tile_src(k_base, row0, stride_kn, kt_off, USE_TMA),
                      tile_src(v_base, row0, stride_vn, vt_off, USE_TMA),
                      offs_m, start_n, d_ok, dv_ok, kpm_base, bias_base, stride_bn, stride_bm, rel_base, stride_rm, N, M,
                      scale, qk_scale, softcap, window, ext, True, CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_KPM, HAS_BIAS,
                      HAS_REL, SOFTCAP_IDENTITY, EVEN_D, EVEN_DV, DOT_F32, PRECISION, BLOCK_N, USE_TMA, HAS_EXTENT)
    for start_n in range(a, b_int, BLOCK_N):
        row0 = tl.cast(start_n, tl.int64)
        dq = _dq_tile(dq, q, do, lse, delta, tile_src(k_base, row0, stride_kn, kt_off, USE_TMA),
                      tile_src(v_base, row0, stride_vn, vt_off, USE_TMA),
                      offs_m, start_n, d_ok, dv_ok, kpm_base, bias_base, stride_bn, stride_bm, rel_base, stride_rm, N, M,
                      scale, qk_scale, softcap, window, ext, False, CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_KPM, HAS_BIAS,
                      HAS_REL, SOFTCAP_IDENTITY, EVEN_D, EVEN_DV, DOT_F32, PRECISION, BLOCK_N, USE_TMA, HAS_EXTENT)

    dq = dq * (scale * dqk_scale)  # epilogue: AttnLRP dQ / 4 and the softmax scale
    tl.store(DQ + (pid_k * B * H + pid_bh) * N * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=q_mask)
