"""A model's observable state, for restore checks: tensor by tensor, module by module, flag by flag."""

from __future__ import annotations


def model_state(model) -> dict:
    """Everything `apply` / `attribute` must leave as it was (compare two snapshots with ==)."""
    modules = dict(model.named_modules())
    configs = {name: m.__dict__["config"] for name, m in modules.items() if "config" in m.__dict__}
    return {
        "modules": {name: id(m) for name, m in modules.items()},
        "parameters": {name: (id(p), p.data_ptr(), p.requires_grad) for name, p in model.named_parameters()},
        "buffers": {name: id(b) for name, b in model.named_buffers()},
        "training": {name: m.training for name, m in modules.items()},
        "hooks": {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
                  for name, m in modules.items()},
        "configs": {name: id(c) for name, c in configs.items()},
        "config_values": {name: dict(vars(c)) for name, c in configs.items()},
        "attention": {name: c._attn_implementation for name, c in configs.items()},
        "instance_attributes": {name: sorted(k for k in vars(m) if not k.startswith("_")) for name, m in modules.items()},
    }
