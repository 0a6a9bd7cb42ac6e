"""Flash-style attention in Triton: exact forward, AttnLRP relevance in the backward.

Plain-PyTorch twin (same rules, same signature): `attention_torch.py` beside this file.

Per (batch, head), queries are the last N of M positions (query i sits at position i + M - N):

    S_raw = scale * Q K^T
    S     = c * tanh(S_raw / c) [if softcap] + bias [if bias] + rel[h, j - i + N - 1] [if relative
            bias], -inf where a key is invisible
    P     = softmax(S),   O = P V
    sinks (gpt-oss): P_ij = exp(S_ij) / (exp(s_h) + sum_j' exp(S_ij')), a learned logit s_h per head
            that joins the denominator and attends nowhere (no value: its probability is dropped)

Causal extents (HAS_EXTENT, `causal_extent` int32 [B, N]: PaliGemma's prefix, Gemma 3's image
blocks): query i sees the keys j <= ext[i] (>= its own position), the window bounding the past only,
position(i) - j < window. A query block's key range ends at max(ext) + 1 over the block, its unmasked
interior at the last whole key tile <= min(ext) (`extent_keys`); a key block's query range starts at
first_query[n0] = min{i : ext[i] >= n0} (computed on the host by a cummax and a binary search; it is
non-decreasing in the key, so the block's first key bounds it: `extent_queries`), so that every tile
no query sees is skipped and the interior runs only where every pair is visible. Without extents the
kernels compile exactly as before (HAS_EXTENT is in the autotune key).

Forward (FlashAttention-2): one program per block of queries walks the visible key blocks with an
online softmax (running max m, running sum l, rescaled accumulator) and stores O and the log2
log-sum-exp L = m + log2(l) per row (+inf for a row with no visible key, so that P = 0 there). A sink
joins (m, l) once after the key tiles, so L includes it; the backward kernels then need no change:
P recomputed from L is the sink-normalised one, and D = rowsum(dO * O) = sum_j P_ij dP_ij still holds
because the sink's term has no value (dP = 0). The sink itself receives no gradient (no relevance).

Backward: recompute P = exp2(S * log2(e) - L) tile by tile (no N x M buffer anywhere), with
D = rowsum(dO * O):

    dV     = rule.dv  * P^T dO                               kernel attn_bwd_dkdv
    dS     = P * (dO V^T - D)                                 exact softmax gradient
    dS_raw = dS * (tanh(x)/x  [AttnLRP identity rule]  or  1 - tanh(x)^2 [gradient]),  x = S_raw/c
    dK     = rule.dqk * scale * dS_raw^T Q                   kernel attn_bwd_dkdv (loops over the
                                                             query heads of its kv group: no atomics)
    dQ     = rule.dqk * scale * dS_raw K                     kernel attn_bwd_dq

The value head dim D_v (V, O, dO, dV: its own tile width BLOCK_DV) may differ from the query/key head
dim D (multi-head latent attention, DeepSeek-V2/V3: 128 against 192); the rule does not change.

Tiles of Q, K, V and dO arrive by TMA tensor descriptors (tl.make_tensor_descriptor, zero-filled past the
tensor's rows and head dim) on sm_90+ where the strides allow and the static report shows it pays
(`tma_allowed`, flag USE_TMA), by masked pointer loads otherwise: the same values either way.

AttnLRP folds its constant factors into the epilogue (dqk = 1/4, dv = 1/2); CP-LRP skips dQ and
dK (dqk = 0). Grouped-query attention maps query head h to kv head h // (H / Hkv) in the kernel;
repeated keys are never materialised.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lrp_triton.kernels import buffers
from lrp_triton.kernels.attention_backward import attn_bwd_delta, attn_bwd_dkdv, attn_bwd_dq
from lrp_triton.kernels.attention_tiles import (FWD_CONFIGS, FWD_HOPPER, LOG2E, NEG_INF, TUNE_CAP, TUNE_KEY, extent_keys,
                                             interior_keys, key_range, load_tile, pruner, tile_scores, tile_src,
                                             tma_allowed, visible)
from lrp_triton.kernels.triton_setup import INTERPRETING, ensure_allocator, on_tensor_device
from lrp_triton.rules import ATTENTION_RULES

# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _fwd_tile(acc, m_i, l_i, q, k_src, v_src, offs_m, start_n, d_ok, dv_ok, kpm_base, bias_base, stride_bn, stride_bm,
              rel_base, stride_rm, N, M, scale, qk_scale, softcap, window, ext,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
              HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr, EVEN_D: tl.constexpr,
              EVEN_DV: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
              USE_TMA: tl.constexpr, HAS_EXTENT: tl.constexpr):
    """One key tile of the online softmax: (acc, m, l) after the keys [start_n, start_n + BLOCK_N).

    Interior tiles (MASKED False: every key visible to every query of the block) load without masks
    and, on the plain path (no soft-cap or bias), take the exponent as ONE fused multiply-add per
    score: exp2(qk * scale * log2(e) - m)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    n_ok = offs_n < M
    k_t = load_tile(k_src, 0, start_n, n_ok[None, :], d_ok[:, None], MASKED, not EVEN_D, USE_TMA, False, True,
                    BLOCK_N, BLOCK_N)  # K^T tile [BLOCK_D, BLOCK_N]
    v = load_tile(v_src, 0, start_n, n_ok[:, None], dv_ok[None, :], MASKED, not EVEN_DV, USE_TMA, False, False,
                  BLOCK_N, BLOCK_N)  # V tile [BLOCK_N, BLOCK_DV]
    if DOT_F32:
        k_t = k_t.to(tl.float32)
        v = v.to(tl.float32)
    qk = tl.dot(q, k_t, input_precision=PRECISION)
    if MASKED:
        vis = visible(offs_m[:, None], offs_n[None, :], N, M, window, CAUSAL, HAS_WINDOW, ext[:, None], HAS_EXTENT)
    else:
        vis = offs_n[None, :] >= 0  # (all true; only used with padding or a bias)
    if HAS_KPM:
        keep = tl.load(kpm_base + offs_n, mask=n_ok, other=0)
        vis = vis & (keep[None, :] != 0)
    if HAS_SOFTCAP or HAS_BIAS or HAS_REL:
        _, s = tile_scores(qk, offs_m[:, None], offs_n[None, :], vis, bias_base, stride_bn, stride_bm,
                           rel_base, stride_rm, N, scale, softcap, HAS_SOFTCAP, HAS_BIAS, HAS_REL)
        s = s * LOG2E
    elif MASKED or HAS_KPM:
        s = tl.where(vis, qk * qk_scale, NEG_INF)
    else:
        s = qk  # scaled inside the exponent below
    if MASKED or HAS_KPM or HAS_SOFTCAP or HAS_BIAS or HAS_REL:
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == NEG_INF, 0.0, m_new)  # rows with nothing visible yet: no NaN
        p = tl.exp2(s - m_use[:, None])
    else:  # interior, plain: every row has BLOCK_N finite scores, so the new max is finite
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = m_new
        p = tl.exp2(qk * qk_scale - m_use[:, None])  # one FFMA per element
    alpha = tl.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, m_new, l_i


# the sinks are a forward-only variant (the backward reads them through lse): they join the forward key only
@triton.autotune(configs=FWD_CONFIGS, key=TUNE_KEY + ["HAS_SINKS"],
                 prune_configs_by={"early_config_prune": pruner(FWD_HOPPER)})
@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE, KPM, BIAS, REL, SINKS, EXT, stride_eb,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_kpm_b, stride_bb, stride_bh, stride_bn, stride_bm, stride_rh, stride_rm,
    H, GROUP, N, M, scale, softcap, window, N_BUCKET, M_BUCKET,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_KPM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SINKS: tl.constexpr, USE_TMA: tl.constexpr, HAS_EXTENT: tl.constexpr,
):
    # causal: the last query blocks see the most keys; they start first (heaviest first)
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hk = h // GROUP  # grouped-query attention: kv head of this query head
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D
    EVEN_DV: tl.constexpr = HEAD_DV == BLOCK_DV

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    offs_dv = tl.arange(0, BLOCK_DV)  # the value head dim (V, O) may differ from the query/key one
    dv_ok = offs_dv < HEAD_DV
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    if USE_TMA:  # TMA tensor descriptors of this head's [rows, head dim] slices (tiles zero-filled past the edges)
        q = tl.make_tensor_descriptor(Q + b * stride_qb + h * stride_qh, [N, HEAD_DIM], [stride_qn, 1],
                                      [BLOCK_M, BLOCK_D]).load([m0, 0])
        k_base = tl.make_tensor_descriptor(k_base, [M, HEAD_DIM], [stride_kn, 1], [BLOCK_N, BLOCK_D])
        v_base = tl.make_tensor_descriptor(v_base, [M, HEAD_DV], [stride_vn, 1], [BLOCK_N, BLOCK_DV])
    else:
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None].to(tl.int64) * stride_qn
                    + offs_d[None, :] * stride_qd, mask=(offs_m[:, None] < N) & d_ok[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    kpm_base = KPM + b * stride_kpm_b
    bias_base = BIAS + b * stride_bb + h * stride_bh
    rel_base = REL + h * stride_rh
    qk_scale = scale * LOG2E  # softmax temperature and log2(e) folded into one constant

    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)  # running row max of S * log2(e)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum of exp2(S * log2(e) - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)  # running sum of P V (unnormalised)

    # keys [lo, hi): first the masked boundary tiles [lo, a) and [b, hi) in one run, then the unmasked
    # interior [a, b); tile addresses are a 64-bit scalar base plus loop-invariant 32-bit offsets
    lo, hi = key_range(m0, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    a, b_int = interior_keys(m0, lo, hi, N, M, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    ext = offs_m  # (unused without causal extents)
    if HAS_EXTENT:  # keys j <= ext[i]: the range ends at the block's largest extent (extent_keys)
        ext = tl.load(EXT + b * stride_eb + offs_m, mask=offs_m < N, other=-1)
        hi, b_int = extent_keys(ext, m0, lo, a, N, M, BLOCK_M, BLOCK_N)
    rows = tl.arange(0, BLOCK_N)
    kt_off = rows[None, :] * stride_kn + offs_d[:, None] * stride_kd  # K^T tile [BLOCK_D, BLOCK_N]
    v_off = rows[:, None] * stride_vn + offs_dv[None, :] * stride_vd
    n_lo = tl.cdiv(a - lo, BLOCK_N)  # (a may sit at hi, off the tile grid)
    for t in range(0, n_lo + tl.cdiv(hi - b_int, BLOCK_N)):
        start_n = lo + t * BLOCK_N + (t >= n_lo).to(tl.int32) * (b_int - lo - n_lo * BLOCK_N)
        row0 = tl.cast(start_n, tl.int64)
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, tile_src(k_base, row0, stride_kn, kt_off, USE_TMA),
                                  tile_src(v_base, row0, stride_vn, v_off, USE_TMA), offs_m, start_n, d_ok, dv_ok, kpm_base, bias_base,
                                  stride_bn, stride_bm, rel_base, stride_rm, N, M, scale, qk_scale, softcap, window, ext,
                                  True, CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_KPM, HAS_BIAS, HAS_REL, EVEN_D,
                                  EVEN_DV, DOT_F32, PRECISION, BLOCK_N, USE_TMA, HAS_EXTENT)
    for start_n in range(a, b_int, BLOCK_N):
        row0 = tl.cast(start_n, tl.int64)
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, tile_src(k_base, row0, stride_kn, kt_off, USE_TMA),
                                  tile_src(v_base, row0, stride_vn, v_off, USE_TMA), offs_m, start_n, d_ok, dv_ok, kpm_base, bias_base,
                                  stride_bn, stride_bm, rel_base, stride_rm, N, M, scale, qk_scale, softcap, window, ext,
                                  False, CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_KPM, HAS_BIAS, HAS_REL, EVEN_D,
                                  EVEN_DV, DOT_F32, PRECISION, BLOCK_N, USE_TMA, HAS_EXTENT)

    if HAS_SINKS:  # the head's sink logit joins the running max and sum; it adds nothing to acc (no value)
        sink = tl.load(SINKS + h).to(tl.float32) * LOG2E
        m_new = tl.maximum(m_i, sink)
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.exp2(sink - m_new)
        acc = acc * alpha[:, None]
        m_i = m_new
    empty = l_i == 0.0  # a row whose keys are all masked: output 0, P = 0 in the backward
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    tl.store(O + b * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_on + offs_dv[None, :] * stride_od,
             out.to(O.dtype.element_ty), mask=(offs_m[:, None] < N) & dv_ok[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * N + offs_m, lse, mask=offs_m < N)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------
def _common(q, k, key_padding_mask, bias, relative_bias, sliding_window, softcap, causal_extent=None):
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
        HAS_REL=relative_bias is not None, HAS_EXTENT=causal_extent is not None,
        # float32 inputs: exact float32 products ("ieee", not TF32); for fp16/bf16 tiles the value is unused
        DOT_F32=dot_f32, PRECISION="ieee" if dot_f32 else "tf32",
    )
    # autotune key: lengths by power of two, capped so that long contexts reuse the 16k choice
    # instead of re-tuning (on real data, at full cost) at every new power of two
    scalars = dict(softcap=float(softcap or 1.0), window=int(sliding_window or 0),
                   N_BUCKET=min(triton.next_power_of_2(n), TUNE_CAP), M_BUCKET=min(triton.next_power_of_2(m), TUNE_CAP))
    return kpm, kpm_stride, (bias_t, rel_t), bias_strides + rel_strides, scalars, meta


def _extents(q, k, causal_extent):
    """(ext [B, N] int32, first_query [B, M] int32, their batch strides) or dummies: first_query[b, j] is the least query i
    with ext[b, i] >= j (N if none), by a cummax and a binary search (O(N + M log N) on the device), so that
    a key block's query range starts where its first key is first seen (non-decreasing in j)."""
    if causal_extent is None:
        return q, q, (0, 0)
    ext = causal_extent.to(torch.int32).contiguous()
    reach = torch.cummax(ext, dim=1).values
    keys = torch.arange(k.shape[2], device=q.device, dtype=torch.int32).expand(ext.shape[0], -1).contiguous()
    first = torch.searchsorted(reach, keys).to(torch.int32)
    return ext, first, (ext.stride(0), first.stride(0))


def _value_dims(v):
    """The value head dim D_v (V, O, dO, dV) and its tile width; D_v may differ from D_qk (MLA: 128 vs 192)."""
    return dict(HEAD_DV=v.shape[3], BLOCK_DV=max(16, triton.next_power_of_2(v.shape[3])))


@on_tensor_device
def attention_forward(q, k, v, *, causal, scale, key_padding_mask=None, sliding_window=None,
                      softcap=None, bias=None, relative_bias=None, sinks=None, causal_extent=None):
    """Exact attention. Returns (out [B, H, N, D_v] in q's dtype, lse [B, H, N] float32, log2 units);
    `sinks` [H] (one logit per query head) joins each row's denominator and so its lse."""
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    out = buffers.new_output((b, h, n, v.shape[3]), q.dtype, q.device)
    lse = buffers.new_output((b, h, n), torch.float32, q.device)
    kpm, kpm_stride, biases, bias_strides, scalars, meta = _common(
        q, k, key_padding_mask, bias, relative_bias, sliding_window, softcap, causal_extent)
    meta.update(_value_dims(v))
    ext, _, ext_strides = _extents(q, k, causal_extent)
    grid = lambda META: (triton.cdiv(n, META["BLOCK_M"]), b * h)  # noqa: E731
    tma = tma_allowed("fwd", q, k, v)
    if tma:
        ensure_allocator(q.device)
    _attn_fwd[grid](
        q, k, v, out, lse, kpm, *biases, q if sinks is None else sinks, ext, ext_strides[0], *q.stride(), *k.stride(), *v.stride(),
        *out.stride(), kpm_stride, *bias_strides, h, h // hkv, n, m, float(scale), CAUSAL=bool(causal),
        HAS_SINKS=sinks is not None, USE_TMA=tma, **scalars, **meta)
    return out, lse


@on_tensor_device
def attention_backward(do, q, k, v, out, lse, *, causal, scale, mode, key_padding_mask=None,
                       sliding_window=None, softcap=None, bias=None, relative_bias=None, causal_extent=None):
    """The mode's gradient form (module docstring) for (q, k, v), each in its input's dtype.

    `do` is one cotangent [B, H, N, D_v] or K stacked cotangents [K, B, H, N, D_v] (several explained scores
    through one backward): then dq is [K, B, H, N, D], dk [K, B, Hkv, M, D] and dv [K, B, Hkv, M, D_v]. The
    streams share q, k, v, O and the log-sum-exp; each is one slice of the kernels' third grid axis.
    """
    rule = ATTENTION_RULES[mode]
    b, h, n, d = q.shape
    hkv, m, d_v = k.shape[1], k.shape[2], v.shape[3]
    streams = do.dim() == 5
    if streams and tuple(do.shape[1:]) != (b, h, n, d_v) or not streams and tuple(do.shape) != (b, h, n, d_v):
        raise ValueError(f"attention_backward: do has shape {tuple(do.shape)}; expected {(b, h, n, d_v)} or "
                         f"(K, {b}, {h}, {n}, {d_v})")
    ks = do.shape[0] if streams else 1
    do_strides = tuple(do.stride()) if streams else (0, *do.stride())
    lead = (ks,) if streams else ()
    kpm, kpm_stride, biases, bias_strides, scalars, meta = _common(
        q, k, key_padding_mask, bias, relative_bias, sliding_window, softcap, causal_extent)
    meta.update(_value_dims(v))
    ext, first, ext_strides = _extents(q, k, causal_extent)
    compute_dqk = rule.dqk != 0.0

    tma = {kern: tma_allowed(kern, q, k, v, do) for kern in ("dkdv", "dq")}
    if any(tma.values()):
        ensure_allocator(q.device)
    delta = buffers.new_output((ks, b, h, n), torch.float32, q.device)
    if compute_dqk:  # D = rowsum(dO * O): over the value head dim
        attn_bwd_delta[(triton.cdiv(n, 32), b * h, ks)](
            out, do, delta, *out.stride(), *do_strides, b * h, h, n, HEAD_DIM=d_v, BLOCK_D=meta["BLOCK_DV"],
            BLOCK_M=32)

    dk = buffers.new_output((*lead, b, hkv, m, d), k.dtype, q.device)
    dv = buffers.new_output((*lead, b, hkv, m, d_v), v.dtype, q.device)
    attn_bwd_dkdv[lambda META: (triton.cdiv(m, META["BLOCK_N"]), b * hkv, ks)](
        q, k, v, do, lse, delta, dk, dv, kpm, *biases, ext, first, *ext_strides,
        *q.stride(), *k.stride(), *v.stride(), *do_strides, kpm_stride, *bias_strides,
        b, h, hkv, h // hkv, n, m, float(scale), scalars["softcap"], scalars["window"], rule.dqk, rule.dv,
        scalars["N_BUCKET"], scalars["M_BUCKET"], CAUSAL=bool(causal), COMPUTE_DQK=compute_dqk,
        SOFTCAP_IDENTITY=rule.softcap_identity, USE_TMA=tma["dkdv"], **meta)

    if not compute_dqk:
        return torch.zeros((*lead, b, h, n, d), dtype=q.dtype, device=q.device), dk, dv
    dq = buffers.new_output((*lead, b, h, n, d), q.dtype, q.device)
    attn_bwd_dq[lambda META: (triton.cdiv(n, META["BLOCK_M"]), b * h, ks)](
        q, k, v, do, lse, delta, dq, kpm, *biases, ext, ext_strides[0],
        *q.stride(), *k.stride(), *v.stride(), *do_strides, kpm_stride, *bias_strides,
        b, h, h // hkv, n, m, float(scale), scalars["softcap"], scalars["window"], rule.dqk,
        scalars["N_BUCKET"], scalars["M_BUCKET"], CAUSAL=bool(causal),
        SOFTCAP_IDENTITY=rule.softcap_identity, USE_TMA=tma["dq"], **meta)
    return dq, dk, dv
