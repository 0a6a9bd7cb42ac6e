"""RMSNorm in Triton: HuggingFace's forward, identity-rule (LRP) backward.

Plain-PyTorch twin (same rule, same signatures): `rms_norm_torch.py` beside this file.

Rows of length N (the last dimension), everything in float32 inside:

    rstd = 1 / sqrt(sum(x^2) / N + eps)
    offset == 0 (LlamaRMSNorm):        y = w * (x * rstd).to(x.dtype)     rounded twice, like torch
    offset != 0 (Gemma RMSNorm):       y = (x * rstd) * (offset + w)       rounded once to x.dtype

Backward, identity rule (rms is a constant, R_x = R_y elementwise; no term through rms):

    g_x = g_y * (offset + w) * rstd

Tiling: one program owns BLOCK_M rows and walks them in column chunks of BLOCK_N <= 4096, so any
row length works (hidden sizes of 16384 and more). When a row fits in one chunk (SINGLE) the forward
reads x once; otherwise it reads x twice (sum of squares, then the output).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lrp_triton.kernels import buffers, rms_norm_torch
from lrp_triton.kernels.rms_norm_torch import rms_norm_output_dtype
from lrp_triton.kernels.triton_setup import autotune_configs, on_tensor_device

MAX_BLOCK_N = 4096  # columns of a row one program holds at a time
_TILE = 4096  # elements of one [BLOCK_M, BLOCK_N] tile (rows are batched when they are short)


def _configs():
    """Warp counts on the GPU (keyed on the tile shape); one config under the interpreter."""
    gpu = [triton.Config({}, num_warps=w) for w in (2, 4, 8, 16)]
    return autotune_configs(gpu, triton.Config({}, num_warps=4, num_stages=1))


ROW_CONFIGS = _configs()  # shared with layer_norm.py


def blocks(n: int):
    """(BLOCK_M, BLOCK_N, SINGLE) for rows of length n; shared with layer_norm.py."""
    block_n = min(MAX_BLOCK_N, triton.next_power_of_2(max(n, 1)))
    block_m = max(1, min(64, _TILE // block_n))
    return block_m, block_n, block_n >= n


@triton.jit
def _scale_row(x, rstd, w, offset, X, GEMMA: tl.constexpr):
    """The normalised tile in float32, with HuggingFace's rounding order."""
    h = x * rstd[:, None]
    if GEMMA:  # (x * rstd) * (offset + w) in float32; the store rounds once
        y = h * (offset + w)[None, :]
    else:  # Llama: (x * rstd) rounded to the input dtype, then times w
        y = w[None, :] * h.to(X.dtype.element_ty).to(tl.float32)
    return y


@triton.autotune(configs=ROW_CONFIGS, key=["BLOCK_M", "BLOCK_N", "SINGLE", "GEMMA"])
@triton.jit
def _rms_norm_fwd(X, W, Y, RSTD, n_rows, N, eps, offset,
                  GEMMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    base = rows.to(tl.int64)[:, None] * N  # rows are contiguous
    cols = tl.arange(0, BLOCK_N)
    if SINGLE:  # the whole row in one tile: x is read once
        ok = row_ok[:, None] & (cols[None, :] < N)
        x = tl.load(X + base + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) / N + eps)  # 1 / rms(x)
        w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
        y = _scale_row(x, rstd, w, offset, X, GEMMA)
        tl.store(Y + base + cols[None, :], y.to(Y.dtype.element_ty), mask=ok)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # per-lane partial sums of x^2
        for start in range(0, N, BLOCK_N):
            c = start + cols
            ok = row_ok[:, None] & (c[None, :] < N)
            x = tl.load(X + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
            acc += x * x
        rstd = 1.0 / tl.sqrt(tl.sum(acc, 1) / N + eps)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            ok = row_ok[:, None] & (c[None, :] < N)
            x = tl.load(X + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
            w = tl.load(W + c, mask=c < N, other=0.0).to(tl.float32)
            y = _scale_row(x, rstd, w, offset, X, GEMMA)
            tl.store(Y + base + c[None, :], y.to(Y.dtype.element_ty), mask=ok)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.autotune(configs=ROW_CONFIGS, key=["BLOCK_M", "BLOCK_N"])
@triton.jit
def _rms_norm_bwd(DY, W, RSTD, DX, n_rows, N, offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Identity rule: g_x = g_y * (offset + w) * rstd (elementwise: no reduction needed)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    base = rows.to(tl.int64)[:, None] * N
    cols = tl.arange(0, BLOCK_N)
    rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
    for start in range(0, N, BLOCK_N):
        c = start + cols
        ok = row_ok[:, None] & (c[None, :] < N)
        dy = tl.load(DY + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
        w = offset + tl.load(W + c, mask=c < N, other=0.0).to(tl.float32)
        dx = dy * w[None, :] * rstd[:, None]
        tl.store(DX + base + c[None, :], dx.to(DX.dtype.element_ty), mask=ok)


@on_tensor_device
def rms_norm_forward(x, weight, *, eps, offset):
    """Returns (y, rstd): y as HuggingFace computes it, rstd float32 of shape x.shape[:-1]."""
    n = x.shape[-1]
    x2 = x.contiguous().view(-1, n)
    rows = x2.shape[0]
    y = buffers.new_output(x.shape, rms_norm_output_dtype(x.dtype, weight.dtype, offset), x.device)
    rstd = buffers.new_output(x.shape[:-1], torch.float32, x.device)
    if rows and n:
        block_m, block_n, single = blocks(n)
        _rms_norm_fwd[(triton.cdiv(rows, block_m),)](
            x2, weight.contiguous(), y, rstd, rows, n, float(eps), float(offset),
            GEMMA=offset != 0, BLOCK_M=block_m, BLOCK_N=block_n, SINGLE=single)
    return y, rstd


@on_tensor_device
def rms_norm_backward(grad_out, weight, rstd, *, offset, dtype):
    """Identity rule: g_x = g_y * (offset + w) * rstd, in `dtype` (the input's)."""
    n = grad_out.shape[-1]
    dy = grad_out.contiguous().view(-1, n)
    rows = dy.shape[0]
    dx = buffers.new_output(grad_out.shape, dtype, grad_out.device)
    if rows and n:
        block_m, block_n, _ = blocks(n)
        _rms_norm_bwd[(triton.cdiv(rows, block_m),)](
            dy, weight.contiguous(), rstd.contiguous(), dx, rows, n, float(offset),
            BLOCK_M=block_m, BLOCK_N=block_n)
    return dx
