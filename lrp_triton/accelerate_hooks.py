"""A model dispatched by accelerate (`device_map`, `dispatch_model`, `cpu_offload`, `disk_offload`):
its hooks carried over to the lrp_triton layers that `apply` puts in.

accelerate runs such a model through a hook on each module (`module._hf_hook`, installed by
`accelerate.hooks.add_hook_to_module`, which wraps `module.forward`): before the forward it moves
the inputs to the module's execution device and, for an offloaded module, loads the module's own
tensors (kept on the meta device in between) from their CPU or disk copy by name; after it, it
puts them back on meta. The layer replacing such a module holds the same tensors under the same
names (`weight`, `bias`, ...), so it gets a hook that runs the very same hook object: its tensors
are loaded into the replacement for its forward, exactly as into the original. The autograd graph
keeps the loaded tensors the backward pass needs, so relevance flows as in the plain model.

`weights_loaded` loads a module's offloaded tensors, with the hooks that load them for its forward,
for a read outside the forward (a vision model's position and class-token embeddings, read by the
driver after the backward pass).

The original module keeps its own hook untouched: `remove()` puts it back as it was. Nothing here
imports accelerate unless a module carries one of its hooks.
"""

from __future__ import annotations

import contextlib

from torch import nn


class ForwardedHook:
    """An accelerate hook for a replacement layer: runs the replaced module's `hook` around its forward.

    `init_hook` and `detach_hook` leave the module alone: `hook` was set up on the original (whose
    tensors it offloaded) and is detached from there, not from the replacement."""

    def __init__(self, hook):
        self.hook = hook

    @property
    def no_grad(self) -> bool:
        return self.hook.no_grad

    def init_hook(self, module: nn.Module) -> nn.Module:
        return module

    def pre_forward(self, module: nn.Module, *args, **kwargs):
        return self.hook.pre_forward(module, *args, **kwargs)

    def post_forward(self, module: nn.Module, output):
        return self.hook.post_forward(module, output)

    def detach_hook(self, module: nn.Module) -> nn.Module:
        return module


def tensor_names(module: nn.Module, recurse: bool, buffers: bool) -> set[str]:
    names = {name for name, _ in module.named_parameters(recurse=recurse)}
    if buffers:
        names |= {name for name, _ in module.named_buffers(recurse=recurse)}
    return names


def check_offloaded_names(original: nn.Module, replacement: nn.Module, hook) -> None:
    """An offloading hook loads the replacement's tensors by name from the original's weights: every
    tensor the replacement holds must be one the original holds under that name."""
    for h in getattr(hook, "hooks", (hook,)):  # a SequentialHook holds several
        if not getattr(h, "offload", False):
            continue
        recurse, buffers = bool(getattr(h, "place_submodules", False)), bool(getattr(h, "offload_buffers", False))
        missing = tensor_names(replacement, recurse, buffers) - tensor_names(original, recurse, buffers)
        if missing:
            raise NotImplementedError(
                f"lrp_triton.apply: {type(original).__name__} is offloaded by accelerate, and its LRP layer "
                f"{type(replacement).__name__} holds tensors it does not ({', '.join(sorted(missing))}); keep this "
                "module on a device (device_map) to explain the model")


def check_preloaded_names(original: nn.Module, replacement: nn.Module, ancestors) -> None:
    """Inside a block whose offloading hook loads its whole subtree by name (`preload_module_classes`),
    the replacement must hold its tensors under the original's names (else the block's hook looks up
    names its weights never had)."""
    for ancestor in ancestors:
        for h in offloading_hooks(ancestor):
            if not getattr(h, "place_submodules", False):
                continue
            buffers = bool(getattr(h, "offload_buffers", False))
            missing = tensor_names(replacement, True, buffers) - tensor_names(original, True, buffers)
            if missing:
                raise NotImplementedError(
                    f"lrp_triton.apply: {type(original).__name__} sits in {type(ancestor).__name__}, whose accelerate "
                    f"hook loads the tensors of its whole subtree by name (preload_module_classes), and its LRP "
                    f"layer {type(replacement).__name__} holds them under other names ({', '.join(sorted(missing))}); "
                    "offload without preloading that block, or keep it on a device")


def carry_hook(original: nn.Module, replacement: nn.Module) -> None:
    """Gives `replacement` a hook running the accelerate hook of `original`, if it has one."""
    hook = getattr(original, "_hf_hook", None)
    if hook is None:
        return
    check_offloaded_names(original, replacement, hook)
    from accelerate.hooks import add_hook_to_module  # only a model dispatched by accelerate gets here

    add_hook_to_module(replacement, ForwardedHook(hook))


def loads_submodules(module: nn.Module) -> bool:
    """Whether the accelerate hook on `module` loads the tensors of its whole subtree (`place_submodules`:
    `preload_module_classes`, a block placed as one)."""
    hook = getattr(module, "_hf_hook", None)
    hooks = [getattr(h, "hook", h) for h in getattr(hook, "hooks", (hook,))]  # a ForwardedHook runs h.hook
    return any(getattr(h, "place_submodules", False) for h in hooks)


def carry_hooks(original: nn.Module, replacement: nn.Module, ancestors: list[nn.Module] = ()) -> None:
    """`carry_hook` for the replacement and each new layer it built inside (an MoE block's LRP experts,
    a prediction head's LRP norm), from the original's module whose tensors it holds (the very same
    Parameters); the original's modules it reuses keep their own hooks. Then a layer of the
    replacement that still holds a tensor on the meta device with no hook to load it is refused: it
    would compute with no weights (unless the hook of one of its `ancestors` in the model, or of one
    of its own enclosing layers, loads the whole subtree)."""
    owner = {}  # id(tensor) -> the original's module holding it directly
    for module in original.modules():
        for _, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            owner.setdefault(id(t), module)
    reused = {id(m) for m in original.modules()}
    for module in replacement.modules():
        if id(module) in reused or hasattr(module, "_hf_hook"):
            continue
        held = [t for _, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]
        olds = {id(owner[id(t)]): owner[id(t)] for t in held if id(t) in owner}
        if module is replacement:
            olds = {id(original): original}
        if len(olds) == 1:
            carry_hook(next(iter(olds.values())), module)
    if any(loads_submodules(m) for m in ancestors):
        check_preloaded_names(original, replacement, ancestors)
        return
    covered = [name for name, module in replacement.named_modules() if loads_submodules(module)]
    for name, module in replacement.named_modules():
        if hasattr(module, "_hf_hook") or any(name.startswith(c + "." if c else "") for c in covered):
            continue
        meta = [n for n, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
                if t.device.type == "meta"]
        if meta:
            raise NotImplementedError(
                f"lrp_triton.apply: {type(module).__name__} ({name or 'the LRP layer'} of {type(original).__name__}) "
                f"holds {', '.join(meta)} on the meta device (offloaded by accelerate) with no hook to load it; keep "
                "this module on a device (device_map) to explain the model")


def offloading_hooks(module: nn.Module) -> list:
    """The hooks on `module` that load its tensors for its forward (a ForwardedHook counts as the hook it runs)."""
    hook = getattr(module, "_hf_hook", None)
    hooks = [getattr(h, "hook", h) for h in getattr(hook, "hooks", (hook,))]
    return [h for h in hooks if getattr(h, "offload", False)]


@contextlib.contextmanager
def weights_loaded(model: nn.Module, module: nn.Module, subtree: bool = True):
    """`module`'s offloaded tensors loaded (on their execution device) for a read outside its forward, by
    the hooks that load them for its forward: the hook of the nearest module of `model` holding it (itself
    included) that places its whole subtree (a device_map block), else every offloading hook in `module`'s subtree
    (cpu_offload / disk_offload hook each module; `subtree=False`: `module`'s own hook, for the tensors
    it holds itself, such as a joint model's logit scale). Each runs its `pre_forward` (load) before the read
    and its `post_forward` (back to the meta device) after it. Read the tensors from the modules inside
    the block: loading puts new tensors there. Nothing happens for a model that is not offloaded."""
    name = next((n for n, m in model.named_modules() if m is module), None)
    enclosing = [m for n, m in model.named_modules() if name is not None and (n in ("", name) or name.startswith(n + "."))
                 and any(getattr(h, "place_submodules", False) for h in offloading_hooks(m))]
    loaders = enclosing[-1:] or [m for m in (module.modules() if subtree else (module,)) if offloading_hooks(m)]
    for m in loaders:
        m._hf_hook.pre_forward(m)
    try:
        yield
    finally:
        for m in reversed(loaders):
            m._hf_hook.post_forward(m, None)
