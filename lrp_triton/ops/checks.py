"""Input checks shared by the ops: one clear error per bad argument, naming the op and the fix."""

from __future__ import annotations

import numbers

import torch

from lrp_triton.backend import FLOAT_DTYPES


def check_float_tensor(op: str, name: str, t, like: torch.Tensor | None = None, *,
                       same_precision: bool = True) -> None:
    """`t` is a float32 / float16 / bfloat16 / float64 tensor; with `like`, on like's device and (with
    `same_precision`) float64 exactly when `like` is float64 (float64 runs are float64 throughout)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: unsupported dtype {t.dtype} for {name}; use float32, float16, bfloat16 or float64")
    if like is None:
        return
    if same_precision and (t.dtype == torch.float64) != (like.dtype == torch.float64):
        raise TypeError(f"{op}: x is {like.dtype} but {name} is {t.dtype}; float64 runs only with "
                        "float64 x and parameters (convert the whole model with .double())")
    if t.device != like.device:
        raise ValueError(f"{op}: x is on {like.device} but {name} is on {t.device}")


def check_vector_param(op: str, name: str, p, x: torch.Tensor) -> None:
    """`p` is a 1-D float tensor of x's last-dimension size, on x's device."""
    check_float_tensor(op, name, p, x)
    n = x.shape[-1]
    if tuple(p.shape) != (n,):
        raise ValueError(f"{op}: {name} must have shape ({n},) to match the last dimension of x "
                         f"(shape {tuple(x.shape)}), got {tuple(p.shape)}")


def check_non_negative(op: str, name: str, value) -> None:
    """`value` is a real number >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{op}: {name} must be a non-negative number, got {value!r}")
