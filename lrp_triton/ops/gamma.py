"""The LRP gamma rule for linear layers (nn.Linear, GPT-2 Conv1D) and 2-D convolutions.

For y = W x + b (any linear map: dense or convolution), with contributions c_ji = x_i W_ji:

Plain gamma rule (`signed=False`, `linear_rule="gamma"`; Montavon et al. 2019, written for
non-negative inputs): W_g = W + gamma * W^+ (W^+ = max(W, 0)), b_g = b + gamma * b^+,

    z_g,j = sum_i x_i W_g,ji + b_g,j
    R_x_i = sum_j x_i W_g,ji / z_g,j * R_j

Gradient form: g_x = W_g^T (g_y * y / z_g).

Sign-aware gamma rule (`signed=True`, `linear_rule="gamma-signed"`; zennit's `Gamma`, which lxt's
ViT examples use): the contributions that share the sign of the output are boosted,

    y_j > 0:  R_x_i = sum_j (c_ji + gamma c_ji^+) / (y_j + gamma (sum_i c_ji^+ + b_j^+)) * R_j
    y_j < 0:  R_x_i = sum_j (c_ji + gamma c_ji^-) / (y_j + gamma (sum_i c_ji^- + b_j^-)) * R_j

(units with y_j = 0 pass nothing). Its denominator has the sign of y_j and at least its size, so
y / z lies in (0, 1]: it never divides by a cancelled sum, which the plain rule does whenever the
input x has both signs (LayerNorm outputs, attention outputs). For x >= 0 and y > 0 the two rules
agree. Gradient form: with r = g_y * y / z split into r+ (y > 0) and r- (y < 0),
g_x = r W + gamma (r+ W^+ + r- W^-) where x > 0 and r W + gamma (r+ W^- + r- W^+) where x < 0.

Bias: in both rules the bias is the weight of a constant unit input, boosted like the weights,
and it absorbs its share (none of it reaches x), exactly as the epsilon rule's bias does in this
project. So gamma = 0 gives back the epsilon rule (the exact gradient), and a layer without bias
is conservative, sum_i R_x_i = sum_j R_j.

The forward returns the layer's exact output y. It saves the ratio y / z (float32, or float64 for
float64 layers; output-sized), the weight (a Parameter, not a copy) and, for the sign-aware rule,
the sign of x (bool). A unit with z = 0 passes no relevance; no epsilon stabiliser is added.
Weights and biases receive no gradient. Plain PyTorch: a few extra matmuls / convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lrp_triton.ops.checks import check_float_tensor, check_non_negative
from lrp_triton.ops.streams import refuse_batched_inputs


def gamma_weight(w: torch.Tensor | None, gamma: float, sign: int = 1) -> torch.Tensor | None:
    """w + gamma * max(w, 0) (sign=1) or w + gamma * min(w, 0) (sign=-1); None stays None."""
    if w is None:
        return None
    return w + gamma * (w.clamp(min=0) if sign > 0 else w.clamp(max=0))


def _apply_layer(layout, x, weight, bias, conv):
    if layout == "linear":
        return F.linear(x, weight, bias)
    if layout == "conv1d":  # transformers.pytorch_utils.Conv1D: x W + b, W stored [in, out]
        flat = x.reshape(-1, x.shape[-1])
        out = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
        return out.view(*x.shape[:-1], weight.shape[1])
    return F.conv2d(x, weight, bias, **conv)


def _input_grad(layout, r, weight, x_shape, conv):
    """W^T r for the layout (the input gradient of the linear map, without bias)."""
    if layout == "linear":
        return r @ weight
    if layout == "conv1d":
        return r @ weight.T
    return torch.nn.grad.conv2d_input(x_shape, weight, r, **conv)


def _safe_ratio(y, z):
    nonzero = z != 0
    return torch.where(nonzero, y / torch.where(nonzero, z, torch.ones_like(z)), torch.zeros_like(z))


def _saved_for_rule(x, weight, bias, y, gamma, layout, conv, signed):
    """(ratio y / z, weight, sign of x or None): what the backward of the rule needs."""
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    if not signed:
        z = _apply_layer(layout, x, gamma_weight(weight, gamma), gamma_weight(bias, gamma), conv)
        return _safe_ratio(y.to(acc), z.to(acc)), weight, None
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    pos = _apply_layer(layout, x_pos, w_pos, None, conv) + _apply_layer(layout, x_neg, w_neg, None, conv)
    neg = _apply_layer(layout, x_pos, w_neg, None, conv) + _apply_layer(layout, x_neg, w_pos, None, conv)
    if bias is not None:
        b = bias.view(-1, 1, 1) if layout == "conv2d" else bias
        pos, neg = pos + b.clamp(min=0), neg + b.clamp(max=0)
    y_acc = y.to(acc)
    z = torch.where(y_acc > 0, y_acc + gamma * pos.to(acc), y_acc + gamma * neg.to(acc))
    # y / z lies in (0, 1]; it is stored with the sign of y, which the backward needs too
    ratio = torch.where(y_acc > 0, 1.0, -1.0) * torch.where(y_acc != 0, _safe_ratio(y_acc, z), 0.0)
    return ratio, weight, x > 0


class LRPGammaFunction(torch.autograd.Function):
    """y = layer(x; W, b) forward; the gamma rule's gradient form backward (module docstring)."""

    @staticmethod
    def forward(x, weight, bias, gamma, layout, conv, signed):
        return _apply_layer(layout, x, weight, bias, conv)

    @staticmethod
    def setup_context(ctx, inputs, y):
        x, weight, bias, gamma, layout, conv, signed = inputs
        ctx.layout, ctx.gamma, ctx.conv, ctx.signed = layout, gamma, conv, signed
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        if not ctx.needs_input_grad[0]:
            return
        with torch.no_grad():
            ctx.save_for_backward(*_saved_for_rule(x, weight, bias, y, gamma, layout, conv, signed))

    vmap = refuse_batched_inputs("lrp_gamma")

    @staticmethod
    def backward(ctx, grad_out):
        none = (None,) * 6
        if not ctx.needs_input_grad[0]:
            return (None,) + none
        ratio, weight, x_positive = ctx.saved_tensors
        args = (ctx.x_shape, ctx.conv)
        if not ctx.signed:
            r = (grad_out.to(ratio.dtype) * ratio).to(weight.dtype)
            dx = _input_grad(ctx.layout, r, gamma_weight(weight, ctx.gamma), *args)
            return (dx.to(ctx.x_dtype),) + none
        r = (grad_out.to(ratio.dtype) * ratio.abs()).to(weight.dtype)
        y_positive = ratio > 0
        r_pos = torch.where(y_positive, r, torch.zeros_like(r))
        r_neg = r - r_pos
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        plain = _input_grad(ctx.layout, r, weight, *args)
        at_pos = _input_grad(ctx.layout, r_pos, w_pos, *args) + _input_grad(ctx.layout, r_neg, w_neg, *args)
        at_neg = _input_grad(ctx.layout, r_pos, w_neg, *args) + _input_grad(ctx.layout, r_neg, w_pos, *args)
        dx = plain + ctx.gamma * torch.where(x_positive, at_pos, at_neg)
        return (dx.to(ctx.x_dtype),) + none


def _check(op, x, weight, bias, gamma):
    check_float_tensor(op, "x", x)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None or name == "weight":
            check_float_tensor(op, name, t, x, same_precision=False)
    check_non_negative(op, "gamma", gamma)


def lrp_gamma_linear(x, weight, bias=None, gamma: float = 0.25, *, signed: bool = False):
    """nn.Linear (weight [out, in]) with a gamma-rule backward (see the module docstring).

    Returns F.linear(x, weight, bias) exactly; after a backward, x * x.grad is the gamma-rule
    relevance, e.g. (signed=False) R_x_i = sum_j x_i W_g,ji / (sum_i x_i W_g,ji + b_g,j) * R_j.
    """
    _check("lrp_gamma_linear", x, weight, bias, gamma)
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"lrp_gamma_linear: weight {tuple(weight.shape)} does not fit x {tuple(x.shape)}")
    return LRPGammaFunction.apply(x, weight, bias, float(gamma), "linear", None, bool(signed))


def lrp_gamma_conv1d(x, weight, bias=None, gamma: float = 0.25, *, signed: bool = False):
    """GPT-2's Conv1D (y = x W + b, weight [in, out]) with a gamma-rule backward."""
    _check("lrp_gamma_conv1d", x, weight, bias, gamma)
    if weight.dim() != 2 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"lrp_gamma_conv1d: weight {tuple(weight.shape)} does not fit x {tuple(x.shape)}")
    return LRPGammaFunction.apply(x, weight, bias, float(gamma), "conv1d", None, bool(signed))


def lrp_gamma_conv2d(x, weight, bias=None, gamma: float = 0.25, *, stride=1, padding=0, dilation=1, groups=1,
                     signed: bool = False):
    """F.conv2d with a gamma-rule backward (zero padding given as ints or tuples)."""
    _check("lrp_gamma_conv2d", x, weight, bias, gamma)
    if isinstance(padding, str):
        if padding != "valid":
            raise NotImplementedError(f"lrp_gamma_conv2d: padding={padding!r} is not supported; give it as ints")
        padding = 0
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"lrp_gamma_conv2d: expected x [B, C, H, W] and weight [O, C/groups, kH, kW], got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return LRPGammaFunction.apply(x, weight, bias, float(gamma), "conv2d", conv, bool(signed))
