"""Transformer MLP layers with LRP rules on the nonlinearity.

- Gated MLP `down(act(gate(x)) * up(x))`: identity rule on the activation and uniform rule on the
  product (AttnLRP: g_gate = g * up * act(gate)/gate / 2, g_up = g * act(gate) / 2); CP-LRP detaches
  the gate branch (g_up = g * act(gate), g_gate = 0).
- Plain MLP `proj(act(fc(x)))`: identity rule on the activation, g_x = g * act(x)/x.
The linear projections keep their exact gradient (epsilon rule).

Each layer hands its intermediate activation (the neuron outputs) to its `taps` (the applied
model's `LatentTaps`), which keep it, with `retain_grad()`, while latent relevance is collected.
Built with `from_hf(module, options)` from the layer it replaces (`lrp_triton.options.LRPOptions`).
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_triton.ops.mlp import lrp_activation, lrp_glu
from lrp_triton.options import LatentTaps, LRPOptions
from lrp_triton.rules import cp_lrp_constant

# HuggingFace activation classes -> the activation names of lrp_triton.ops.mlp
_ACTIVATIONS = {
    "SiLU": "silu", "SiLUActivation": "silu",
    "GELUTanh": "gelu_tanh", "NewGELUActivation": "gelu_tanh", "PytorchGELUTanh": "gelu_tanh",
    "GELUActivation": "gelu", "ReLU": "relu", "QuickGELUActivation": "quick_gelu",
}


def activation_name(act: nn.Module) -> str:
    """The lrp_triton name of a HuggingFace / torch activation module, or a clear error."""
    name = type(act).__name__
    if name == "GELU":
        return "gelu_tanh" if getattr(act, "approximate", "none") == "tanh" else "gelu"
    if name == "GELUTanh" and getattr(act, "use_gelu_tanh_python", False):
        return "gelu_tanh"
    if name not in _ACTIVATIONS:
        raise NotImplementedError(f"activation {name} has no LRP rule here; supported: "
                                  f"{', '.join(sorted(_ACTIVATIONS))}, nn.GELU")
    return _ACTIVATIONS[name]


def parameter_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a (possibly wrapped, e.g. LoRA) projection computes in: its weight's, else its first parameter's."""
    weight = getattr(layer, "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) else next(layer.parameters()).dtype


def gated_product(gate: torch.Tensor, up: torch.Tensor, activation: str, mode: str, backend: str):
    """act(gate) * up with the mode's rule (see the module docstring)."""
    if mode == "cp-lrp":
        return cp_lrp_constant(lrp_activation(gate, activation, backend=backend), mode) * up
    return lrp_glu(gate, up, activation, backend=backend)


class LRPGatedMLP(nn.Module):
    """Drop-in for LlamaMLP-style layers (gate_proj, up_proj, down_proj, act_fn)."""

    def __init__(self, gate_proj, up_proj, down_proj, activation: str, *, mode: str, backend: str,
                 taps: LatentTaps | None = None):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = gate_proj, up_proj, down_proj
        self.activation, self.mode, self.backend, self.taps = activation, mode, backend, taps

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.gate_proj, module.up_proj, module.down_proj, activation_name(module.act_fn),
                   mode=options.mode, backend=options.backend, taps=options.taps)

    @classmethod
    def from_t5(cls, module, options: LRPOptions):
        """T5DenseGatedActDense: wi_0 is the gate, wi_1 the up projection, wo the down projection."""
        return cls(module.wi_0, module.wi_1, module.wo, activation_name(module.act), mode=options.mode,
                   backend=options.backend, taps=options.taps)

    def forward(self, x):
        neurons = gated_product(self.gate_proj(x), self.up_proj(x), self.activation, self.mode, self.backend)
        if self.taps is not None:
            self.taps.neurons(neurons)
        return self.down_proj(neurons.to(parameter_dtype(self.down_proj)))  # T5 may keep `wo` in float32


class LRPFusedGatedMLP(nn.Module):
    """Drop-in for Phi-3's MLP: one gate_up_proj whose output halves are (gate, up)."""

    def __init__(self, gate_up_proj, down_proj, activation: str, *, mode: str, backend: str,
                 taps: LatentTaps | None = None):
        super().__init__()
        self.gate_up_proj, self.down_proj = gate_up_proj, down_proj
        self.activation, self.mode, self.backend, self.taps = activation, mode, backend, taps

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.gate_up_proj, module.down_proj, activation_name(module.activation_fn),
                   mode=options.mode, backend=options.backend, taps=options.taps)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        neurons = gated_product(gate, up, self.activation, self.mode, self.backend)
        if self.taps is not None:
            self.taps.neurons(neurons)
        return self.down_proj(neurons)


class LRPMLP(nn.Module):
    """Drop-in for GPT-2's MLP (c_fc, act, c_proj, dropout); other plain MLPs through their adapters' names."""

    def __init__(self, fc, proj, activation: str, dropout=None, *, backend: str, taps: LatentTaps | None = None):
        super().__init__()
        self.fc, self.proj, self.dropout = fc, proj, dropout
        self.activation, self.backend, self.taps = activation, backend, taps

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.c_fc, module.c_proj, activation_name(module.act), getattr(module, "dropout", None),
                   backend=options.backend, taps=options.taps)

    def forward(self, x):
        neurons = lrp_activation(self.fc(x), self.activation, backend=self.backend)
        if self.taps is not None:
            self.taps.neurons(neurons)
        out = self.proj(neurons.to(parameter_dtype(self.proj)))
        return self.dropout(out) if self.dropout is not None else out
