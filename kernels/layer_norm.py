"""LayerNorm in Triton: torch's forward, LRP backward with the standard deviation held constant.

Plain-PyTorch twin (same rule, same signatures): `layer_norm_torch.py` beside this file.

Rows of length N (the last dimension), everything in float32 inside, rounded once on the store:

    mean = sum(x) / N
    rstd = 1 / sqrt(sum((x - mean)^2) / N + eps)          (two passes: no cancellation)
    y    = (x - mean) * rstd * w + b                       (w = 1, b = 0 when absent)

Backward (AttnLRP / lxt): std is a constant and the centring stays linear, so the contribution of
x_j to y_i is z_ij = w_i (delta_ij - 1/N) x_j * rstd; R_x_j = sum_i z_ij / y_i * R_y_i gives, with
gw = g_y * w,

    g_x = (gw - mean(gw)) * rstd

Tiling as in rms_norm.py: BLOCK_M rows per program, column chunks of BLOCK_N <= 4096. A row that
fits in one chunk (SINGLE) is read once; a longer row is read three times in the forward (sum, sum
of squared deviations, output) and twice in the backward (sum of gw, output).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lrp_triton.kernels import buffers, layer_norm_torch
from lrp_triton.kernels.rms_norm import ROW_CONFIGS, blocks
from lrp_triton.kernels.triton_setup import on_tensor_device


@triton.autotune(configs=ROW_CONFIGS, key=["BLOCK_M", "BLOCK_N", "SINGLE", "HAS_W", "HAS_B"])
@triton.jit
def _layer_norm_fwd(X, W, B, Y, RSTD, n_rows, N, eps,
                    HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    base = rows.to(tl.int64)[:, None] * N  # rows are contiguous
    cols = tl.arange(0, BLOCK_N)
    if SINGLE:  # the whole row in one tile: x is read once
        col_ok = cols < N
        ok = row_ok[:, None] & col_ok[None, :]
        x = tl.load(X + base + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        mean = tl.sum(x, 1) / N
        xc = tl.where(ok, x - mean[:, None], 0.0)  # x - mean, 0 in the padding lanes
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / N + eps)
        y = xc * rstd[:, None]
        if HAS_W:
            y = y * tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_B:
            y = y + tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + base + cols[None, :], y.to(Y.dtype.element_ty), mask=ok)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # pass 1: sum(x)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            ok = row_ok[:, None] & (c[None, :] < N)
            acc += tl.load(X + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
        mean = tl.sum(acc, 1) / N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # pass 2: sum((x - mean)^2)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            ok = row_ok[:, None] & (c[None, :] < N)
            x = tl.load(X + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
            xc = tl.where(ok, x - mean[:, None], 0.0)
            acc += xc * xc
        rstd = 1.0 / tl.sqrt(tl.sum(acc, 1) / N + eps)
        for start in range(0, N, BLOCK_N):  # pass 3: y = (x - mean) * rstd * w + b
            c = start + cols
            col_ok = c < N
            ok = row_ok[:, None] & col_ok[None, :]
            x = tl.load(X + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
            y = (x - mean[:, None]) * rstd[:, None]
            if HAS_W:
                y = y * tl.load(W + c, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            if HAS_B:
                y = y + tl.load(B + c, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(Y + base + c[None, :], y.to(Y.dtype.element_ty), mask=ok)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.autotune(configs=ROW_CONFIGS, key=["BLOCK_M", "BLOCK_N", "SINGLE", "HAS_W"])
@triton.jit
def _layer_norm_bwd(DY, W, RSTD, DX, n_rows, N,
                    HAS_W: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE: tl.constexpr):
    """std held constant: g_x = (gw - mean(gw)) * rstd with gw = g_y * w."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    base = rows.to(tl.int64)[:, None] * N
    cols = tl.arange(0, BLOCK_N)
    rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
    if SINGLE:
        col_ok = cols < N
        ok = row_ok[:, None] & col_ok[None, :]
        gw = tl.load(DY + base + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        if HAS_W:
            gw = gw * tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        mean_gw = tl.sum(gw, 1) / N  # padding lanes hold 0
        dx = (gw - mean_gw[:, None]) * rstd[:, None]
        tl.store(DX + base + cols[None, :], dx.to(DX.dtype.element_ty), mask=ok)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # pass 1: sum(gw)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            col_ok = c < N
            ok = row_ok[:, None] & col_ok[None, :]
            gw = tl.load(DY + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
            if HAS_W:
                gw = gw * tl.load(W + c, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            acc += gw
        mean_gw = tl.sum(acc, 1) / N
        for start in range(0, N, BLOCK_N):  # pass 2: g_x
            c = start + cols
            col_ok = c < N
            ok = row_ok[:, None] & col_ok[None, :]
            gw = tl.load(DY + base + c[None, :], mask=ok, other=0.0).to(tl.float32)
            if HAS_W:
                gw = gw * tl.load(W + c, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            dx = (gw - mean_gw[:, None]) * rstd[:, None]
            tl.store(DX + base + c[None, :], dx.to(DX.dtype.element_ty), mask=ok)


@on_tensor_device
def layer_norm_forward(x, weight, bias, *, eps):
    """Returns (y, rstd): y = F.layer_norm(x, ...) in x's dtype, rstd float32 of shape x.shape[:-1]."""
    n = x.shape[-1]
    x2 = x.contiguous().view(-1, n)
    rows = x2.shape[0]
    y = buffers.new_output(x.shape, x.dtype, x.device)
    rstd = buffers.new_output(x.shape[:-1], torch.float32, x.device)
    if rows and n:
        block_m, block_n, single = blocks(n)
        w = weight.contiguous() if weight is not None else x2  # x2: a never-read dummy pointer
        b = bias.contiguous() if bias is not None else x2
        _layer_norm_fwd[(triton.cdiv(rows, block_m),)](
            x2, w, b, y, rstd, rows, n, float(eps), HAS_W=weight is not None, HAS_B=bias is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, SINGLE=single)
    return y, rstd


@on_tensor_device
def layer_norm_backward(grad_out, weight, rstd, *, dtype):
    """std held constant: g_x = (g_y*w - mean(g_y*w)) * rstd, in `dtype` (the input's)."""
    n = grad_out.shape[-1]
    dy = grad_out.contiguous().view(-1, n)
    rows = dy.shape[0]
    dx = buffers.new_output(grad_out.shape, dtype, grad_out.device)
    if rows and n:
        block_m, block_n, single = blocks(n)
        w = weight.contiguous() if weight is not None else dy
        _layer_norm_bwd[(triton.cdiv(rows, block_m),)](
            dy, w, rstd.contiguous(), dx, rows, n, HAS_W=weight is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, SINGLE=single)
    return dx
