"""`lrp_glu` (gated MLP product) and `lrp_activation` (plain MLP): LRP backwards for the MLP.

Elementwise activation y = act(x), identity rule R_x = R_y: g_x = g * act(x)/x.
Gate product y = act(gate) * up, identity rule on act and uniform rule on the product,
R_gate = R_up = R_y / 2: g_gate = g * up * act(gate)/gate / 2, g_up = g * act(gate) / 2.

act(x)/x is computed without a division by x: sigmoid(x) for SiLU, Phi(x) for GELU (erf),
(1 + tanh(u))/2 for GELU-tanh, [x > 0] for ReLU (see kernels/activations.py). The forwards save
only their inputs (gate and up, or x): no activation-sized intermediate is kept.
"""

from __future__ import annotations

import functools

import torch

from lrp_triton.backend import resolve_backend
from lrp_triton.kernels.activations_torch import (ACTIVATIONS, activation_backward_torch,
                                                  activation_forward_torch, glu_backward_torch,
                                                  glu_forward_torch)
from lrp_triton.ops.checks import check_float_tensor
from lrp_triton.ops.dispatch import KernelPair
from lrp_triton.ops.streams import StreamKernel, refuse_batched_inputs, stream_backward

GLU = KernelPair(glu_forward_torch, glu_backward_torch, "lrp_triton.kernels.activations", "glu_forward",
                 "glu_backward")
ACTIVATION = KernelPair(activation_forward_torch, activation_backward_torch, "lrp_triton.kernels.activations",
                        "activation_forward", "activation_backward")


class LRPGLUFunction(torch.autograd.Function):
    """Thin autograd wrapper: act(gate) * up forward, identity + uniform rule backward."""

    @staticmethod
    def forward(gate, up, options):
        forward, _ = GLU(options["backend"])
        return forward(gate, up, activation=options["activation"])

    @staticmethod
    def setup_context(ctx, inputs, output):
        gate, up, options = inputs
        ctx.save_for_backward(gate, up)
        ctx.options = options

    vmap = refuse_batched_inputs("lrp_glu")

    @staticmethod
    def backward(ctx, grad_out):
        gate, up = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None
        d_gate, d_up = stream_backward(_kernel(GLU, ctx.options), 1, grad_out, gate, up)
        return (d_gate if ctx.needs_input_grad[0] else None, d_up if ctx.needs_input_grad[1] else None,
                None)


class LRPActivationFunction(torch.autograd.Function):
    """Thin autograd wrapper: act(x) forward, identity-rule backward."""

    @staticmethod
    def forward(x, options):
        forward, _ = ACTIVATION(options["backend"])
        return forward(x, activation=options["activation"])

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, options = inputs
        ctx.save_for_backward(x)
        ctx.options = options

    vmap = refuse_batched_inputs("lrp_activation")

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return stream_backward(_kernel(ACTIVATION, ctx.options), 1, grad_out, x), None


def _kernel(pair: KernelPair, options: dict) -> StreamKernel:
    """The backend's backward; K stacked gradients broadcast against the saved inputs in the
    PyTorch twin, and run one stream at a time through the Triton kernel (which takes equal shapes)."""
    _, backward = pair(options["backend"])
    call = functools.partial(backward, activation=options["activation"])
    return StreamKernel(call, call if options["backend"] == "torch" else None)


def _check_activation(op: str, activation) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")


def lrp_glu(gate, up, activation="silu", *, backend="auto"):
    """Gated-MLP product act(gate) * up (SwiGLU, GeGLU) with the AttnLRP backward.

    Rule: identity on the activation, uniform on the product: R_gate = R_up = R_y / 2.
    Gradient form: g_gate = g * up * act(gate)/gate / 2, g_up = g * act(gate) / 2, with act(x)/x
    computed stably (sigmoid(x) for SiLU, Phi(x) for GELU, (1 + tanh(u))/2 for GELU-tanh,
    [x > 0] for ReLU; never a division by x).

    Args:
        gate, up: tensors of the same shape and dtype (float32, float16, bfloat16; float64 on the
            PyTorch path), e.g. the outputs of gate_proj and up_proj.
        activation: one of "silu", "gelu" (erf), "gelu_tanh", "relu", "quick_gelu".
        backend: "auto", "triton" or "torch" (see `lrp_triton.backend`).

    Returns:
        act(gate) * up in the input dtype, as HuggingFace's `act_fn(gate_proj(x)) * up_proj(x)`
        (act(gate) rounded to the input dtype before the product).
    """
    op = "lrp_glu"
    check_float_tensor(op, "gate", gate)
    check_float_tensor(op, "up", up)
    if gate.shape != up.shape:
        raise ValueError(f"{op}: gate and up must have the same shape, got {tuple(gate.shape)} and "
                         f"{tuple(up.shape)}")
    if gate.dtype != up.dtype:
        raise TypeError(f"{op}: gate and up must share a dtype, got {gate.dtype} and {up.dtype}")
    if gate.device != up.device:
        raise ValueError(f"{op}: gate is on {gate.device} but up is on {up.device}")
    _check_activation(op, activation)
    chosen = resolve_backend(backend, gate.device, dtype=gate.dtype)
    return LRPGLUFunction.apply(gate, up, dict(activation=activation, backend=chosen))


def lrp_activation(x, activation="gelu", *, backend="auto"):
    """Elementwise activation act(x) with the identity-rule backward (plain MLPs: GPT-2, BERT, T5).

    Rule: R_x = R_y. Gradient form: g_x = g * act(x)/x, computed stably (see `lrp_glu`).

    Args:
        x: float32, float16 or bfloat16 tensor of any shape (float64 on the PyTorch path).
        activation: one of "silu", "gelu" (erf), "gelu_tanh", "relu", "quick_gelu".
        backend: "auto", "triton" or "torch" (see `lrp_triton.backend`).

    Returns:
        act(x) in x's dtype.
    """
    op = "lrp_activation"
    check_float_tensor(op, "x", x)
    _check_activation(op, activation)
    chosen = resolve_backend(backend, x.device, dtype=x.dtype)
    return LRPActivationFunction.apply(x, dict(activation=activation, backend=chosen))
