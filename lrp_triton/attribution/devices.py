"""Devices of one attribution call, for a model on one device or dispatched over several (accelerate's
`device_map`, CPU / disk offload).

- `execution_device(model)`: where the inputs go, as HF's own hooks send them: the execution device
  of the model's accelerate hook (or its input embeddings'), else the device of its first parameter
  that is not offloaded to the meta device. accelerate's hooks then move each layer's inputs on to
  that layer's device, and autograd carries the gradients back across the devices.
- `on_device(result, device)`: the result's tensors on the caller's input device.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


def hook_device(module: nn.Module | None) -> torch.device | None:
    """The execution device of the accelerate hook on `module` (the first of a SequentialHook that has one)."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", (hook,)):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device)  # an int is a CUDA index, as accelerate writes it
    return None


def execution_device(model: nn.Module) -> torch.device:
    """The device the model takes its inputs on (see the module docstring)."""
    device = hook_device(model)
    if device is None and callable(getattr(model, "get_input_embeddings", None)):
        try:
            device = hook_device(model.get_input_embeddings())
        except NotImplementedError:  # a model without input embeddings
            device = None
    for module in () if device is not None else model.modules():  # the first hooked layer (cpu_offload)
        device = hook_device(module)
        if device is not None:
            break
    if device is not None:
        return device
    first = None
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
        first = p.device if first is None else first
    return first if first is not None else torch.device("cpu")


def on_device(value, device: torch.device):
    """`value` (an Attribution dataclass, or the dicts, lists and tensors in it) with its tensors on `device`."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            setattr(value, f.name, on_device(getattr(value, f.name), device))
        return value
    if isinstance(value, dict):
        return {k: on_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [on_device(v, device) for v in value]
    if isinstance(value, tuple):
        items = [on_device(v, device) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def input_device(args: tuple, kwargs: dict) -> torch.device | None:
    """The device of the call's first tensor input (input_ids, inputs_embeds, pixel_values), if any."""
    for value in (*args[:1], kwargs.get("input_ids"), kwargs.get("inputs_embeds"), kwargs.get("pixel_values")):
        if isinstance(value, torch.Tensor):
            return value.device
    return None
