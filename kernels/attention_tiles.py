"""Tile helpers shared by the attention kernels (kernels/attention.py): visibility, scores with
soft-capping and biases, the soft-cap backward factor, the key / query ranges a block visits, and
the autotune configurations (a few on the GPU, exactly one under the interpreter).

The math each helper computes is in kernels/attention.py's docstring; the soft-cap identity ratio
tanh(x)/x is `lrp_triton.rules.tanh_over_x`'s twin, written through exp for the interpreter.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from lrp_triton.kernels.triton_setup import autotune_configs

LOG2E = tl.constexpr(1.4426950408889634)
NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def tanh_over_x(x):
    """tanh(x) / x, 1 at x = 0; tanh written through exp (the interpreter has no libdevice)."""
    # |x| < 0.1: Taylor series tanh(x)/x = 1 - x^2/3 + 2x^4/15 - 17x^6/315 (error < 1e-9);
    # elsewhere tanh(|x|) = (1 - e^{-2|x|}) / (1 + e^{-2|x|}), which never overflows.
    x2 = x * x
    series = 1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 - x2 * (17.0 / 315.0)))
    ax = tl.maximum(tl.abs(x), 0.1)
    e = tl.exp(-2.0 * ax)
    return tl.where(tl.abs(x) < 0.1, series, (1.0 - e) / ((1.0 + e) * ax))


@triton.jit
def visible(q_idx, k_idx, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, ext=0,
            HAS_EXTENT: tl.constexpr = False):
    """Which (query, key) pairs attend; q_idx, k_idx (and `ext`, the queries' causal extents) broadcast
    against each other. The window is |position(i) - j| < window: one-sided (j <= i) when causal,
    symmetric (a local band) otherwise. HAS_EXTENT: j <= ext[i] replaces j <= position(i) and the
    window bounds the past only, position(i) - j < window (a bidirectional block reaches ahead)."""
    q_pos = q_idx + (M - N)  # bottom-right alignment: the queries are the last N positions
    vis = (q_idx < N) & (k_idx < M)
    if HAS_EXTENT:
        vis = vis & (k_idx <= ext)
        if HAS_WINDOW:
            vis = vis & (q_pos - k_idx < window)
    else:
        if CAUSAL:
            vis = vis & (k_idx <= q_pos)
        if HAS_WINDOW:
            vis = vis & (tl.abs(q_pos - k_idx) < window)
    return vis


@triton.jit
def tile_scores(qk, q_idx, k_idx, vis, bias_base, stride_bn, stride_bm, rel_base, stride_rm, N, scale, softcap,
            HAS_SOFTCAP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_REL: tl.constexpr):
    """(S_raw, S) of one tile from the raw dot products qk; S is -inf where not visible."""
    s_raw = qk * scale
    s = s_raw
    if HAS_SOFTCAP:
        s = s_raw * tanh_over_x(s_raw / softcap)  # c * tanh(S_raw / c)
    if HAS_BIAS:
        s = s + tl.load(bias_base + q_idx.to(tl.int64) * stride_bn + k_idx.to(tl.int64) * stride_bm, mask=vis,
                        other=0.0).to(tl.float32)  # 64-bit offsets: a full bias may exceed 2^31 entries
    if HAS_REL:  # relative-position bias of this head: one value per key - query offset (T5)
        rel = k_idx - q_idx + (N - 1)
        s = s + tl.load(rel_base + rel * stride_rm, mask=vis, other=0.0).to(tl.float32)
    return s_raw, tl.where(vis, s, NEG_INF)


@triton.jit
def softcap_grad_factor(s_raw, softcap, SOFTCAP_IDENTITY: tl.constexpr):
    """Factor from dS to dS_raw: identity rule tanh(x)/x, or the derivative 1 - tanh(x)^2."""
    x = s_raw / softcap
    ratio = tanh_over_x(x)
    if SOFTCAP_IDENTITY:
        return ratio
    t = ratio * x
    return 1.0 - t * t


@triton.jit
def key_range(m0, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[lo, hi) of keys that some query of the block [m0, m0 + BLOCK_M) can see."""
    lo = 0
    hi = M
    if CAUSAL:  # the block's last query sits at position m0 + BLOCK_M - 1 + M - N
        hi = tl.minimum(M, m0 + BLOCK_M + (M - N))
    if HAS_WINDOW:  # its first query sees keys j > m0 + M - N - window, its last j < m0 + BLOCK_M - 1 + M - N + window
        lo = tl.maximum(0, m0 + (M - N) - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N
        hi = tl.maximum(tl.minimum(hi, m0 + BLOCK_M - 1 + (M - N) + window), lo)  # (binds without causality)
    return lo, hi


@triton.jit
def query_range(n0, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[lo, hi) of queries that can see some key of the block [n0, n0 + BLOCK_N)."""
    lo = 0
    hi = N
    if CAUSAL:  # key n0 is seen from position n0 on, i.e. from query n0 - (M - N)
        lo = tl.maximum(0, n0 - (M - N))
        lo = (lo // BLOCK_M) * BLOCK_M
    if HAS_WINDOW:  # key n0 + BLOCK_N - 1 is seen up to position n0 + BLOCK_N - 2 + window, key n0 from
        # position n0 - window + 1 on (binds without causality)
        lo = tl.maximum(lo, tl.maximum(0, n0 - (M - N) - window + 1) // BLOCK_M * BLOCK_M)
        hi = tl.maximum(tl.minimum(N, n0 + BLOCK_N - 1 + window - (M - N)), lo)
    return lo, hi


@triton.jit
def interior_keys(m0, lo, hi, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[a, b) inside the key range [lo, hi) (lo a multiple of BLOCK_N) of key blocks that every query
    of the block [m0, m0 + BLOCK_M) sees: no causal, window or bounds mask is needed there.

    Block [n0, n0 + BLOCK_N) is interior when n0 + BLOCK_N <= M, (causal) its last key is visible from
    the first query, n0 + BLOCK_N - 1 <= m0 + M - N, and (window) its first key from the last query,
    m0 + BLOCK_M - 1 + M - N - n0 < window, and (window, binding without causality) its last key from the
    first query, n0 + BLOCK_N - 1 - (m0 + M - N) < window. A query block running past N has no interior
    (its bias and relative-bias loads stay masked)."""
    a = lo
    if HAS_WINDOW:
        first = tl.maximum(m0 + BLOCK_M + (M - N) - window, 0)
        a = tl.maximum(lo, (first + BLOCK_N - 1) // BLOCK_N * BLOCK_N)
    last = M - BLOCK_N  # the largest interior n0
    if CAUSAL:
        last = tl.minimum(last, m0 + (M - N) - BLOCK_N + 1)
    if HAS_WINDOW:
        last = tl.minimum(last, m0 + (M - N) + window - BLOCK_N)
    b = tl.maximum(last + BLOCK_N, 0) // BLOCK_N * BLOCK_N  # (all operands >= 0: floor = truncation)
    if m0 + BLOCK_M > N:
        b = a
    a = tl.minimum(a, hi)
    return a, tl.minimum(tl.maximum(b, a), hi)


@triton.jit
def extent_keys(ext, m0, lo, a, N, M, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(hi, b) for a query block [m0, m0 + BLOCK_M) whose rows see the keys j <= ext[i] (causal extents,
    each >= its row's causal limit; rows past N hold -1): the key range ends at max(ext) + 1 instead of
    the causal diagonal, and the interior [a, b) reaches the last whole key tile below min(ext) + 1
    (every key there is visible to every row: j <= min(ext), and the window's past side is `a`'s)."""
    rows_ok = m0 + tl.arange(0, BLOCK_M) < N
    hi = tl.maximum(tl.minimum(M, tl.max(ext, 0) + 1), lo)
    last = tl.minimum(M - BLOCK_N, tl.min(tl.where(rows_ok, ext, M), 0) + 1 - BLOCK_N)
    b = tl.maximum(last + BLOCK_N, 0) // BLOCK_N * BLOCK_N
    if m0 + BLOCK_M > N:
        b = a
    return hi, tl.minimum(tl.maximum(b, a), hi)


@triton.jit
def extent_queries(first, hi, BLOCK_M: tl.constexpr):
    """(lo, hi) for a key block whose first key n0 is seen first by query `first` (= first_query[n0], the
    least i with ext[i] >= n0, non-decreasing in the key): the query range starts at its tile; the
    window's end `hi` (query_range's) still holds, the window being one-sided."""
    lo = first // BLOCK_M * BLOCK_M
    return lo, tl.maximum(hi, lo)


@triton.jit
def interior_queries(n0, lo, hi, N, M, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[a, b) inside the query range [lo, hi) (lo a multiple of BLOCK_M) of query blocks that see every
    key of the block [n0, n0 + BLOCK_N): the transposed twin of `interior_keys`.

    Block [m0, m0 + BLOCK_M) is interior when m0 + BLOCK_M <= N, (causal) m0 >= n0 + BLOCK_N - 1 - (M - N)
    and (window) m0 <= n0 + window - BLOCK_M - (M - N) and (window, binding without causality)
    m0 >= n0 + BLOCK_N - (M - N) - window. A key block running past M has no interior."""
    a = lo
    if CAUSAL:
        first = tl.maximum(n0 + BLOCK_N - 1 - (M - N), 0)
        a = tl.maximum(lo, (first + BLOCK_M - 1) // BLOCK_M * BLOCK_M)
    if HAS_WINDOW:
        first = tl.maximum(n0 + BLOCK_N - (M - N) - window, 0)
        a = tl.maximum(a, (first + BLOCK_M - 1) // BLOCK_M * BLOCK_M)
    last = N - BLOCK_M
    if HAS_WINDOW:
        last = tl.minimum(last, n0 + window - BLOCK_M - (M - N))
    b = tl.maximum(last + BLOCK_M, 0) // BLOCK_M * BLOCK_M
    if n0 + BLOCK_N > M:
        b = a
    a = tl.minimum(a, hi)
    return a, tl.minimum(tl.maximum(b, a), hi)


@triton.jit
def load_rows(ptrs, rows_ok, cols_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """A tile load with only the masks it needs (interior tiles and head dims equal to BLOCK_D: none)."""
    if MASK_ROWS:
        if MASK_COLS:
            return tl.load(ptrs, mask=rows_ok & cols_ok, other=0.0)
        return tl.load(ptrs, mask=rows_ok, other=0.0)
    if MASK_COLS:
        return tl.load(ptrs, mask=cols_ok, other=0.0)
    return tl.load(ptrs)


@triton.jit
def tile_src(src, row0, stride_row, offs, USE_TMA: tl.constexpr):
    """What a tile load at row row0 reads from: the tensor descriptor itself (TMA), or its pointer tile."""
    if USE_TMA:
        return src
    else:
        return src + row0 * stride_row + offs


@triton.jit
def load_tile(src, head, row, rows_ok, cols_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr,
              USE_TMA: tl.constexpr, HEADED: tl.constexpr, TRANS: tl.constexpr, BLOCK_R: tl.constexpr,
              BLOCK_C: tl.constexpr):
    """A [BLOCK_R, BLOCK_C] tile of rows [row, row + BLOCK_R) (its transpose when TRANS). USE_TMA: `src` is a
    tensor descriptor ([rows, head dim], or [heads, rows, head dim] when HEADED, read at `head`) and the tile
    arrives by TMA, zero-filled past the tensor's rows and head dim (no masks); otherwise `src` is the pointer
    tile (already transposed when TRANS) and the masks are applied as `load_rows` does."""
    if USE_TMA:
        if HEADED:
            t = src.load([head.to(tl.int32), row, 0]).reshape([BLOCK_R, BLOCK_C])
        else:
            t = src.load([row, 0])
        if TRANS:
            t = tl.trans(t)
        return t
    else:
        return load_rows(src, rows_ok, cols_ok, MASK_ROWS, MASK_COLS)


def tma_allowed(kernel, q, k, v, *more) -> bool:
    """Whether attention kernel `kernel` ("fwd", "dq", "dkdv") reads its Q / K / V (/ dO) tiles through TMA tensor
    descriptors: on sm_90+ (`target_arch`) where TMA_SM90 lists the kernel for the head dims' class (as the
    autotune lists: both <= 64, or larger) and every tensor's last dim is contiguous and its other strides
    and base are 16-byte aligned (TMA's rules); pointer loads otherwise. LRP_TRITON_TMA=0: never; =1: every
    kernel wherever the strides allow, on any device (the interpreter runs descriptors too:
    tests/test_attention_tma.py)."""
    mode = os.environ.get("LRP_TRITON_TMA", "auto")
    if mode == "0":
        return False
    if mode != "1":
        arch = target_arch({"Q": q})
        dims = 64 if max(q.shape[-1], v.shape[-1]) <= 64 else 128
        if arch is None or arch < 90 or dims not in TMA_SM90[kernel]:
            return False
    return all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0
               and all(s * t.element_size() % 16 == 0 for s in t.stride()[:-1]) for t in (q, k, v, *more))


# ----------------------------------------------------------------------------------------------
# Autotuning: a few configs on the GPU, exactly one under the interpreter
# ----------------------------------------------------------------------------------------------
def block_configs(gpu_blocks, interpreter_blocks):
    """(BLOCK_M, BLOCK_N, warps, stages) tuples as autotune configs; one config when interpreting."""
    gpu = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in gpu_blocks]
    one = triton.Config({"BLOCK_M": interpreter_blocks[0], "BLOCK_N": interpreter_blocks[1]}, num_warps=4, num_stages=1)
    return autotune_configs(gpu, one)


def target_arch(named_args) -> int | None:
    """Compute capability (90 = sm_90) of the launch's device; LRP_TRITON_TARGET_ARCH (e.g. "90") when
    compiling ahead of time on a machine without one (bench/kernel_report.py); None when unknown."""
    env = os.environ.get("LRP_TRITON_TARGET_ARCH")
    if env:
        return int(env)
    q = named_args.get("Q")
    if isinstance(q, torch.Tensor) and q.is_cuda:
        major, minor = torch.cuda.get_device_capability(q.device)
        return 10 * major + minor
    return None


def pruner(hopper):
    """An early_config_prune: tiles that fit in shared memory (smaller for large head dims, and for float32
    tiles: twice the bytes, exact non-tensor-core products that also compile slowly, at most 2 stages);
    on sm_90 only the `hopper` (BLOCK_M, BLOCK_N, warps, stages) entries, chosen by the static kernel report
    (bench/results/kernel_report_static_sm90a.md: warpgroup MMA, no spills, launchable, lean hot loops)."""
    def prune(configs, named_args, **kwargs):
        block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D", 128))
        block_d = max(block_d, kwargs.get("BLOCK_DV", named_args.get("BLOCK_DV", block_d)))  # V tiles too
        f32 = kwargs.get("DOT_F32", named_args.get("DOT_F32", False))
        limit = 128 * 128 if block_d <= 128 else 64 * 64
        if f32:
            limit = 64 * 64 if block_d <= 64 else (64 * 32 if block_d <= 128 else 32 * 32)
        kept = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= limit
                and (not f32 or c.num_stages <= 2)]
        arch = target_arch(named_args)
        if not f32 and arch is not None and arch // 10 == 9:
            entry = lambda c: (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)  # noqa: E731
            kept = [c for c in kept if entry(c) in hopper[64 if block_d <= 64 else 128]] or kept
        return kept or [min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_stages))]
    return prune


# Every config a GPU may try; the smallest entries double as the float32 fallback.
FWD_CONFIGS = block_configs(
    [(128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (128, 32, 4, 3), (64, 64, 4, 3),
     (64, 32, 4, 2), (64, 64, 4, 4), (32, 32, 4, 2)], (32, 16))
DQ_CONFIGS = block_configs(
    [(128, 64, 8, 3), (128, 64, 8, 2), (128, 128, 8, 2), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3),
     (64, 32, 4, 2), (32, 32, 4, 2)], (32, 16))
BWD_CONFIGS = block_configs(
    [(64, 128, 8, 3), (64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 8, 3), (64, 64, 8, 2), (32, 64, 8, 2),
     (16, 128, 8, 2), (64, 64, 4, 3), (64, 64, 4, 2), (32, 64, 4, 2), (32, 128, 8, 1), (32, 64, 4, 1),
     (64, 64, 8, 1), (64, 32, 4, 2), (32, 32, 4, 2)], (16, 32))
# sm_90 choices per head dim (BLOCK_D <= 64 / larger), from the static report: warpgroup MMA (no 32-row MMA
# tiles, which fall back to mma.sync), launchable, no spills, the leanest hot loops. The dK-dV kernel at head
# dim 128 keeps two [BLOCK_N, 128] float32 accumulators and its K, V tiles: only single-stage configs fit
# its 255 registers without spilling (two stages spill 4-40 bytes).
FWD_HOPPER = {64: [(128, 128, 8, 3), (128, 128, 8, 2)], 128: [(128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 4, 4)]}
DQ_HOPPER = {64: [(128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3)],
             128: [(128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3)]}
BWD_HOPPER = {64: [(64, 128, 8, 3), (64, 128, 8, 2), (64, 64, 4, 2)], 128: [(32, 128, 8, 1), (32, 64, 4, 1)]}
# head-dim classes where a kernel's TMA variant has, in the static report, a best launchable hot loop at least
# as lean (issue/tensor ratio, causal and not) as its pointer-load variant on sm_90 (see tma_allowed)
TMA_SM90 = {"fwd": (128,), "dq": (64, 128), "dkdv": (64,)}
TUNE_CAP = 16384
TUNE_KEY = ["N_BUCKET", "M_BUCKET", "BLOCK_D", "BLOCK_DV", "CAUSAL",
            "HAS_WINDOW", "HAS_SOFTCAP", "HAS_KPM", "HAS_BIAS", "HAS_REL", "USE_TMA", "HAS_EXTENT"]
