"""`lrp_rms_norm` and `lrp_layer_norm`: the usual normalisation forward, an LRP backward.

RMSNorm, identity rule (rms is a constant):   g_x = g_y * (offset + w) / rms(x), so x * g_x = y * g_y.
LayerNorm, std held constant, centring linear: g_x = (g_y*w - mean(g_y*w)) / std.

Both save only the per-row 1/rms or 1/std (float32, one number per row) and the weight: the
backward needs neither x nor y. Weights and biases receive no gradient.
See kernels/rms_norm.py and kernels/layer_norm.py for the kernels and their tiling.
"""

from __future__ import annotations

import numbers

import torch

from lrp_triton.backend import resolve_backend
from lrp_triton.kernels.layer_norm_torch import layer_norm_backward_torch, layer_norm_forward_torch
from lrp_triton.kernels.rms_norm_torch import rms_norm_backward_torch, rms_norm_forward_torch
from lrp_triton.ops.checks import check_float_tensor, check_non_negative, check_vector_param
from lrp_triton.ops.dispatch import KernelPair
from lrp_triton.ops.streams import StreamKernel, refuse_batched_inputs, stream_backward

RMS_NORM = KernelPair(rms_norm_forward_torch, rms_norm_backward_torch,
                      "lrp_triton.kernels.rms_norm", "rms_norm_forward", "rms_norm_backward")
LAYER_NORM = KernelPair(layer_norm_forward_torch, layer_norm_backward_torch,
                        "lrp_triton.kernels.layer_norm", "layer_norm_forward", "layer_norm_backward")


def _norm_kernel(backward, **kw) -> StreamKernel:
    """backward(g, weight, rstd, **kw) for one stream; K stacked streams [K, ..., N] fold into rows
    (rstd, one number per row, broadcast to the K streams)."""

    def single(g, weight, rstd):
        return backward(g, weight, rstd, **kw)

    def stacked(g, weight, rstd):
        return backward(g, weight, rstd.expand(g.shape[:-1]), **kw)

    return StreamKernel(single, stacked)


class LRPRMSNormFunction(torch.autograd.Function):
    """Thin autograd wrapper: the backend's RMSNorm forward, then the identity-rule backward."""

    @staticmethod
    def forward(x, weight, options):
        forward, _ = RMS_NORM(options["backend"])
        return forward(x, weight, eps=options["eps"], offset=options["offset"])

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, options = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(weight, output[1])
        ctx.options, ctx.x_dtype = options, x.dtype

    vmap = refuse_batched_inputs("lrp_rms_norm")

    @staticmethod
    def backward(ctx, grad_out, grad_rstd):
        weight, rstd = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        _, backward = RMS_NORM(ctx.options["backend"])
        kernel = _norm_kernel(backward, offset=ctx.options["offset"], dtype=ctx.x_dtype)
        return stream_backward(kernel, 1, grad_out, weight, rstd), None, None


class LRPLayerNormFunction(torch.autograd.Function):
    """Thin autograd wrapper: the backend's LayerNorm forward, then the constant-std backward."""

    @staticmethod
    def forward(x, weight, bias, options):
        forward, _ = LAYER_NORM(options["backend"])
        return forward(x, weight, bias, eps=options["eps"])

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, options = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(weight, output[1])
        ctx.options, ctx.x_dtype = options, x.dtype

    vmap = refuse_batched_inputs("lrp_layer_norm")

    @staticmethod
    def backward(ctx, grad_out, grad_rstd):
        weight, rstd = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        _, backward = LAYER_NORM(ctx.options["backend"])
        kernel = _norm_kernel(backward, dtype=ctx.x_dtype)
        return stream_backward(kernel, 1, grad_out, weight, rstd), None, None, None


def _check_x(op: str, x) -> None:
    check_float_tensor(op, "x", x, x)
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least one dimension (the normalised one)")


def lrp_rms_norm(x, weight, eps=1e-6, *, offset=0.0, backend="auto"):
    """RMSNorm whose backward is the LRP identity rule (rms(x) held constant).

    Rule: R_x = R_y elementwise. Gradient form: g_x = g_y * (offset + w) / rms(x), with
    rms(x) = sqrt(mean(x^2) + eps) over the last dimension, so that x * g_x = y * g_y.

    Args:
        x: [..., N] float32, float16 or bfloat16 (float64 on the PyTorch path).
        weight: [N] (receives no gradient).
        eps: added to mean(x^2) under the square root.
        offset: 0 for LlamaRMSNorm, y = w * (x / rms(x)).to(x.dtype), whose dtype is torch's
            promotion of w's and x's; nonzero (1.0 for Gemma/Gemma2/Gemma3RMSNorm) for
            y = ((x / rms(x)) * (offset + w)).to(x.dtype), computed in float32 and rounded once.
        backend: "auto", "triton" or "torch" (see `lrp_triton.backend`).

    Returns:
        y, identical to the HuggingFace module's output up to float32 rounding of rms.
    """
    op = "lrp_rms_norm"
    _check_x(op, x)
    check_vector_param(op, "weight", weight, x)
    check_non_negative(op, "eps", eps)
    if isinstance(offset, bool) or not isinstance(offset, numbers.Real):
        raise TypeError(f"{op}: offset must be a number, got {type(offset).__name__}")
    chosen = resolve_backend(backend, x.device, dtype=x.dtype)
    options = dict(eps=float(eps), offset=float(offset), backend=chosen)
    return LRPRMSNormFunction.apply(x, weight, options)[0]


def lrp_layer_norm(x, weight, bias, eps=1e-5, *, backend="auto"):
    """LayerNorm whose backward holds the standard deviation constant (AttnLRP / lxt rule).

    Rule: the contribution of x_j to y_i is z_ij = w_i (delta_ij - 1/N) x_j / std (the bias absorbs
    its share) and R_x_j = sum_i z_ij / y_i * R_y_i. Gradient form:
    g_x = (g_y*w - mean(g_y*w)) / std, std = sqrt(var(x) + eps) over the last dimension.

    Args:
        x: [..., N] float32, float16 or bfloat16 (float64 on the PyTorch path).
        weight, bias: [N] or None (receive no gradient).
        eps: added to the (biased) variance.
        backend: "auto", "triton" or "torch" (see `lrp_triton.backend`).

    Returns:
        y = torch.nn.functional.layer_norm(x, (N,), weight, bias, eps), in x's dtype.
    """
    op = "lrp_layer_norm"
    _check_x(op, x)
    if weight is not None:
        check_vector_param(op, "weight", weight, x)
    if bias is not None:
        check_vector_param(op, "bias", bias, x)
    check_non_negative(op, "eps", eps)
    chosen = resolve_backend(backend, x.device, dtype=x.dtype)
    options = dict(eps=float(eps), backend=chosen)
    return LRPLayerNormFunction.apply(x, weight, bias, options)[0]
