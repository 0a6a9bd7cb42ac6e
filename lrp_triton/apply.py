"""`lrp_triton.apply(model)`: turn one HuggingFace model instance into an LRP model, undoably.

For this instance only:
- every module that holds the model's config gets a private copy of it whose attention
  implementation is "lrp_triton" (so other instances sharing the original config are untouched);
- norms, MLPs and MoE experts are swapped for lrp_triton layers sharing the same Parameters;
- each attention module is registered with the mode and backend to run.
- with `linear_rule="gamma"` or `"gamma-signed"`, the linear and convolution layers of the base
  model take that LRP gamma rule (task heads keep the epsilon rule).
`handle.remove()` (or leaving `with lrp_triton.apply(model):`) puts back the very same modules and
configs. Mode "gradient" swaps no norm or MLP (the model keeps its exact gradient everywhere); only
attention layers that build their own bias (T5) are swapped in every mode.
"""

from __future__ import annotations

import copy
import weakref

from torch import nn

from lrp_triton import attention_interface
from lrp_triton.attention_interface import AttentionOptions
from lrp_triton.ops.attention import ATTENTION_MODES
from lrp_triton.models import adapter_for
from lrp_triton.modules.gamma import gamma_replacement

LINEAR_RULES = ("epsilon", "gamma", "gamma-signed")

_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, LRPHandle]" = weakref.WeakKeyDictionary()


class LRPHandle:
    """Undo record of one `apply`; also a context manager."""

    def __init__(self, model, mode, backend, adapter, linear_rule="epsilon", gamma=0.25):
        self.model, self.mode, self.backend, self.adapter = model, mode, backend, adapter
        self.linear_rule, self.gamma = linear_rule, gamma
        self._swaps: list[tuple[nn.Module, str, nn.Module]] = []  # (parent, attribute, original)
        self._configs: list[tuple[nn.Module, object]] = []  # (module, original config)
        self._attention_modules: list[nn.Module] = []
        self.active = False

    def _install(self) -> None:
        attention_interface.register()
        modules = dict(self.model.named_modules())
        for name, module in list(modules.items()):
            new = self.adapter.replacement_for(module, self.mode, self.backend)
            if new is None:
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = modules[parent_name] if parent_name else self.model
            self._swaps.append((parent, attr, module))
            setattr(parent, attr, new)
        if self.mode != "gradient":
            self.adapter.check_all_handled(self.model)
        if self.linear_rule != "epsilon":
            self._install_gamma()
        copies = {}
        for module in self.model.modules():
            config = module.__dict__.get("config")
            if config is None or not hasattr(config, "_attn_implementation_internal"):
                continue
            if id(config) not in copies:
                private = copy.copy(config)
                private._attn_implementation_internal = attention_interface.NAME
                copies[id(config)] = private
            self._configs.append((module, config))
            module.config = copies[id(config)]
        for module in self.model.modules():
            if type(module).__name__.endswith("Attention"):
                attention_interface.OPTIONS[module] = AttentionOptions(mode=self.mode, backend=self.backend)
                self._attention_modules.append(module)
        self.active = True
        _ACTIVE[self.model] = self

    def _install_gamma(self) -> None:
        """linear_rule "gamma" / "gamma-signed": every nn.Linear / Conv1D / Conv2d inside the base model
        (encoder, patch embedding, pooler) takes that gamma rule; task heads outside it (classifier,
        LM head) keep the epsilon rule."""
        base = self.adapter.base_model(self.model)
        modules = dict(base.named_modules())  # after the swaps above: LRP layers hold the original linears
        for name, module in modules.items():
            new = gamma_replacement(module, self.gamma, signed=self.linear_rule == "gamma-signed")
            if new is None:
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = modules[parent_name] if parent_name else base
            self._swaps.append((parent, attr, module))
            setattr(parent, attr, new)

    def remove(self) -> None:
        """Restores the model exactly: original modules, configs and attention implementation."""
        if not self.active:
            return
        for module in self._attention_modules:
            attention_interface.OPTIONS.pop(module, None)
        for module, config in reversed(self._configs):
            module.config = config
        for parent, attr, original in reversed(self._swaps):
            setattr(parent, attr, original)
        self._swaps.clear()
        self._configs.clear()
        self._attention_modules.clear()
        self.active = False
        _ACTIVE.pop(self.model, None)

    def set_recorders(self, heads: list | None) -> None:
        """Points every attention module's head-output recorder at `heads` (None: off)."""
        for module in self._attention_modules:
            attention_interface.OPTIONS[module].recorder = heads

    def __enter__(self) -> "LRPHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        rule = f", linear_rule={self.linear_rule!r}, gamma={self.gamma}" if self.linear_rule != "epsilon" else ""
        return (f"LRPHandle({type(self.model).__name__}, mode={self.mode!r}, backend={self.backend!r}{rule}, "
                f"{state})")


def active_handle(model) -> LRPHandle | None:
    """The handle of an `apply` still in force on `model`, if any."""
    return _ACTIVE.get(model)


def apply(model, mode: str = "attnlrp", *, backend: str = "auto", linear_rule: str = "epsilon",
          gamma: float = 0.25) -> LRPHandle:
    """Makes `model` (this instance only) propagate relevance by `mode` in its backward pass.

    `linear_rule="gamma"` (or "gamma-signed", the sign-aware variant) also gives every nn.Linear /
    Conv1D / Conv2d of the base model that LRP gamma rule with `gamma` (see `lrp_triton.ops.gamma`);
    heads outside the base model keep the epsilon rule.
    Returns a handle: `handle.remove()` or `with lrp_triton.apply(model): ...` undoes it.
    Raises NotImplementedError for an unsupported model type (naming the supported ones).
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(ATTENTION_MODES)}")
    if linear_rule not in LINEAR_RULES:
        raise ValueError(f"unknown linear_rule {linear_rule!r}; expected one of {', '.join(LINEAR_RULES)}")
    if linear_rule != "epsilon":
        if mode == "gradient":
            raise ValueError(f"linear_rule={linear_rule!r} is an LRP rule; mode 'gradient' keeps the exact gradient")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
            raise ValueError(f"gamma must be a non-negative number, got {gamma!r}")
    adapter = adapter_for(model)
    if model in _ACTIVE:
        raise RuntimeError(f"lrp_triton.apply was already called on this {type(model).__name__} "
                           f"({_ACTIVE[model]!r}); call handle.remove() first")
    handle = LRPHandle(model, mode, backend, adapter, linear_rule, float(gamma) if linear_rule != "epsilon" else gamma)
    try:
        handle._install()
    except Exception:
        handle.active = True
        handle.remove()
        raise
    return handle
