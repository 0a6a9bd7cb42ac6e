"""Plain-PyTorch twin of `activations.py`: elementwise activations and the gated-MLP product.

This is the `backend="torch"` path of `lrp_triton.ops.lrp_activation` and `lrp_glu` (the CPU
fallback and the second reference of the Triton kernels). Same rules, same signatures.

Activations act(x) = x * ratio(x), with the identity-rule ratio act(x)/x written without a division
by x (finite, and exact, at x = 0):

    silu       act = x * sigmoid(x)                          ratio = sigmoid(x)
    gelu       act = x * Phi(x),  Phi(x) = (1 + erf(x/sqrt2))/2   ratio = Phi(x)
    gelu_tanh  act = x * (1 + tanh(u))/2,  u = sqrt(2/pi) (x + 0.044715 x^3)
                                                             ratio = (1 + tanh(u))/2 = sigmoid(2u)
    relu       act = max(x, 0)                               ratio = 1 for x > 0, else 0
    quick_gelu act = x * sigmoid(1.702 x)  (CLIP, Qwen2-VL's vision tower)   ratio = sigmoid(1.702 x)

Rules (gradient form: `x * x.grad` is the relevance of x):

    y = act(x)            identity rule  R_x = R_y             g_x = g * ratio(x)
    y = act(gate) * up    identity on act, uniform on the product:
                          R_gate = R_up = R_y / 2              g_gate = g * up * ratio(gate) / 2
                                                               g_up   = g * act(gate) / 2

The forwards are HuggingFace's (`ACT2FN[...]`, `act_fn(gate) * up`) in the input dtype; the
backwards compute in float32 (float64 for float64 inputs) and return the input dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu", "quick_gelu")

# Id of each activation inside the Triton kernels (a constexpr there).
ACTIVATION_IDS = {name: i for i, name in enumerate(ACTIVATIONS)}

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
QUICK_GELU_SCALE = 1.702



def activation_torch(x: torch.Tensor, activation: str) -> torch.Tensor:
    """act(x) in x's dtype, exactly as HuggingFace's ACT2FN computes it."""
    if activation == "silu":
        return F.silu(x)
    if activation == "gelu":
        return F.gelu(x)
    if activation == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if activation == "relu":
        return F.relu(x)
    if activation == "quick_gelu":
        return x * torch.sigmoid(QUICK_GELU_SCALE * x)  # transformers.activations.QuickGELUActivation
    raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")


def activation_ratio_torch(x: torch.Tensor, activation: str) -> torch.Tensor:
    """act(x) / x in float32 (float64 for float64 x), without dividing by x (the identity-rule factor)."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    if activation == "silu":
        return torch.sigmoid(x)
    if activation == "gelu":
        return 0.5 * (1.0 + torch.erf(x * _SQRT1_2))
    if activation == "gelu_tanh":
        return torch.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
    if activation == "relu":
        return (x > 0).to(x.dtype)
    if activation == "quick_gelu":
        return torch.sigmoid(QUICK_GELU_SCALE * x)
    raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")


def activation_forward_torch(x: torch.Tensor, *, activation: str) -> torch.Tensor:
    """y = act(x) in x's dtype."""
    return activation_torch(x, activation)


def activation_backward_torch(grad_out: torch.Tensor, x: torch.Tensor, *, activation: str) -> torch.Tensor:
    """Identity rule: g_x = g * act(x)/x, in x's dtype."""
    ratio = activation_ratio_torch(x, activation)
    return (grad_out.to(ratio.dtype) * ratio).to(x.dtype)


def glu_forward_torch(gate: torch.Tensor, up: torch.Tensor, *, activation: str) -> torch.Tensor:
    """y = act(gate) * up in the input dtype (HuggingFace's LlamaMLP product: two roundings)."""
    return activation_torch(gate, activation) * up


def glu_backward_torch(grad_out: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, *, activation: str):
    """Identity rule on act, uniform rule on the product: (g_gate, g_up) in the input dtype.

    g_gate = g * up * ratio(gate) / 2,   g_up = g * act(gate) / 2 = g * gate * ratio(gate) / 2.
    """
    ratio = activation_ratio_torch(gate, activation)
    half = grad_out.to(ratio.dtype) * 0.5
    g_gate = half * up.to(ratio.dtype) * ratio
    g_up = half * gate.to(ratio.dtype) * ratio
    return g_gate.to(gate.dtype), g_up.to(up.dtype)
