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
import threading
import weakref
from typing import NamedTuple

from torch import nn

from lrp_triton import attention_interface
from lrp_triton.accelerate_hooks import carry_hooks
from lrp_triton.models import adapter_for
from lrp_triton.models.base import Adapter
from lrp_triton.modules.gamma import gamma_replacement
from lrp_triton.options import LRPOptions
from lrp_triton.wrappers import check_gamma_compatible, unwrap

_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, LRPHandle]" = weakref.WeakKeyDictionary()
_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()

# the hook tables a replacement shares with the module it replaces (the very same dicts)
_HOOK_TABLES = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
                "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises apply, remove and attribute on one model instance (re-entrant)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


class _Swap(NamedTuple):
    parent: nn.Module
    attr: str
    original: nn.Module
    replacement: nn.Module


class _ConfigCopy(NamedTuple):
    module: nn.Module
    original: object
    private: object


class LRPHandle:
    """Undo record of one `apply`; also a context manager. `options` is what the model runs with.

    While applied, `copy.deepcopy(model)` and pickling (`torch.save`) give the plain model: the
    copy is taken with the original modules and configs in place (and the user's edits to the
    config), so it holds no LRP layer and no handle.
    """

    def __init__(self, model: nn.Module, options: LRPOptions, adapter: Adapter):
        self.model, self.options, self.adapter = model, options, adapter
        self._swaps: list[_Swap] = []
        self._configs: list[_ConfigCopy] = []
        self._snapshots: dict[int, dict] = {}  # id(private config) -> its attributes when installed
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
        """Replaces each module of `root` for which replacement_for(module) gives a new one; the new
        module shares the old one's hook tables, so the user's hooks keep running, and runs the old
        one's accelerate hook (`lrp_triton.accelerate_hooks`), so a dispatched or offloaded model runs."""
        modules = dict(root.named_modules())
        for name, module in list(modules.items()):
            new = replacement_for(module)
            if new is None:
                continue
            for table in _HOOK_TABLES:
                if hasattr(module, table):
                    setattr(new, table, getattr(module, table))
            parts = name.split(".")
            carry_hooks(module, new, [modules[".".join(parts[:i])] for i in range(len(parts))])
            parent_name, _, attr = name.rpartition(".")
            parent = modules[parent_name] if parent_name else root
            self._swaps.append(_Swap(parent, attr, module, new))
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
            if self.adapter.kind == "vision_language":  # its Conv3d patch embedding has no gamma layer yet
                raise NotImplementedError(f"linear_rule={options.linear_rule!r} is not supported for "
                                          f"{self.adapter.family} models yet; use the epsilon rule")
            check_gamma_compatible(self.model)
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
                self._snapshots[id(private)] = dict(vars(private))
            self._configs.append(_ConfigCopy(module, config, copies[id(config)]))
        self.active = True
        self._attach()
        _ACTIVE[self.model] = self

    def _attach(self) -> None:
        """Puts the replacements, private configs and options in place (install, and after a copy)."""
        for s in self._swaps:
            if getattr(s.parent, s.attr) is s.original:
                setattr(s.parent, s.attr, s.replacement)
        for c in self._configs:
            if c.module.__dict__.get("config") is c.original:
                c.module.config = c.private
                c.module.lrp_options = self.options
        self.model.__deepcopy__ = self._plain_deepcopy
        self.model.__reduce_ex__ = self._plain_reduce_ex

    def _detach(self) -> None:
        """Puts the originals back where the replacements still are; what the user put there since stays."""
        for name in ("__deepcopy__", "__reduce_ex__"):
            self.model.__dict__.pop(name, None)
        for c in reversed(self._configs):
            if c.module.__dict__.get("config") is c.private:
                c.module.config = c.original
            c.module.__dict__.pop("lrp_options", None)
        for s in reversed(self._swaps):
            if getattr(s.parent, s.attr) is s.replacement:
                setattr(s.parent, s.attr, s.original)

    def _keep_config_edits(self) -> None:
        """Carries what the user set on a private config while applied over to the original config."""
        done = set()
        for c in self._configs:
            if id(c.private) in done:
                continue
            done.add(id(c.private))
            before, now = self._snapshots[id(c.private)], vars(c.private)
            for key, value in now.items():
                if key != "_attn_implementation_internal" and (key not in before or before[key] is not value):
                    setattr(c.original, key, value)
            for key in before.keys() - now.keys():
                if hasattr(c.original, key):
                    delattr(c.original, key)
            self._snapshots[id(c.private)] = dict(now)

    def _plain_deepcopy(self, memo):
        with model_lock(self.model):
            self._keep_config_edits()
            self._detach()
            try:
                return copy.deepcopy(self.model, memo)
            finally:
                self._attach()

    def _plain_reduce_ex(self, protocol):
        plain = self._plain_deepcopy({})
        return type(plain).__reduce_ex__(plain, protocol)

    def remove(self) -> None:
        """Restores the model: the original modules, configs and attention implementation where the
        replacements still are, keeping the user's edits to the config made while applied."""
        with model_lock(self.model):
            if not self.active:
                return
            self._keep_config_edits()
            self._detach()
            self._swaps.clear()
            self._configs.clear()
            self._snapshots.clear()
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
    """The handle of an `apply` still in force on `model` (or on the model a wrapper holds), if any."""
    return _ACTIVE.get(unwrap(model))


def apply_options(model, options: LRPOptions) -> LRPHandle:
    """`apply` with options already validated (`LRPOptions.checked`)."""
    model = unwrap(model, "apply")
    adapter = adapter_for(model)
    with model_lock(model):
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
    A PEFT model is applied in the transformers model it holds (see `lrp_triton.wrappers`).
    Returns a handle: `handle.remove()` or `with lrp_triton.apply(model): ...` undoes it.
    Raises NotImplementedError for an unsupported model type (naming the supported ones).
    """
    return apply_options(model, LRPOptions.checked(mode, backend, linear_rule, gamma, where="apply"))
