"""Choice of compute backend for every op: "auto", "triton", "torch" or "sdpa".

- "torch": the pure-PyTorch path (same rules; the CPU fallback and the second reference).
- "sdpa": attention through torch's scaled_dot_product_attention with the rule's gradient factors
  (`lrp_triton.ops.lrp_sdpa_attention`, the reference library's method; no soft-capping, no T5
  relative bias); every other op on the PyTorch path.
- "triton": the fused Triton kernels. They need a CUDA device, or, on the CPU, the Triton
  interpreter (`TRITON_INTERPRET=1` set before triton is first imported).
- "auto": Triton for CUDA tensors when triton is installed and the op supports the input (attention
  on the CPU: the "sdpa" route where it can express the call, see `lrp_triton.ops.attention`),
  otherwise the PyTorch path.

float64 inputs run on the PyTorch path only (it computes in float64 then, for precision checks and
float64 references); the kernels take float32, float16 and bfloat16.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

BACKENDS = ("auto", "triton", "torch", "sdpa")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FLOAT_DTYPES = TRITON_DTYPES + (torch.float64,)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """t in float32, or in float64 when it is float64: the dtype relevance is summed and reported in."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def triton_available() -> bool:
    """True when the `triton` package can be imported."""
    return "triton" in sys.modules or importlib.util.find_spec("triton") is not None


def interpreter_requested() -> bool:
    """True when the Triton interpreter is switched on in this process's environment."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def resolve_backend(backend: str, device: torch.device, *, triton_supports: bool = True,
                    dtype: torch.dtype | None = None) -> str:
    """Returns "triton" or "torch" for tensors of `dtype` on `device`, or raises saying why not.

    `triton_supports` is the op's own verdict on the input (e.g. a head dim the kernel handles);
    "auto" falls back to torch when it is False, "triton" raises instead.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend in ("torch", "sdpa"):  # "sdpa" changes attention only (lrp_attention routes it)
        return "torch"
    if dtype is not None and dtype not in TRITON_DTYPES:
        if backend == "auto":
            return "torch"
        raise TypeError(f"backend='triton' got {dtype} tensors: the Triton kernels take float32, float16 "
                        "or bfloat16; use backend='torch' or 'auto' for the PyTorch path")
    on_cuda = device.type == "cuda"
    if backend == "auto":
        return "triton" if (on_cuda and triton_supports and triton_available()) else "torch"
    if not triton_available():
        raise RuntimeError("backend='triton' needs the `triton` package, which is not installed; "
                           "use backend='torch' or 'auto'")
    if not on_cuda and not interpreter_requested():
        raise RuntimeError(
            f"backend='triton' got tensors on {device.type}: the Triton kernels run on CUDA, or on "
            "the CPU only under the Triton interpreter (set TRITON_INTERPRET=1 before triton is "
            "imported); use backend='torch' or 'auto' for the PyTorch path")
    if not on_cuda:
        from lrp_triton.kernels import triton_setup

        triton_setup.check_can_run_on_cpu()
    return "triton"
