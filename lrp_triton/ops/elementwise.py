"""Small elementwise LRP ops in plain PyTorch: the uniform product rule, soft-capping and tanh.

Both are memory-bound one-liners that autograd-friendly PyTorch already runs at bandwidth, so they
have no Triton kernel; their backwards are plain PyTorch, which vmap batches over K cotangent
streams by itself (`lrp_triton.ops.streams`).
"""

from __future__ import annotations

import torch

from lrp_triton.backend import upcast
from lrp_triton.ops.streams import refuse_batched_inputs
from lrp_triton.rules import tanh_over_x


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sums a broadcast gradient back to the shape of the input it came from."""
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    grad = grad.sum(dim=tuple(range(lead))) if lead > 0 else grad
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _UniformProduct(torch.autograd.Function):
    @staticmethod
    def forward(a, b):
        return a * b

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    vmap = refuse_batched_inputs("lrp_uniform_product")

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = _sum_to(g * b / 2, a.shape) if ctx.needs_input_grad[0] else None
        gb = _sum_to(g * a / 2, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


def lrp_uniform_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a * b` (broadcasting) with the uniform rule: R_a = R_b = R_y / 2.

    Gradient form: g_a = g * b / 2, g_b = g * a / 2 (each summed over broadcast dimensions).
    Used for MoE routing weight x expert output.
    """
    return _UniformProduct.apply(a, b)


class _SoftcapIdentity(torch.autograd.Function):
    @staticmethod
    def forward(x, cap):
        return cap * torch.tanh(x / cap)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.cap = inputs[1]

    vmap = refuse_batched_inputs("lrp_softcap")

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * tanh_over_x(upcast(x) / ctx.cap).to(g.dtype), None


def lrp_softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """Logit soft-capping `cap * tanh(x / cap)` with the identity rule R_x = R_y.

    Gradient form: g_x = g * tanh(x / cap) / (x / cap), which is 1 at x = 0 (Gemma 2 final logits).
    """
    return _SoftcapIdentity.apply(x, float(cap))


def lrp_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) with the identity rule R_x = R_y (poolers, classification heads).

    Gradient form: g_x = g * tanh(x) / x (soft-capping with cap 1).
    """
    return _SoftcapIdentity.apply(x, 1.0)


def softcap_by_mode(x: torch.Tensor, cap: float, mode: str) -> torch.Tensor:
    """Final-logit soft-capping `cap * tanh(x / cap)` by the mode's rule: the identity rule
    (`lrp_softcap`) in the LRP modes, the exact derivative in mode "gradient" (Input x Gradient)."""
    return cap * torch.tanh(x / cap) if mode == "gradient" else lrp_softcap(x, cap)
