"""Plain-PyTorch twin of `layer_norm.py`: LayerNorm forward, LRP backward with std held constant.

This is the `backend="torch"` path of `lrp_triton.ops.lrp_layer_norm` (the CPU fallback and the
second reference of the Triton kernel). Same rule, same signatures.

Forward, per row x of length n: torch.nn.functional.layer_norm,

    mean = sum(x) / n,   rstd = 1 / sqrt(sum((x - mean)^2) / n + eps),   y = w * (x - mean) * rstd + b

Backward: std is a constant, the centring x - mean stays linear (AttnLRP / lxt), i.e. the
contribution of x_j to y_i is z_ij = w_i (delta_ij - 1/n) x_j * rstd (the bias absorbs its share) and
R_x_j = sum_i z_ij / y_i * R_y_i. In gradient form, with gw = g_y * w:

    g_x = (gw - mean(gw)) * rstd

Only the per-row rstd (float32 or float64, x.shape[:-1]) is kept for the backward: g_x does not need x.
"""

from __future__ import annotations

import torch



def layer_norm_forward_torch(x: torch.Tensor, weight, bias, *, eps: float):
    """Returns (y, rstd): y = F.layer_norm(x, ...) in x's dtype, rstd [...] float32 (float64 for float64 x)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    y, _, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
    if rstd.dtype != acc:  # some builds keep the statistics in a bf16/fp16 input's dtype
        rstd = torch.rsqrt(torch.var(x.to(acc), dim=-1, unbiased=False) + eps)
    return y, rstd.reshape(x.shape[:-1])


def layer_norm_backward_torch(grad_out: torch.Tensor, weight, rstd: torch.Tensor, *,
                              dtype: torch.dtype) -> torch.Tensor:
    """std held constant: g_x = (g_y*w - mean(g_y*w)) * rstd, in `dtype` (the input's)."""
    gw = grad_out.to(rstd.dtype)
    if weight is not None:
        gw = gw * weight.to(rstd.dtype)
    return ((gw - gw.mean(-1, keepdim=True)) * rstd.unsqueeze(-1)).to(dtype)
