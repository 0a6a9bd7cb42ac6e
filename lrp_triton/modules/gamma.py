"""Linear and convolution layers with an LRP gamma-rule backward (`linear_rule="gamma"` or
`"gamma-signed"`).

Each shares the Parameters of the layer it replaces and returns exactly that layer's output; see
`lrp_triton.ops.gamma` for the two rules (plain: W_g = W + gamma W^+, b_g = b + gamma b^+;
sign-aware: the contributions sharing the output's sign are boosted; the bias absorbs its share).
`gamma_replacement(module, gamma, signed)` builds the replacement of an nn.Linear, a GPT-2 Conv1D
or a zero-padded nn.Conv2d, and returns None for anything else.
"""

from __future__ import annotations

from torch import nn

from lrp_triton.ops.gamma import lrp_gamma_conv1d, lrp_gamma_conv2d, lrp_gamma_linear


class LRPGammaLinear(nn.Module):
    """Drop-in for nn.Linear."""

    def __init__(self, weight, bias, gamma: float, signed: bool = False):
        super().__init__()
        self.weight, self.bias, self.gamma, self.signed = weight, bias, float(gamma), bool(signed)
        self.out_features, self.in_features = weight.shape

    @classmethod
    def from_hf(cls, module: nn.Linear, *, gamma: float, signed: bool = False) -> "LRPGammaLinear":
        return cls(module.weight, module.bias, gamma, signed)

    def forward(self, x):
        return lrp_gamma_linear(x, self.weight, self.bias, self.gamma, signed=self.signed)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, gamma={self.gamma}, "
                f"signed={self.signed}")


class LRPGammaConv1D(nn.Module):
    """Drop-in for transformers' Conv1D (GPT-2): y = x W + b with W stored [in, out]."""

    def __init__(self, weight, bias, gamma: float, signed: bool = False):
        super().__init__()
        self.weight, self.bias, self.gamma, self.signed = weight, bias, float(gamma), bool(signed)
        self.nf = weight.shape[1]

    @classmethod
    def from_hf(cls, module, *, gamma: float, signed: bool = False) -> "LRPGammaConv1D":
        return cls(module.weight, module.bias, gamma, signed)

    def forward(self, x):
        return lrp_gamma_conv1d(x, self.weight, self.bias, self.gamma, signed=self.signed)

    def extra_repr(self) -> str:
        return f"nx={self.weight.shape[0]}, nf={self.nf}, gamma={self.gamma}, signed={self.signed}"


class LRPGammaConv2d(nn.Module):
    """Drop-in for a zero-padded nn.Conv2d (e.g. the ViT patch embedding)."""

    def __init__(self, weight, bias, gamma: float, stride, padding, dilation, groups, signed: bool = False):
        super().__init__()
        self.weight, self.bias, self.gamma, self.signed = weight, bias, float(gamma), bool(signed)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.out_channels, self.in_channels = weight.shape[0], weight.shape[1] * groups
        self.kernel_size = tuple(weight.shape[2:])

    @classmethod
    def from_hf(cls, module: nn.Conv2d, *, gamma: float, signed: bool = False) -> "LRPGammaConv2d":
        if module.padding_mode != "zeros":
            raise NotImplementedError(f"gamma rule: Conv2d with padding_mode={module.padding_mode!r} is not supported")
        return cls(module.weight, module.bias, gamma, module.stride, module.padding, module.dilation, module.groups,
                   signed)

    def forward(self, x):
        return lrp_gamma_conv2d(x, self.weight, self.bias, self.gamma, stride=self.stride, padding=self.padding,
                                dilation=self.dilation, groups=self.groups, signed=self.signed)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"gamma={self.gamma}, signed={self.signed}")


def gamma_replacement(module: nn.Module, gamma: float, signed: bool = False) -> nn.Module | None:
    """The gamma-rule replacement of an nn.Linear, Conv1D or nn.Conv2d (exact class), else None."""
    cls = type(module)
    if cls is nn.Linear:
        return LRPGammaLinear.from_hf(module, gamma=gamma, signed=signed)
    if cls is nn.Conv2d:
        return LRPGammaConv2d.from_hf(module, gamma=gamma, signed=signed)
    if cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers"):
        return LRPGammaConv1D.from_hf(module, gamma=gamma, signed=signed)
    return None
