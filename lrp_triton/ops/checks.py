"""Input checks shared by the ops: one clear error per bad argument, naming the op and the fix."""

from __future__ import annotations

import numbers

import torch

from lrp_triton.backend import FLOAT_DTYPES
from lrp_triton.rules import MODES


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


def check_attention_inputs(q, k, v, key_padding_mask, bias, relative_bias, mode, sliding_window, softcap, scale,
                           sinks=None):
    """Shapes, dtypes, devices and options of an attention call (`lrp_attention`, `lrp_sdpa_attention`)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"lrp_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"lrp_attention: {name} must be 4-D [batch, heads, seq, head_dim], "
                             f"got shape {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"lrp_attention: unsupported dtype {t.dtype} for {name}; "
                            "use float32, float16, bfloat16 or float64")
        if t.device != q.device:
            raise ValueError(f"lrp_attention: q is on {q.device} but {name} is on {t.device}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"lrp_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, n, d = q.shape
    if k.shape[:3] != v.shape[:3]:  # the value head dim may differ from the query/key one (MLA)
        raise ValueError(f"lrp_attention: k and v must have the same shape but for the head dim, got "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"lrp_attention: k shape {tuple(k.shape)} does not match q shape {tuple(q.shape)} "
                         "(batch and head_dim must agree)")
    hkv, m = k.shape[1], k.shape[2]
    if hkv == 0 or h % hkv != 0:
        raise ValueError(f"lrp_attention: the number of query heads ({h}) must be a multiple of the "
                         f"number of key/value heads ({hkv})")
    if n == 0 or m == 0 or b == 0 or d == 0 or v.shape[3] == 0:
        raise ValueError(f"lrp_attention: empty input (q {tuple(q.shape)}, k {tuple(k.shape)})")
    if mode not in MODES:
        raise ValueError(f"lrp_attention: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("lrp_attention: key_padding_mask must be a bool tensor [batch, kv_len] "
                            "(True = attend)")
        if tuple(key_padding_mask.shape) != (b, m):
            raise ValueError(f"lrp_attention: key_padding_mask must have shape {(b, m)}, "
                             f"got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"lrp_attention: key_padding_mask is on {key_padding_mask.device}, "
                             f"q on {q.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
            raise TypeError("lrp_attention: bias must be a floating-point tensor (additive; use "
                            "key_padding_mask for a boolean mask)")
        if bias.dim() > 4:
            raise ValueError(f"lrp_attention: bias must broadcast to {(b, h, n, m)}, got {tuple(bias.shape)}")
        try:
            torch.broadcast_shapes(bias.shape, (b, h, n, m))
        except RuntimeError:
            raise ValueError(f"lrp_attention: bias of shape {tuple(bias.shape)} does not broadcast to "
                             f"[batch, heads, q_len, kv_len] = {(b, h, n, m)}") from None
        if bias.device != q.device:
            raise ValueError(f"lrp_attention: bias is on {bias.device}, q on {q.device}")
    if relative_bias is not None:
        if not isinstance(relative_bias, torch.Tensor) or not relative_bias.is_floating_point():
            raise TypeError("lrp_attention: relative_bias must be a floating-point tensor [heads, q_len + kv_len - 1]")
        if tuple(relative_bias.shape) != (h, n + m - 1):
            raise ValueError(f"lrp_attention: relative_bias must have shape [heads, q_len + kv_len - 1] = "
                             f"{(h, n + m - 1)}, got {tuple(relative_bias.shape)}")
        if relative_bias.device != q.device:
            raise ValueError(f"lrp_attention: relative_bias is on {relative_bias.device}, q on {q.device}")
    if sinks is not None:
        if not isinstance(sinks, torch.Tensor) or not sinks.is_floating_point():
            raise TypeError("lrp_attention: sinks must be a floating-point tensor [heads] (one logit per query head)")
        if tuple(sinks.shape) != (h,):
            raise ValueError(f"lrp_attention: sinks must have shape [heads] = {(h,)}, got {tuple(sinks.shape)}")
        if sinks.device != q.device:
            raise ValueError(f"lrp_attention: sinks is on {sinks.device}, q on {q.device}")
    if sliding_window is not None and (isinstance(sliding_window, bool) or int(sliding_window) != sliding_window
                                       or sliding_window < 1):
        raise ValueError(f"lrp_attention: sliding_window must be a positive integer, got {sliding_window!r}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"lrp_attention: softcap must be positive, got {softcap!r}")
    if scale is not None and not isinstance(scale, (int, float)):
        raise TypeError(f"lrp_attention: scale must be a number, got {type(scale).__name__}")
    if scale is not None and not 0 < scale < float("inf"):  # (the kernels fold it into the running max)
        raise ValueError(f"lrp_attention: scale must be positive and finite, got {scale!r}")


def check_causal_extent(q, k, causal, causal_extent):
    """causal_extent: an integer tensor [B, N] with causal=True, each entry at least its query's own causal
    limit (position i + M - N: a query sees at least the keys up to itself)."""
    if causal_extent is None:
        return
    b, n, m = q.shape[0], q.shape[2], k.shape[2]
    if not causal:
        raise ValueError("lrp_attention: causal_extent extends the causal mask; it needs causal=True")
    if not isinstance(causal_extent, torch.Tensor) or causal_extent.is_floating_point() or causal_extent.dtype == torch.bool:
        raise TypeError("lrp_attention: causal_extent must be an integer tensor [batch, q_len] (the last key "
                        "index each query sees)")
    if tuple(causal_extent.shape) != (b, n):
        raise ValueError(f"lrp_attention: causal_extent must have shape {(b, n)}, got {tuple(causal_extent.shape)}")
    if causal_extent.device != q.device:
        raise ValueError(f"lrp_attention: causal_extent is on {causal_extent.device}, q on {q.device}")
    own = torch.arange(n, device=q.device) + (m - n)
    if not bool((causal_extent >= own).all()):
        raise ValueError("lrp_attention: causal_extent[b, i] must be at least query i's own position "
                         "(i + kv_len - q_len): a query sees the keys up to itself")
