"""`lrp_attention`: exact attention forward, AttnLRP (or CP-LRP, or gradient) backward.

AttnLRP in gradient form is the exact attention gradient with dQ and dK scaled by 1/4 and dV by
1/2 (see kernels/attention.py for the derivation and the tiled kernel); soft-capping passes its
identity-rule ratio c*tanh(S/c)/S instead of its derivative. The additive `bias` absorbs its share
and receives no gradient; the padding mask receives none either.
"""

from __future__ import annotations

import torch

from lrp_triton.backend import FLOAT_DTYPES, resolve_backend
from lrp_triton.kernels.attention_torch import attention_backward_torch, attention_forward_torch, default_scale
from lrp_triton.ops.dispatch import KernelPair
from lrp_triton.rules import ATTENTION_RULES, MODES

ATTENTION_MODES = MODES
_TRITON_HEAD_DIMS = (16, 256)

ATTENTION = KernelPair(attention_forward_torch, attention_backward_torch,
                       "lrp_triton.kernels.attention", "attention_forward", "attention_backward")


class LRPAttentionFunction(torch.autograd.Function):
    """Thin autograd wrapper: the backend's forward, then its rule-specific backward."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, bias, relative_bias, options):
        forward, _ = ATTENTION(options["backend"])
        out, lse = forward(q, k, v, causal=options["causal"], scale=options["scale"],
                           key_padding_mask=key_padding_mask, sliding_window=options["sliding_window"],
                           softcap=options["softcap"], bias=bias, relative_bias=relative_bias)
        ctx.save_for_backward(q, k, v, out, lse, key_padding_mask, bias, relative_bias)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, key_padding_mask, bias, relative_bias = ctx.saved_tensors
        o = ctx.options
        _, backward = ATTENTION(o["backend"])
        dq, dk, dv = backward(grad_out, q, k, v, out, lse, causal=o["causal"], scale=o["scale"],
                              mode=o["mode"], key_padding_mask=key_padding_mask,
                              sliding_window=o["sliding_window"], softcap=o["softcap"], bias=bias,
                              relative_bias=relative_bias)
        return dq, dk, dv, None, None, None, None


def check_attention_inputs(q, k, v, key_padding_mask, bias, relative_bias, mode, sliding_window, softcap, scale):
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
    if k.shape != v.shape:
        raise ValueError(f"lrp_attention: k and v must have the same shape, got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"lrp_attention: k/v shape {tuple(k.shape)} does not match q shape {tuple(q.shape)} "
                         "(batch and head_dim must agree)")
    hkv, m = k.shape[1], k.shape[2]
    if hkv == 0 or h % hkv != 0:
        raise ValueError(f"lrp_attention: the number of query heads ({h}) must be a multiple of the "
                         f"number of key/value heads ({hkv})")
    if n == 0 or m == 0 or b == 0 or d == 0:
        raise ValueError(f"lrp_attention: empty input (q {tuple(q.shape)}, k {tuple(k.shape)})")
    if mode not in ATTENTION_RULES:
        raise ValueError(f"lrp_attention: unknown mode {mode!r}; expected one of {', '.join(ATTENTION_MODES)}")
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
    if sliding_window is not None and (isinstance(sliding_window, bool) or int(sliding_window) != sliding_window
                                       or sliding_window < 1):
        raise ValueError(f"lrp_attention: sliding_window must be a positive integer, got {sliding_window!r}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"lrp_attention: softcap must be positive, got {softcap!r}")
    if scale is not None and not isinstance(scale, (int, float)):
        raise TypeError(f"lrp_attention: scale must be a number, got {type(scale).__name__}")


def lrp_attention(q, k, v, *, causal=True, scale=None, mode="attnlrp", key_padding_mask=None,
                  sliding_window=None, softcap=None, bias=None, relative_bias=None, backend="auto"):
    """Attention whose backward propagates relevance by the chosen LRP rule.

    Args:
        q: [B, H, N, D] queries. k, v: [B, Hkv, M, D], H a multiple of Hkv (GQA/MQA). When N != M
            the queries are the last N positions (bottom-right alignment, as for a cached prefix).
        causal: a query at position i sees keys j <= i.
        scale: softmax temperature, default D ** -0.5.
        mode: "attnlrp" (dQ, dK = exact / 4, dV = exact / 2), "cp-lrp" (no relevance through Q, K;
            dV exact) or "gradient" (the exact gradient).
        key_padding_mask: bool [B, M], True = attend.
        sliding_window: a query at position i sees keys j with i - j < window.
        softcap: Gemma-2 logit soft-capping S -> c * tanh(S / c).
        bias: additive float tensor broadcastable to [B, H, N, M] (receives no gradient).
        relative_bias: [H, N + M - 1] float, added in the kernel as S[h, i, j] += relative_bias[h, j - i + N - 1]
            (T5's bucketed relative-position bias, looked up per offset: O(N + M) memory, no gradient).
        backend: "auto", "triton" or "torch" (see `lrp_triton.backend`).

    Returns:
        out [B, H, N, D] in q's dtype. Rows whose keys are all masked are 0.
    """
    check_attention_inputs(q, k, v, key_padding_mask, bias, relative_bias, mode, sliding_window, softcap, scale)
    d = q.shape[3]
    supported = _TRITON_HEAD_DIMS[0] <= d <= _TRITON_HEAD_DIMS[1]
    chosen = resolve_backend(backend, q.device, triton_supports=supported, dtype=q.dtype)
    if chosen == "triton" and not supported:
        raise ValueError(f"lrp_attention: head_dim {d} is not supported by the Triton kernel "
                         f"(supported: {_TRITON_HEAD_DIMS[0]} to {_TRITON_HEAD_DIMS[1]}); use backend='torch'")
    options = dict(causal=bool(causal), scale=float(default_scale(d) if scale is None else scale),
                   mode=mode, sliding_window=None if sliding_window is None else int(sliding_window),
                   softcap=None if softcap is None else float(softcap), backend=chosen)
    return LRPAttentionFunction.apply(q, k, v, key_padding_mask, bias, relative_bias, options)
