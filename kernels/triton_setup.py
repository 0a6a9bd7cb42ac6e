"""What every Triton kernel module shares: the interpreter flag and the autotune config lists.

`triton.jit` decides at decoration time whether a kernel is interpreted (TRITON_INTERPRET=1) or
compiled. This module is imported by each kernel module before its kernels are decorated, so
`INTERPRETING` tells how they were built.
"""

import functools

import torch
import triton

from lrp_triton.backend import interpreter_requested

INTERPRETING = interpreter_requested()


def autotune_configs(gpu_configs, interpreter_config):
    """The full list on a GPU; exactly one config under the interpreter (no tuning runs there)."""
    return [interpreter_config] if INTERPRETING else list(gpu_configs)


def _scratch(size, alignment, stream):
    import torch
    return torch.empty(size, dtype=torch.int8, device="cuda")


def ensure_allocator(device) -> None:
    """Kernels that build TMA tensor descriptors on the device (tl.make_tensor_descriptor) need a global
    scratch buffer per launch, which Triton takes from the allocator of `triton.set_allocator`: set a
    torch one for a CUDA launch unless one is set already (the caller's own allocator is kept)."""
    from triton.runtime import _allocation
    if device.type == "cuda" and isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(_scratch)


def check_can_run_on_cpu() -> None:
    """Raises when CPU tensors reach kernels that were compiled for CUDA (interpreter set too late)."""
    if not INTERPRETING:
        raise RuntimeError(
            "the Triton kernels were imported before TRITON_INTERPRET=1 was set, so they cannot run "
            "on the CPU in this process: set the variable before the first use of backend='triton', "
            "or use backend='torch'")


def on_tensor_device(launch):
    """Runs a kernel-launching function with its first tensor argument's CUDA device current: Triton
    launches on the current device, and a model dispatched over several GPUs (accelerate's device_map)
    runs its forward with cuda:0 current whatever device a layer's tensors are on."""

    @functools.wraps(launch)
    def run(*args, **kwargs):
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is not None and first.is_cuda and first.device.index != torch.cuda.current_device():
            with torch.cuda.device(first.device):
                return launch(*args, **kwargs)
        return launch(*args, **kwargs)

    return run


__all__ = ["INTERPRETING", "autotune_configs", "check_can_run_on_cpu", "ensure_allocator", "on_tensor_device",
           "triton"]
