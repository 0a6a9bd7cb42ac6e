"""What an applied model runs with: the rule options, validated once, and the latent taps.

`LRPOptions` is created by the public entry points (`lrp_triton.apply`, `lrp_triton.attribute`)
through `LRPOptions.checked`, which is the only place mode, backend, linear rule and gamma are
validated. `apply` hands the options to every replacement layer's `from_hf` and leaves them on
every module that holds the (privately copied) config (`module.lrp_options`), where the attention
interface reads them: an attention module reached without options is an error, never a silent
default.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch

from lrp_triton.backend import BACKENDS
from lrp_triton.rules import LINEAR_RULES, MODES


class LatentTaps:
    """Where the layers of one applied model put the tensors whose relevance `latent=True` reports.

    Off (both lists None) unless an attribution turns them on; the layers call `heads(...)` with
    each attention output [B, N, H, D] and `neurons(...)` with each MLP's intermediate activation.
    """

    def __init__(self):
        self.head_outputs: list | None = None
        self.neuron_outputs: list | None = None

    def _keep(self, store, t):
        if store is not None and t.requires_grad:
            t.retain_grad()
            store.append(t)

    def heads(self, out: torch.Tensor) -> None:
        self._keep(self.head_outputs, out)

    def neurons(self, t: torch.Tensor) -> None:
        self._keep(self.neuron_outputs, t)


@dataclass(frozen=True)
class LRPOptions:
    """mode ("attnlrp", "cp-lrp", "gradient"), kernel backend, and the linear-layer rule."""

    mode: str
    backend: str
    linear_rule: str = "epsilon"
    gamma: float = 0.25
    taps: LatentTaps = field(default_factory=LatentTaps, compare=False, repr=False)

    @classmethod
    def checked(cls, mode="attnlrp", backend="auto", linear_rule="epsilon", gamma=0.25,
                where: str = "lrp_triton") -> "LRPOptions":
        """Validated options (a ValueError naming the bad value and the choices otherwise)."""
        if mode not in MODES:
            raise ValueError(f"{where}: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if backend not in BACKENDS:
            raise ValueError(f"{where}: unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if linear_rule not in LINEAR_RULES:
            raise ValueError(f"{where}: unknown linear_rule {linear_rule!r}; expected one of "
                             f"{', '.join(LINEAR_RULES)}")
        if linear_rule != "epsilon":
            if mode == "gradient":
                raise ValueError(f"{where}: linear_rule={linear_rule!r} is an LRP rule; mode 'gradient' keeps the "
                                 "exact gradient")
            if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not gamma >= 0:
                raise ValueError(f"{where}: gamma must be a non-negative number, got {gamma!r}")
            gamma = float(gamma)
        return cls(mode, backend, linear_rule, gamma)

    def same_rules(self, other: "LRPOptions") -> bool:
        """Same mode and linear rule (and gamma, where a gamma rule is used)."""
        return (self.mode == other.mode and self.linear_rule == other.linear_rule
                and (self.linear_rule == "epsilon" or self.gamma == other.gamma))
