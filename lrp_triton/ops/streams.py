"""K cotangent streams through one backward: the ops' backwards under `torch.func.vmap`.

Explaining K scores (several positions, several targets, every generated token) runs the model's
backward once with K stacked cotangents (`lrp_triton.attribution.core.batched_grads`): a
`torch.func.vmap` over `torch.autograd.grad`. Every custom autograd Function of `lrp_triton.ops`
then meets vmap twice, and both are handled here:

- Its backward runs with batched gradients (functorch BatchedTensors, one stream per explained
  score). Plain PyTorch code there is batched by vmap's own rules; a kernel call is not (a Triton
  launch needs real tensors, the twin's chunk loop writes in place). So each backward calls its
  kernel through `stream_backward(kernel, n_grads, *args)`: outside vmap that is `kernel.single`;
  under vmap, the first `n_grads` arguments (the gradients) arrive stacked on dim 0 and
  `kernel.stacked` takes all K streams in one call (attention recomputes its probabilities P once
  per tile and applies them to the K streams; a norm folds K into its rows); without `stacked` the
  kernel runs once per stream.
- Its forward may run under vmap with unbatched inputs (checkpointing recomputes the forward
  inside the backward): functorch needs the Function written with `setup_context` and a `vmap`
  staticmethod (`refuse_batched_inputs`), which is called only when an input is batched: a vmap of
  the forward over its inputs is refused with a clear error (the ops explain one batch of inputs;
  pass the samples as a batch instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class StreamKernel:
    """A backward kernel: `single(*grads, *saved)` -> tensor or tuple of tensors (one stream), and
    optionally `stacked(*grads, *saved)` with each gradient [K, ...] and each output [K, ...]."""

    single: Callable
    stacked: Callable | None = None

    def run_stacked(self, n_grads: int, args: list) -> tuple | torch.Tensor:
        if self.stacked is not None:
            return self.stacked(*args)
        k = args[0].shape[0]
        per_stream = [self.single(*(a[i] for a in args[:n_grads]), *args[n_grads:]) for i in range(k)]
        if isinstance(per_stream[0], torch.Tensor):
            return torch.stack(per_stream)
        return tuple(torch.stack(outs) for outs in zip(*per_stream))


def _out_dims(out):
    return 0 if isinstance(out, torch.Tensor) else tuple(0 for _ in out)


class _StreamBackward(torch.autograd.Function):
    """`kernel.single(*args)`; under vmap over the gradients, `kernel.stacked` (module docstring)."""

    @staticmethod
    def forward(kernel: StreamKernel, n_grads: int, *args):
        return kernel.single(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("lrp_triton: the backward of an LRP op cannot be differentiated again "
                           "(create_graph=True is not supported)")

    @staticmethod
    def vmap(info, in_dims, kernel: StreamKernel, n_grads: int, *args):
        dims = in_dims[2:]
        if any(d is not None for d in dims[n_grads:]):  # saved tensors batched too: one call per sample
            outs = [kernel.single(*(a if d is None else a.select(d, i) for a, d in zip(args, dims)))
                    for i in range(info.batch_size)]
            out = torch.stack(outs) if isinstance(outs[0], torch.Tensor) else tuple(map(torch.stack, zip(*outs)))
            return out, _out_dims(out)
        grads = [a.movedim(d, 0) if d is not None else a.expand(info.batch_size, *a.shape)
                 for a, d in zip(args[:n_grads], dims)]
        out = kernel.run_stacked(n_grads, [*grads, *args[n_grads:]])
        return out, _out_dims(out)


def stream_backward(kernel: StreamKernel, n_grads: int, *args):
    """kernel.single(*args) for one cotangent stream, kernel.stacked for K under vmap (module docstring).

    The first `n_grads` of `args` are the incoming gradients; the rest (saved tensors, None) are
    shared by every stream. Non-tensor options go into the kernel (functools.partial)."""
    return _StreamBackward.apply(kernel, n_grads, *args)


def refuse_batched_inputs(op: str) -> Callable:
    """A `vmap` staticmethod for an op's forward Function: called by functorch only when an input is
    batched, which the ops do not support (their backward under vmap over cotangents is supported)."""

    def vmap(info, in_dims, *args):
        raise NotImplementedError(f"{op}: torch.func.vmap over the op's inputs is not supported; pass the "
                                  "samples as one batch (vmap over the backward's cotangents is supported)")

    return staticmethod(vmap)
