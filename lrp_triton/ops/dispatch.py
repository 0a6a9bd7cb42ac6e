"""Backend dispatch of the ops: the (forward, backward) pair of one kernel for "torch" or "triton".

The PyTorch twins are imported with the op; the Triton launchers only when a Triton backend is
first used (importing lrp_triton never imports triton).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class KernelPair:
    """One op's forward and backward on each backend (the Triton ones named by module and function)."""

    torch_forward: Callable
    torch_backward: Callable
    triton_module: str
    triton_forward: str
    triton_backward: str

    def __call__(self, backend: str) -> tuple[Callable, Callable]:
        """(forward, backward) for a resolved backend, "torch" or "triton"."""
        if backend == "torch":
            return self.torch_forward, self.torch_backward
        module = importlib.import_module(self.triton_module)
        return getattr(module, self.triton_forward), getattr(module, self.triton_backward)
