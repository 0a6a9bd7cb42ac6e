"""Elementwise activations and the gated-MLP product in Triton, with LRP backwards.

Plain-PyTorch twin (same rules, same signatures): `activations_torch.py` beside this file.

Every activation is written as act(x) = x * ratio(x), where ratio(x) = act(x)/x is computed
without dividing by x (finite at x = 0), only through exp and erf so that the Triton interpreter
runs it (no libdevice calls):

    silu       ratio = sigmoid(x)
    gelu       ratio = Phi(x) = (1 + erf(x / sqrt2)) / 2                  (tl.math.erf)
    gelu_tanh  ratio = (1 + tanh(u)) / 2 = sigmoid(2u),  u = sqrt(2/pi) (x + 0.044715 x^3)
               (x clamped to [-20, 20] first, where the ratio is already exactly 0 or 1)
    relu       ratio = 1 for x > 0, else 0
    quick_gelu ratio = sigmoid(1.702 x)                                    (CLIP's QuickGELU)

with sigmoid(z) = 1/(1 + e^{-z}) for z >= 0 and e^{z}/(1 + e^{z}) for z < 0 (no overflow).

Kernels (flat, one program per BLOCK elements; the tensors are contiguous):

    _act_fwd   y = act(x)                      _act_bwd  g_x = g * ratio(x)          identity rule
    _glu_fwd   y = act(gate) * up              _glu_bwd  g_gate = g * up * ratio(gate) / 2
                                                         g_up   = g * gate * ratio(gate) / 2
                                                         (identity rule on act, uniform on *)

The forwards round act(gate) to the input dtype before the product, as HuggingFace's
`act_fn(gate) * up` does in bf16/fp16; the backwards compute in float32 and store the input dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl

from lrp_triton.kernels import activations_torch, buffers
from lrp_triton.kernels.activations_torch import ACTIVATION_IDS, QUICK_GELU_SLOPE
from lrp_triton.kernels.triton_setup import autotune_configs, on_tensor_device

_SQRT1_2 = tl.constexpr(0.7071067811865476)
_TWO_SQRT_2_OVER_PI = tl.constexpr(1.5957691216057308)  # 2 * sqrt(2 / pi)
_SILU = tl.constexpr(ACTIVATION_IDS["silu"])
_GELU = tl.constexpr(ACTIVATION_IDS["gelu"])
_GELU_TANH = tl.constexpr(ACTIVATION_IDS["gelu_tanh"])
_QUICK_GELU = tl.constexpr(ACTIVATION_IDS["quick_gelu"])
_QUICK_GELU_SLOPE = tl.constexpr(QUICK_GELU_SLOPE)


# ----------------------------------------------------------------------------------------------
# Shared jit helpers (also usable from other kernels)
# ----------------------------------------------------------------------------------------------
@triton.jit
def sigmoid(z):
    """1 / (1 + e^{-z}) through e^{-|z|} <= 1, which never overflows."""
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def act_ratio(x, ACT: tl.constexpr):
    """act(x) / x on float32 x, never dividing by x (the identity-rule gradient factor)."""
    if ACT == _SILU:
        r = sigmoid(x)  # silu(x) = x * sigmoid(x)
    elif ACT == _GELU:
        r = 0.5 * (1.0 + tl.math.erf(x * _SQRT1_2))  # gelu(x) = x * Phi(x)
    elif ACT == _GELU_TANH:
        # gelu_tanh(x) = x * (1 + tanh(u)) / 2 and (1 + tanh(u)) / 2 = sigmoid(2u). sigmoid(2u) is
        # exactly 0 or 1 in float32 beyond |x| = 20 (|2u| > 600), so x is clamped there and x^3 never
        # overflows. The tensor comes first in the product (constexpr * tensor stays a constexpr
        # under the interpreter).
        xc = tl.minimum(tl.maximum(x, -20.0), 20.0)
        r = sigmoid((xc + 0.044715 * xc * xc * xc) * _TWO_SQRT_2_OVER_PI)
    elif ACT == _QUICK_GELU:
        r = sigmoid(x * _QUICK_GELU_SLOPE)  # quick_gelu(x) = x * sigmoid(1.702 x)
    else:  # relu(x) = x * [x > 0]
        r = tl.where(x > 0, 1.0, 0.0)
    return r


@triton.jit
def act(x, ACT: tl.constexpr):
    """act(x) = x * ratio(x) on float32 x."""
    return x * act_ratio(x, ACT)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
def _block_configs():
    gpu = [triton.Config({"BLOCK": 1024}, num_warps=4), triton.Config({"BLOCK": 2048}, num_warps=8),
           triton.Config({"BLOCK": 4096}, num_warps=8)]
    return autotune_configs(gpu, triton.Config({"BLOCK": 4096}, num_warps=4, num_stages=1))


_CONFIGS = _block_configs()


@triton.autotune(configs=_CONFIGS, key=["ACT"])
@triton.jit
def _act_fwd(X, Y, numel, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """y = act(x)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    x = tl.load(X + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + offs, act(x, ACT).to(Y.dtype.element_ty), mask=ok)


@triton.autotune(configs=_CONFIGS, key=["ACT"])
@triton.jit
def _act_bwd(DY, X, DX, numel, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """Identity rule R_x = R_y: g_x = g * act(x)/x."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    x = tl.load(X + offs, mask=ok, other=0.0).to(tl.float32)
    dy = tl.load(DY + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(DX + offs, (dy * act_ratio(x, ACT)).to(DX.dtype.element_ty), mask=ok)


@triton.autotune(configs=_CONFIGS, key=["ACT"])
@triton.jit
def _glu_fwd(GATE, UP, Y, numel, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """y = act(gate) * up, act(gate) rounded to the input dtype first (as torch does)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    gate = tl.load(GATE + offs, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(UP + offs, mask=ok, other=0.0).to(tl.float32)
    a = act(gate, ACT).to(GATE.dtype.element_ty).to(tl.float32)
    tl.store(Y + offs, (a * up).to(Y.dtype.element_ty), mask=ok)


@triton.autotune(configs=_CONFIGS, key=["ACT"])
@triton.jit
def _glu_bwd(DY, GATE, UP, DGATE, DUP, numel, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """Identity rule on act, uniform rule on the product: R_gate = R_up = R_y / 2.

    With R_y = y * g = gate * ratio(gate) * up * g:
        gate * g_gate = gate * (g * up * ratio / 2) = R_y / 2
        up   * g_up   = up   * (g * gate * ratio / 2) = R_y / 2
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    gate = tl.load(GATE + offs, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(UP + offs, mask=ok, other=0.0).to(tl.float32)
    half_dy = 0.5 * tl.load(DY + offs, mask=ok, other=0.0).to(tl.float32)
    r = act_ratio(gate, ACT)
    tl.store(DGATE + offs, (half_dy * up * r).to(DGATE.dtype.element_ty), mask=ok)
    tl.store(DUP + offs, (half_dy * gate * r).to(DUP.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------------------------
# Launchers: contiguous inputs, outputs shaped like the inputs
# ----------------------------------------------------------------------------------------------
def _grid(numel):
    return lambda META: (triton.cdiv(numel, META["BLOCK"]),)


@on_tensor_device
def activation_forward(x, *, activation):
    """y = act(x) in x's dtype."""
    x = x.contiguous()
    y = buffers.new_output(x.shape, x.dtype, x.device)
    if x.numel():
        _act_fwd[_grid(x.numel())](x, y, x.numel(), ACT=ACTIVATION_IDS[activation])
    return y


@on_tensor_device
def activation_backward(grad_out, x, *, activation):
    """Identity rule: g_x = g * act(x)/x, in x's dtype."""
    x = x.contiguous()
    grad_out = grad_out.contiguous()
    dx = buffers.new_output(x.shape, x.dtype, x.device)
    if x.numel():
        _act_bwd[_grid(x.numel())](grad_out, x, dx, x.numel(), ACT=ACTIVATION_IDS[activation])
    return dx


@on_tensor_device
def glu_forward(gate, up, *, activation):
    """y = act(gate) * up in the input dtype."""
    gate = gate.contiguous()
    up = up.contiguous()
    y = buffers.new_output(gate.shape, gate.dtype, gate.device)
    if gate.numel():
        _glu_fwd[_grid(gate.numel())](gate, up, y, gate.numel(), ACT=ACTIVATION_IDS[activation])
    return y


@on_tensor_device
def glu_backward(grad_out, gate, up, *, activation):
    """(g_gate, g_up) = (g * up * ratio(gate) / 2, g * act(gate) / 2) in the input dtype."""
    gate = gate.contiguous()
    up = up.contiguous()
    grad_out = grad_out.contiguous()
    d_gate = buffers.new_output(gate.shape, gate.dtype, gate.device)
    d_up = buffers.new_output(up.shape, up.dtype, up.device)
    if gate.numel():
        _glu_bwd[_grid(gate.numel())](grad_out, gate, up, d_gate, d_up, gate.numel(),
                                      ACT=ACTIVATION_IDS[activation])
    return d_gate, d_up
