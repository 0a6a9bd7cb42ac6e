"""What every attribution driver shares: the model's state for one call, relevance leaves, the
explained scores' backward (K scores in one batched pass), and packing the results.

Relevance of a tensor is `x * x.grad` after a backward pass through the applied model (see
`lrp_triton.rules`); a *leaf* is a tensor the driver detaches and marks as requiring grad, so that
its grad, and hence its relevance, can be read after the backward pass.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from lrp_triton.accelerate_hooks import weights_loaded
from lrp_triton.apply import LRPHandle, active_handle, apply_options, model_lock
from lrp_triton.attribution.devices import execution_device, input_device, on_device
from lrp_triton.attribution.targets import check_finite_relevance
from lrp_triton.backend import upcast
from lrp_triton.options import LRPOptions
from lrp_triton.render.tokens import tokenizer_style
from lrp_triton.wrappers import unwrap


# ------------------------------------------------------------------------------------------------
# Model state for one call
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def frozen_eval(model: nn.Module):
    """Eval mode (no dropout) and frozen parameters for the call; afterwards every module's own
    training flag and every parameter's own requires_grad flag as they were."""
    modes = [(m, m.training) for m in model.modules()]
    # each Parameter, and the one now at its module and name: an offloading hook (accelerate) puts a new
    # Parameter there at each forward, taking over the flag of the one it replaces
    flags = [(m, name, p, p.requires_grad) for m in model.modules() for name, p in m.named_parameters(recurse=False)]
    model.eval()
    for _, _, p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, name, p, flag in flags:
            p.requires_grad_(flag)
            getattr(m, name).requires_grad_(flag)
        for m, training in modes:
            m.training = training


def _usable(value):
    """Tensors made under torch.inference_mode cannot enter autograd: a normal copy of them."""
    if isinstance(value, torch.Tensor) and value.is_inference():
        return value.clone()
    return value


def attribution_call(fn: Callable) -> Callable:
    """Wraps an attribution entry point `fn(model, ...)`: one call at a time per model instance
    (other threads wait), gradients on whatever the caller's grad mode (`torch.no_grad`,
    `torch.inference_mode`), inputs made under inference mode copied into normal tensors, and the
    transformers model inside a known wrapper explained (`lrp_triton.wrappers.unwrap`); the result's
    tensors on the device of the tensor input (else the model's input device, `devices.on_device`),
    wherever the model's layers are."""

    @functools.wraps(fn)
    def call(model, *args, **kwargs):
        model = unwrap(model, fn.__name__)
        with torch.inference_mode(False), torch.enable_grad(), model_lock(model):
            if any(p.is_inference() for p in model.parameters()):
                raise RuntimeError("attribute: the model's parameters were created under torch.inference_mode, so "
                                   "autograd cannot use them; load or build the model outside inference_mode")
            result = fn(model, *(_usable(a) for a in args), **{k: _usable(v) for k, v in kwargs.items()})
        return on_device(result, input_device(args, kwargs) or execution_device(model))

    return call


def describe(options: LRPOptions) -> str:
    rule = f", linear_rule={options.linear_rule!r}, gamma={options.gamma}" if options.linear_rule != "epsilon" else ""
    return f"mode {options.mode!r}{rule}"


@contextlib.contextmanager
def applied_for_call(model: nn.Module, options: LRPOptions):
    """The model's own handle when it is applied with the same rules (kept afterwards), else an
    `apply` for the call (removed afterwards). Yields the handle. The adapter's modules that the
    forward reads without calling them (`Adapter.read_without_forward`) are loaded meanwhile, where
    accelerate offloaded them."""
    handle: LRPHandle | None = active_handle(model)
    if handle is not None:
        if not handle.options.same_rules(options):
            raise ValueError(f"attribute: the model is applied with {describe(handle.options)} but "
                             f"{describe(options)} was asked for; remove the handle or ask for the same rules")
        with read_modules_loaded(handle):
            yield handle
        return
    handle = apply_options(model, options)
    try:
        with read_modules_loaded(handle):
            yield handle
    finally:
        handle.remove()


@contextlib.contextmanager
def read_modules_loaded(handle: LRPHandle):
    """`weights_loaded` for each of the adapter's `read_without_forward` modules the model holds."""
    base = handle.adapter.base_model(handle.model)
    with contextlib.ExitStack() as stack:
        for path in handle.adapter.read_without_forward:
            try:
                module = base.get_submodule(path)
            except AttributeError:  # a config without it (DeBERTa without relative attention)
                continue
            stack.enter_context(weights_loaded(handle.model, module))
        yield


@contextlib.contextmanager
def checkpointed(layers: Iterable[nn.Module], enabled: bool):
    """Each layer recomputes its forward in the backward (non-reentrant checkpointing)."""
    if not enabled:
        yield
        return
    saved = []  # (layer, its own instance-level forward or None), e.g. accelerate's hooks
    for layer in layers:
        saved.append((layer, vars(layer).get("forward")))
        original = layer.forward
        layer.forward = (lambda fn: lambda *a, **kw: torch_checkpoint(fn, *a, use_reentrant=False, **kw))(original)
    try:
        yield
    finally:
        for layer, own in saved:
            if own is None:
                del layer.forward  # the class's forward shows through again
            else:
                layer.forward = own


# ------------------------------------------------------------------------------------------------
# Relevance leaves
# ------------------------------------------------------------------------------------------------
def token_relevance(x: torch.Tensor, grad: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """sum over the last dim of x * grad (grad: x.grad; 0 where None), in float32 (float64 for float64
    x), a chunk of positions at a time: [..., N, hidden] -> [..., N]; never a float32 copy of x."""
    grad = x.grad if grad is None else grad
    out = torch.zeros(x.shape[:-1], dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    if grad is None:
        return out
    for s in range(0, x.shape[-2], chunk):
        out[..., s:s + chunk] = (upcast(x[..., s:s + chunk, :]) * upcast(grad[..., s:s + chunk, :])).sum(-1)
    return out


def leaf(t: torch.Tensor) -> torch.Tensor:
    """`t` detached and requiring grad: its grad after a backward pass carries its relevance."""
    return t.detach().requires_grad_(True)


class OutputTap:
    """A forward hook that keeps the outputs of `module` (None: no module, nothing kept).

    `as_leaf=True` replaces each output by a leaf of its own (the relevance stops there and is read
    from it); otherwise the output is kept as it is (with retain_grad, when `retain`)."""

    def __init__(self, module: nn.Module | None, as_leaf: bool = True, retain: bool = True):
        self.tensors: list[torch.Tensor] = []
        self.as_leaf, self.retain = as_leaf, retain
        self._hook = None if module is None else module.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        if self.as_leaf:
            output = leaf(output)
        elif self.retain and output.requires_grad:
            output.retain_grad()
        self.tensors.append(output)
        return output

    @property
    def first(self) -> torch.Tensor | None:
        return self.tensors[0] if self.tensors else None

    def relevance(self, like: torch.Tensor | None = None) -> torch.Tensor | None:
        """Token relevance of the first output (None when nothing was kept), expanded to like's shape."""
        if self.first is None:
            return None
        r = token_relevance(self.first)
        return r if like is None else r.expand(like.shape)

    def __enter__(self) -> "OutputTap":
        return self

    def __exit__(self, *exc) -> None:
        if self._hook is not None:
            self._hook.remove()


# ------------------------------------------------------------------------------------------------
# The explained scores' backward: K scores, one batched pass
# ------------------------------------------------------------------------------------------------
# Scores explained together by one batched backward pass, at most: each activation gradient of the
# backward holds K streams (one layer at a time), so K is also capped by STREAM_ELEMENTS, the
# elements that K streams of one input-sized gradient may take (2^28: 1 GiB in float32; the MLP's
# intermediate gradients are a few times that). Llama-8B shape at N = 8192: K <= 8; at 128k: K = 1.
SCORES_PER_BACKWARD = 16
STREAM_ELEMENTS = 1 << 28


def scores_per_pass(leaves: list[torch.Tensor], chunk: int | None = None) -> int:
    """K for one batched backward: `chunk` (default SCORES_PER_BACKWARD), capped by STREAM_ELEMENTS
    over the largest leaf's size."""
    chunk = SCORES_PER_BACKWARD if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"attribute: scores per backward pass must be a positive int, got {chunk!r}")
    largest = max((t.numel() for t in leaves), default=1)
    return max(1, min(chunk, STREAM_ELEMENTS // max(1, largest)))


def batched_grads(scores: torch.Tensor, tensors: list[torch.Tensor], columns: range,
                  retain_graph: bool) -> list[torch.Tensor]:
    """The gradients of scores[..., j].sum() for each j in `columns` with respect to each of
    `tensors`, stacked: one [len(columns), *t.shape] per tensor (zeros where t is not reached).

    One column: a plain backward. Several: one backward pass under `torch.func.vmap` over the K
    stacked one-hot cotangents, every op of the graph batched over the K streams (the LRP ops take
    them through `lrp_triton.ops.streams`: attention recomputes P once for the K streams).
    """
    def grads(cotangent):
        return torch.autograd.grad(scores, tensors, cotangent, retain_graph=retain_graph, materialize_grads=True)

    if len(columns) == 1:
        one_hot = torch.zeros_like(scores)
        one_hot[..., columns[0]] = 1
        return [g[None] for g in grads(one_hot)]
    one_hot = torch.zeros(len(columns), *scores.shape, dtype=scores.dtype, device=scores.device)
    for k, j in enumerate(columns):
        one_hot[k, ..., j] = 1
    with warnings.catch_warnings():  # ops without a batching rule (e.g. SDPA's CPU backward) loop over K
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        return list(torch.func.vmap(grads)(one_hot))


def one_backward_per_score(scores: torch.Tensor, leaves: list[torch.Tensor], read: Callable[[], dict],
                           progress: Callable[[int, int], None] | None = None, *,
                           watched: Iterable[torch.Tensor] = (), chunk: int | None = None) -> list[dict]:
    """For each column j of scores [..., P], the grads of scores[..., j].sum() (rows are independent,
    so one pass explains every row) set on `leaves` and `watched` (the tensors read() takes .grad
    of: leaves and retained outputs, latent records), then read() (a ValueError if any of it is NaN
    or inf). The P scores go through the backward `scores_per_pass(leaves, chunk)` at a time, each
    chunk in one batched pass (`batched_grads`). `progress(done, total)` after each read()."""
    n = scores.shape[-1]
    chunk = scores_per_pass(leaves, chunk)
    tensors = list({id(t): t for t in [*leaves, *watched]}.values())
    out = []
    for start in range(0, n, chunk):
        columns = range(start, min(n, start + chunk))
        for t in tensors:
            t.grad = None
        grads = batched_grads(scores, tensors, columns, retain_graph=columns.stop < n)
        for k, j in enumerate(columns):
            for t, g in zip(tensors, grads):
                t.grad = g[k]
            out.append(read())
            check_finite_relevance(out[-1], score=j if n > 1 else None)
            if progress is not None:
                progress(j + 1, n)
    for t in tensors:
        t.grad = None
    return out


def stack_scores(per_score: list[dict], several: bool) -> dict:
    """Per-score dicts of tensors (or None) -> one dict: stacked on dim 1 when several scores were
    explained, the single score's tensors otherwise."""
    out = {}
    for key, first in per_score[0].items():
        if first is None:
            out[key] = None
        else:
            out[key] = (torch.stack([p[key] for p in per_score], dim=1) if several else first).detach()
    return out


def per_score(t: torch.Tensor | None, several: bool) -> torch.Tensor | None:
    """A [..., P] field as it is for several scores, its single column [...] otherwise."""
    return t if t is None or several else t[..., 0]


def output_size(head: nn.Module) -> int:
    """The number of logits an output projection (possibly wrapped, e.g. LoRA) gives."""
    weight = getattr(head, "weight", None)
    return weight.shape[0] if isinstance(weight, torch.Tensor) else head.out_features


def token_names(tokenizer, input_ids, targets=None, contrasts=None) -> dict:
    """Token strings of the inputs, targets and contrasts, as Attribution fields ({} without a tokenizer)."""
    if tokenizer is None:
        return {}

    def convert(ids):
        if ids is None:
            return None
        return [tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]

    return {"tokens": convert(input_ids), "target_tokens": convert(targets), "contrast_tokens": convert(contrasts)}


def display_extras(tokenizer) -> dict:
    """How the tokenizer writes words (`Attribution.extras["token_style"]`, read by the renderers)."""
    style = tokenizer_style(tokenizer)
    return {} if style is None else {"token_style": style}
