"""Plain-PyTorch twin of `rms_norm.py`: RMSNorm forward, identity-rule (LRP) backward.

This is the `backend="torch"` path of `lrp_triton.ops.lrp_rms_norm` (the CPU fallback and the
second reference of the Triton kernel). Same rule, same signatures.

Forward, per row x of length n (float32 inside, float64 for float64 x; rstd = 1 / rms(x)):

    rstd = 1 / sqrt(mean(x^2) + eps)
    offset == 0 (HuggingFace LlamaRMSNorm order):   y = w * (x * rstd).to(x.dtype)
                                                    (dtype of y: promote(w.dtype, x.dtype))
    offset != 0 (Gemma/Gemma2/Gemma3RMSNorm order): y = ((x * rstd) * (offset + w)).to(x.dtype)

Backward, identity rule (rms is held constant, R_x = R_y elementwise):

    g_x = g_y * (offset + w) * rstd             so that x * g_x = y * g_y

Only the per-row rstd (float32 or float64, x.shape[:-1]) is kept for the backward: g_x does not need x.
"""

from __future__ import annotations

import torch



def rms_norm_output_dtype(x_dtype: torch.dtype, w_dtype: torch.dtype, offset: float) -> torch.dtype:
    """Llama multiplies by w in torch's promoted dtype; Gemma casts back to the input dtype."""
    return torch.promote_types(w_dtype, x_dtype) if offset == 0 else x_dtype


def rms_norm_forward_torch(x: torch.Tensor, weight: torch.Tensor, *, eps: float, offset: float):
    """Returns (y, rstd): y as HuggingFace computes it (module docstring), rstd [...] float32 (or float64)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    h = x.to(acc)
    rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = h * rstd
    if offset == 0:
        y = weight * h.to(x.dtype)
    else:
        y = (h * (offset + weight.to(acc))).to(x.dtype)
    return y, rstd.squeeze(-1)


def rms_norm_backward_torch(grad_out: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, *,
                            offset: float, dtype: torch.dtype) -> torch.Tensor:
    """Identity rule: g_x = g_y * (offset + w) * rstd, in `dtype` (the input's)."""
    acc = rstd.dtype
    return (grad_out.to(acc) * (offset + weight.to(acc)) * rstd.unsqueeze(-1)).to(dtype)
