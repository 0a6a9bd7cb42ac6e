"""RMSNorm and LayerNorm layers with the LRP identity / constant-std rules.

- RMSNorm `y = (offset + w) * x / rms(x)`: identity rule, rms held constant:
  g_x = g_y * (offset + w) / rms(x).
- LayerNorm `y = w * (x - mean) / std + b`: std held constant, centring stays linear:
  g_x = (g_y*w - mean(g_y*w)) / std. A weight over more than the normalised dimension (Cohere's
  per-head q / k norms, w [H, D] on x [..., H, D], normalised over D) multiplies the weightless
  LayerNorm's output: `w * LN(x)`, the same rule (a product with a constant is linear).
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_triton.ops.norms import lrp_layer_norm, lrp_rms_norm
from lrp_triton.options import LRPOptions


class LRPRMSNorm(nn.Module):
    """Drop-in for LlamaRMSNorm (offset 0) and Gemma's `(1 + w)` RMSNorm (offset 1)."""

    def __init__(self, weight: nn.Parameter, eps: float, offset: float = 0.0, *, backend: str):
        super().__init__()
        self.weight = weight  # the replaced module's own Parameter
        self.eps = eps
        self.offset = offset
        self.backend = backend

    @classmethod
    def from_hf(cls, module: nn.Module, options: LRPOptions, *, offset: float = 0.0) -> "LRPRMSNorm":
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if eps is None:
            raise TypeError(f"cannot read the epsilon of {type(module).__name__}")
        return cls(module.weight, float(eps), offset, backend=options.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrp_rms_norm(x, self.weight, self.eps, offset=self.offset, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}, offset={self.offset}"


class LRPLayerNorm(nn.Module):
    """Drop-in for torch.nn.LayerNorm over the last dimension."""

    def __init__(self, weight, bias, eps: float, *, backend: str):
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.eps = eps
        self.backend = backend

    @classmethod
    def from_hf(cls, module: nn.LayerNorm, options: LRPOptions) -> "LRPLayerNorm":
        if len(module.normalized_shape) != 1:
            raise TypeError(f"LayerNorm over {module.normalized_shape} is not supported (last dim only)")
        return cls(module.weight, module.bias, float(module.eps), backend=options.backend)

    @classmethod
    def bias_free(cls, module: nn.Module, options: LRPOptions) -> "LRPLayerNorm":
        """A mean-subtracting LayerNorm with a weight and no bias whose epsilon is `variance_epsilon`
        (CohereLayerNorm; its weight [D] or per head [H, D])."""
        if getattr(module, "bias", None) is not None:
            raise TypeError(f"{type(module).__name__} has a bias; expected a bias-free LayerNorm")
        return cls(module.weight, None, float(module.variance_epsilon), backend=options.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and self.weight.dim() > 1:  # per-head weight [H, D]: w * LN(x)
            return lrp_layer_norm(x, None, self.bias, self.eps, backend=self.backend) * self.weight
        return lrp_layer_norm(x, self.weight, self.bias, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
