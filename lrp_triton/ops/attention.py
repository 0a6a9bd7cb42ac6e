"""`lrp_attention`: exact attention forward, AttnLRP (or CP-LRP, or gradient) backward.

backend="auto": the Triton kernel on CUDA; on the CPU, torch's scaled_dot_product_attention with
the rule's gradient factors (`lrp_sdpa_attention`) wherever it can express the call (no
soft-capping, no T5 relative bias), else the PyTorch twin. Measured on 2 CPU cores (Llama-shaped,
hidden 512, 8 layers, one explained token): `attribute` took 1.16 s with SDPA against 3.38 s with
the twin at N = 1024, and 2.54 s against 10.5 s at N = 2048 (a plain forward + backward: 1.58 s,
3.01 s).

AttnLRP in gradient form is the exact attention gradient with dQ and dK scaled by 1/4 and dV by
1/2 (see kernels/attention.py for the derivation and the tiled kernel); soft-capping passes its
identity-rule ratio c*tanh(S/c)/S instead of its derivative. The additive `bias` absorbs its share
and receives no gradient; the padding mask receives none either. Attention sinks (gpt-oss: a logit
s_h per head in the softmax denominator, attending nowhere) take their share of the softmax rule's
relevance and pass it to no token; they receive no gradient.
"""

from __future__ import annotations

import torch

from lrp_triton.backend import resolve_backend
from lrp_triton.kernels.attention_torch import attention_backward_torch, attention_forward_torch, default_scale
from lrp_triton.ops.checks import check_attention_inputs, check_causal_extent
from lrp_triton.ops.dispatch import KernelPair
from lrp_triton.ops.sdpa_attention import lrp_sdpa_attention
from lrp_triton.ops.streams import StreamKernel, refuse_batched_inputs, stream_backward
from lrp_triton.rules import MODES

ATTENTION_MODES = MODES
_TRITON_HEAD_DIMS = (16, 256)

ATTENTION = KernelPair(attention_forward_torch, attention_backward_torch,
                       "lrp_triton.kernels.attention", "attention_forward", "attention_backward")


class LRPAttentionFunction(torch.autograd.Function):
    """Thin autograd wrapper: the backend's forward, then its rule-specific backward.

    The backward takes K cotangent streams at once under vmap (`lrp_triton.ops.streams`): both
    backends accept dO of shape [K, B, H, N, D_v] in one call (the PyTorch twin recomputes P once
    for the K streams; the Triton kernels run the streams on their third grid axis)."""

    @staticmethod
    def forward(q, k, v, key_padding_mask, bias, relative_bias, options, sinks, causal_extent):
        forward, _ = ATTENTION(options["backend"])
        extra = {} if sinks is None else {"sinks": sinks}
        if causal_extent is not None:
            extra["causal_extent"] = causal_extent
        return forward(q, k, v, causal=options["causal"], scale=options["scale"],
                       key_padding_mask=key_padding_mask, sliding_window=options["sliding_window"],
                       softcap=options["softcap"], bias=bias, relative_bias=relative_bias, **extra)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, key_padding_mask, bias, relative_bias, options = inputs[:7]  # (the sinks are in lse)
        out, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, out, lse, key_padding_mask, bias, relative_bias, inputs[8])
        ctx.options = options

    vmap = refuse_batched_inputs("lrp_attention")

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        if not any(ctx.needs_input_grad[:3]):
            return (None,) * 9
        dq, dk, dv = stream_backward(attention_kernel(ctx.options), 1, grad_out, *ctx.saved_tensors)
        return dq, dk, dv, None, None, None, None, None, None


def attention_kernel(o: dict) -> StreamKernel:
    """The backend's backward for the options `o` of one call, for one dO [B, H, N, D_v] or K stacked
    ones [K, B, H, N, D_v] (dq [K, B, H, N, D], dk [K, B, Hkv, M, D], dv [K, B, Hkv, M, D_v])."""
    _, backward = ATTENTION(o["backend"])

    def call(do, q, k, v, out, lse, key_padding_mask, bias, relative_bias, causal_extent=None):
        extra = {} if causal_extent is None else {"causal_extent": causal_extent}
        return backward(do, q, k, v, out, lse, causal=o["causal"], scale=o["scale"], mode=o["mode"],
                        key_padding_mask=key_padding_mask, sliding_window=o["sliding_window"],
                        softcap=o["softcap"], bias=bias, relative_bias=relative_bias, **extra)

    return StreamKernel(call, call)  # both backends take dO [B, H, N, D] or [K, B, H, N, D]


def lrp_attention(q, k, v, *, causal=True, scale=None, mode="attnlrp", key_padding_mask=None,
                  sliding_window=None, softcap=None, bias=None, relative_bias=None, sinks=None, backend="auto",
                  causal_extent=None):
    """Attention whose backward propagates relevance by the chosen LRP rule.

    Args:
        q: [B, H, N, D] queries. k: [B, Hkv, M, D], v: [B, Hkv, M, D_v], H a multiple of Hkv (GQA/MQA).
            The value head dim D_v may differ from D (multi-head latent attention, DeepSeek-V2/V3: 128
            against 192); the rule is unchanged. When N != M the queries are the last N positions
            (bottom-right alignment, as for a cached prefix).
        causal: a query at position i sees keys j <= i.
        scale: softmax temperature, default D ** -0.5.
        mode: "attnlrp" (dQ, dK = exact / 4, dV = exact / 2), "cp-lrp" (no relevance through Q, K;
            dV exact) or "gradient" (the exact gradient).
        key_padding_mask: bool [B, M], True = attend.
        sliding_window: a query at position i sees keys j with |i - j| < window: with causal, the last
            `window` positions up to i; without, a symmetric local band (ModernBERT's local layers).
        softcap: Gemma-2 logit soft-capping S -> c * tanh(S / c).
        bias: additive float tensor broadcastable to [B, H, N, M] (receives no gradient).
        relative_bias: [H, N + M - 1] float, added in the kernel as S[h, i, j] += relative_bias[h, j - i + N - 1]
            (T5's bucketed relative-position bias, looked up per offset: O(N + M) memory, no gradient).
        sinks: [H] float, one attention-sink logit per query head (gpt-oss): it joins each row's softmax
            denominator, P_ij = exp(S_ij) / (exp(sinks[h]) + sum_j' exp(S_ij')), and attends nowhere; it
            takes its share of the relevance, passes it to no token, and receives no gradient.
        causal_extent: int [B, N], with causal: the last key index each query sees, at least its own
            position (i + M - N, bottom-right aligned): query i sees the keys j <= causal_extent[b, i]
            (a bidirectional block ahead of it: PaliGemma's prefix, Gemma 3's image blocks), and a
            sliding window then bounds the past only, i - j < window (transformers' sliding overlay,
            OR'ed with the blocks); O(N) memory, the Triton kernels skip the tiles no query sees.
        backend: "auto", "triton", "torch" or "sdpa" (torch's scaled_dot_product_attention with the
            mode's gradient factors: `lrp_sdpa_attention`; no softcap, no relative_bias); see
            `lrp_triton.backend`.

    Returns:
        out [B, H, N, D_v] in q's dtype. Rows whose keys are all masked are 0.
    """
    check_attention_inputs(q, k, v, key_padding_mask, bias, relative_bias, mode, sliding_window, softcap, scale,
                           sinks=sinks)
    check_causal_extent(q, k, causal, causal_extent)
    if backend == "auto" and q.device.type == "cpu" and softcap is None and relative_bias is None:
        backend = "sdpa"  # measured on CPU: the fastest exact route (module docstring)
    if backend == "sdpa":
        if softcap is not None or relative_bias is not None:
            what = "soft-capping" if softcap is not None else "a relative-position bias (T5)"
            raise NotImplementedError(f"lrp_attention: backend='sdpa' cannot express {what} through torch's "
                                      "scaled_dot_product_attention; use backend='auto', 'torch' or 'triton'")
        return lrp_sdpa_attention(q, k, v, causal=causal, scale=scale, mode=mode, key_padding_mask=key_padding_mask,
                                  sliding_window=sliding_window, bias=bias, sinks=sinks, causal_extent=causal_extent)
    d = q.shape[3]
    bad = [x for x in dict.fromkeys((d, v.shape[3])) if not _TRITON_HEAD_DIMS[0] <= x <= _TRITON_HEAD_DIMS[1]]
    supported = not bad
    chosen = resolve_backend(backend, q.device, triton_supports=supported, dtype=q.dtype)
    if chosen == "triton" and not supported:
        raise ValueError(f"lrp_attention: head_dim {bad[0]} is not supported by the Triton kernel "
                         f"(supported: {_TRITON_HEAD_DIMS[0]} to {_TRITON_HEAD_DIMS[1]}); use backend='torch'")
    options = dict(causal=bool(causal), scale=float(default_scale(d) if scale is None else scale),
                   mode=mode, sliding_window=None if sliding_window is None else int(sliding_window),
                   softcap=None if softcap is None else float(softcap), backend=chosen)
    sinks = None if sinks is None else sinks.detach()
    causal_extent = None if causal_extent is None else causal_extent.to(torch.int32)
    return LRPAttentionFunction.apply(q, k, v, key_padding_mask, bias, relative_bias, options, sinks,
                                      causal_extent)[0]
