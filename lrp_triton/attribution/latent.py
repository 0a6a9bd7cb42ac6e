"""Latent relevance (`attribute(..., latent=True)`): the residual stream, attention heads, MLP neurons.

While recording, the applied model's `LatentTaps` keep every attention output [B, N, H, D] and MLP
intermediate activation (with retain_grad), and a pre-hook on each layer keeps the residual stream
entering it. After each backward pass `read()` turns them into relevance:
"residual" [B, N] per layer, "heads" [B, H] per attention module, "neurons" [B, intermediate] per MLP
(summed over positions; None for a model whose MLPs record nothing).
"""

from __future__ import annotations

import contextlib

import torch

from lrp_triton.attribution.core import token_relevance
from lrp_triton.backend import upcast


class LatentRecorder:
    """Collects, with retain_grad, the tensors whose relevance `latent=True` reports."""

    def __init__(self, taps, layers):
        self.residual: list[torch.Tensor] = []
        self.taps = taps
        taps.head_outputs, taps.neuron_outputs = [], []
        self._hooks = [layer.register_forward_pre_hook(self._residual_hook, with_kwargs=True) for layer in layers]

    def _residual_hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.requires_grad:
            hidden.retain_grad()
            self.residual.append(hidden)

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self.taps.head_outputs = self.taps.neuron_outputs = None

    def tensors(self) -> list[torch.Tensor]:
        """Every recorded tensor (whose grad `read()` takes)."""
        return [*self.residual, *self.taps.head_outputs, *self.taps.neuron_outputs]

    def read(self) -> dict:
        """Relevance of each recorded tensor, from the backward pass just run; resets the grads."""
        heads, neurons = self.taps.head_outputs, self.taps.neuron_outputs
        out = {
            "residual": [token_relevance(h) for h in self.residual],
            "heads": [(upcast(o) * upcast(o.grad)).sum(dim=(1, 3)) for o in heads],
            "neurons": [(upcast(n) * upcast(n.grad)).sum(dim=1) for n in neurons] or None,
        }
        for t in self.residual + heads + neurons:
            t.grad = None
        return out


@contextlib.contextmanager
def recording(enabled: bool, handle, layers):
    """A LatentRecorder on the applied model's taps while the block runs (None when not enabled)."""
    if not enabled:
        yield None
        return
    recorder = LatentRecorder(handle.options.taps, layers)
    try:
        yield recorder
    finally:
        recorder.close()


def stack_latent(per_score: list[dict], several: bool) -> dict:
    """Lists over scores of dicts of lists over layers -> dict of lists over layers ([B, P, ...])."""
    if not several:
        return per_score[0]
    out = {}
    for key, first in per_score[0].items():
        out[key] = None if first is None else [torch.stack([p[key][i] for p in per_score], dim=1)
                                               for i in range(len(first))]
    return out
