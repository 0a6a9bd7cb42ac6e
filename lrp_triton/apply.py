"""`lrp_triton.apply(model)`: turn one HuggingFace model instance into an LRP model, undoably.

For this instance only:
- every module that holds the model's config gets a private copy of it whose attention
  implementation is "lrp_triton", and the rule options as `module.lrp_options` (read by the
  attention interface); other instances sharing the original config are untouched, and the config
  saves as before (`save_pretrained` while applied writes the original settings);
- norms, MLPs and MoE experts are swapped for lrp_triton layers sharing the same Parameters, each
  built with the same options (`from_hf(module, options)`);
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
from lrp_triton.models import adapter_for
from lrp_triton.models.base import Adapter
from lrp_triton.modules.gamma import gamma_replacement
from lrp_triton.options import LRPOptions

_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, LRPHandle]" = weakref.WeakKeyDictionary()


class LRPHandle:
    """Undo record of one `apply`; also a context manager. `options` is what the model runs with."""

    def __init__(self, model: nn.Module, options: LRPOptions, adapter: Adapter):
        self.model, self.options, self.adapter = model, options, adapter
        self._swaps: list[tuple[nn.Module, str, nn.Module]] = []  # (parent, attribute, original)
        self._configs: list[tuple[nn.Module, object]] = []  # (module, original config)
        self.active = False

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def backend(self) -> str:
        return self.options.backend

    @property
    def linear_rule(self) -> str:
        return self.options.linear_rule

    @property
    def gamma(self) -> float:
        return self.options.gamma

    def _swap(self, root: nn.Module, replacement_for) -> None:
        """Replaces each module of `root` for which replacement_for(module) gives a new one."""
        modules = dict(root.named_modules())
        for name, module in list(modules.items()):
            new = replacement_for(module)
            if new is None:
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = modules[parent_name] if parent_name else root
            self._swaps.append((parent, attr, module))
            setattr(parent, attr, new)

    def _install(self) -> None:
        attention_interface.register()
        options = self.options
        self._swap(self.model, lambda m: self.adapter.replacement_for(m, options))
        if options.mode != "gradient":
            self.adapter.check_all_handled(self.model)
        if options.linear_rule != "epsilon":
            # every nn.Linear / Conv1D / Conv2d inside the base model (encoder, patch embedding, pooler);
            # task heads outside it (classifier, LM head) keep the epsilon rule
            signed = options.linear_rule == "gamma-signed"
            self._swap(self.adapter.base_model(self.model), lambda m: gamma_replacement(m, options.gamma, signed))
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
            module.lrp_options = options
        self.active = True
        _ACTIVE[self.model] = self

    def remove(self) -> None:
        """Restores the model exactly: original modules, configs and attention implementation."""
        if not self.active:
            return
        for module, config in reversed(self._configs):
            module.config = config
            module.__dict__.pop("lrp_options", None)
        for parent, attr, original in reversed(self._swaps):
            setattr(parent, attr, original)
        self._swaps.clear()
        self._configs.clear()
        self.active = False
        _ACTIVE.pop(self.model, None)

    def __enter__(self) -> "LRPHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        o = self.options
        rule = f", linear_rule={o.linear_rule!r}, gamma={o.gamma}" if o.linear_rule != "epsilon" else ""
        return f"LRPHandle({type(self.model).__name__}, mode={o.mode!r}, backend={o.backend!r}{rule}, {state})"


def active_handle(model) -> LRPHandle | None:
    """The handle of an `apply` still in force on `model`, if any."""
    return _ACTIVE.get(model)


def apply_options(model, options: LRPOptions) -> LRPHandle:
    """`apply` with options already validated (`LRPOptions.checked`)."""
    adapter = adapter_for(model)
    if model in _ACTIVE:
        raise RuntimeError(f"lrp_triton.apply was already called on this {type(model).__name__} "
                           f"({_ACTIVE[model]!r}); call handle.remove() first")
    handle = LRPHandle(model, options, adapter)
    try:
        handle._install()
    except Exception:
        handle.active = True
        handle.remove()
        raise
    return handle


def apply(model, mode: str = "attnlrp", *, backend: str = "auto", linear_rule: str = "epsilon",
          gamma: float = 0.25) -> LRPHandle:
    """Makes `model` (this instance only) propagate relevance by `mode` in its backward pass.

    `mode`: "attnlrp", "cp-lrp" or "gradient" (see `lrp_triton.rules`). `linear_rule="gamma"` (or
    "gamma-signed", the sign-aware variant) also gives every nn.Linear / Conv1D / Conv2d of the base
    model that LRP gamma rule with `gamma` (see `lrp_triton.ops.gamma`); heads outside the base model
    keep the epsilon rule.
    Returns a handle: `handle.remove()` or `with lrp_triton.apply(model): ...` undoes it.
    Raises NotImplementedError for an unsupported model type (naming the supported ones).
    """
    return apply_options(model, LRPOptions.checked(mode, backend, linear_rule, gamma, where="apply"))
