"""`lrp_sdpa_attention`: AttnLRP through torch's scaled_dot_product_attention with scaled gradients.

This is how the reference library lxt (`lxt.efficient`) implements the attention rule, and the
reference method of the benchmarks in bench/. The rule (see the project's AttnLRP rules):

    S = scale * Q K^T (+ bias), P = softmax(S), O = P V
    explicit:  epsilon rule on O = P V, half to P and half to V; softmax rule on P; epsilon rule
               on S = Q K^T, half to Q and half to K; the bias absorbs its share
    gradient form:  dQ = f_qk * dL/dQ,  dK = f_qk * dL/dK,  dV = f_v * dL/dV

with the exact SDPA gradients dL/dQ, dL/dK, dL/dV and (f_qk, f_v) = lrp_triton.rules.ATTENTION_RULES[mode]:
AttnLRP (1/4, 1/2); CP-LRP (0, 1): no relevance through Q and K; gradient (1, 1): Input x
Gradient. Scaling the gradients that reach q, k, v is the same as scaling SDPA's dQ, dK, dV, so
an identity-forward autograd Function on each input (lxt's `divide_gradient`) carries the rule,
and SDPA's own fused kernels (flash / cuDNN / memory-efficient, picked by torch) do the rest.

Soft-capping (Gemma 2) and the compact relative bias (T5) have no SDPA form: use `lrp_attention`.
Attention sinks (gpt-oss: a logit s_h per head in the softmax denominator, attending nowhere) have an
exact one: one extra key that every query sees, with value 0, scored through one extra coordinate
(s_h / scale in each query of head h, 1 in the sink key, 0 in every other key), so that its score is
s_h; the extra coordinate's and the sink key's gradients are dropped (the sink takes no gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lrp_triton.ops.checks import check_attention_inputs
from lrp_triton.ops.streams import refuse_batched_inputs
from lrp_triton.rules import ATTENTION_RULES


class ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by `factor`."""

    @staticmethod
    def forward(x, factor):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.factor = inputs[1]

    vmap = refuse_batched_inputs("lrp_sdpa_attention")

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x in the forward; its gradient times `factor` in the backward (no-op for factor 1)."""
    return x if factor == 1.0 else ScaleGradient.apply(x, factor)


def _check(q, k, v, mode, key_padding_mask, sliding_window, bias, scale, softcap, relative_bias, sinks=None):
    """lrp_attention's checks (named for this op), after refusing what SDPA cannot express."""
    if softcap is not None or relative_bias is not None:
        what = "soft-capping" if softcap is not None else "relative_bias"
        raise NotImplementedError(f"lrp_sdpa_attention: {what} cannot be expressed through "
                                  "scaled_dot_product_attention; use lrp_triton.ops.lrp_attention")
    try:
        check_attention_inputs(q, k, v, key_padding_mask, bias, None, mode, sliding_window, None, scale, sinks=sinks)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("lrp_attention:", "lrp_sdpa_attention:", 1)) from None


def lrp_sdpa_attention(q, k, v, *, causal=True, scale=None, mode="attnlrp", key_padding_mask=None,
                       sliding_window=None, bias=None, softcap=None, relative_bias=None, sinks=None, causal_extent=None):
    """SDPA attention whose backward is the LRP rule `mode` (the exact gradient, scaled per input).

    Args:
        q: [B, H, N, D]; k, v: [B, Hkv, M, D], H a multiple of Hkv (GQA through enable_gqa=True).
            When N != M the queries are the last N positions (bottom-right alignment, as in
            `lrp_attention`).
        causal: query i sees keys j <= i (aligned as above).
        scale: softmax temperature, default D ** -0.5.
        mode: "attnlrp" (dQ, dK = exact / 4, dV = exact / 2), "cp-lrp" (dQ = dK = 0, dV exact) or
            "gradient" (exact).
        key_padding_mask: bool [B, M], True = attend.
        sliding_window: query i sees keys j with |i - j| < window (with causal: i - j < window, j <= i;
            without: a symmetric local band, e.g. ModernBERT's local layers).
        bias: additive float tensor broadcastable to [B, H, N, M]; it absorbs its share of relevance.
        sinks: [H] float, one attention-sink logit per query head (gpt-oss), through the extra key of
            the module docstring; it takes its share of relevance and passes it to no token.
        causal_extent: int [B, N] (with causal), the last key each query sees (`lrp_attention`); SDPA
            takes it as the boolean mask [B, 1, N, M] it needs (N x M here, unlike the other backends).
        softcap, relative_bias: refused (not expressible in SDPA; use `lrp_attention`).

    Returns [B, H, N, D] in q's dtype; rows with no visible key are 0 (not NaN). Plain causal
    attention with N == M and no padding runs as `is_causal=True` (flash / cuDNN eligible); otherwise
    causality, window and padding become one boolean mask [B or 1, 1, N, M], folded into the bias
    when there is one.
    """
    _check(q, k, v, mode, key_padding_mask, sliding_window, bias, scale, softcap, relative_bias, sinks)
    rule = ATTENTION_RULES[mode]
    n, m = q.shape[2], k.shape[2]
    q, k, v = scale_gradient(q, rule.dqk), scale_gradient(k, rule.dqk), scale_gradient(v, rule.dv)
    gqa = q.shape[1] != k.shape[1]
    if sinks is not None:
        return _with_sink(q, k, v, sinks, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
                          sliding_window=sliding_window, bias=bias, gqa=gqa, causal_extent=causal_extent)
    if (key_padding_mask is None and sliding_window is None and bias is None and causal_extent is None
            and (not causal or n == m)):
        return F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal), scale=scale, enable_gqa=gqa)

    visible = _visible(q, n, m, causal, sliding_window, key_padding_mask, causal_extent)
    if bias is None:
        mask = visible
        rows = visible.any(-1, keepdim=True)
    else:
        mask = bias.to(q.dtype) if visible is None else bias.to(q.dtype).masked_fill(~visible, float("-inf"))
        rows = (mask != float("-inf")).any(-1, keepdim=True)
    every_row = bool(rows.all())
    if not every_row:  # rows with no visible key: SDPA sees some there (no NaN), their output is set to 0
        mask = mask | ~rows if mask.dtype == torch.bool else mask.masked_fill(~rows, 0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out if every_row else torch.where(rows, out, torch.zeros((), dtype=out.dtype, device=out.device))


def _visible(q, n, m, causal, sliding_window, key_padding_mask, causal_extent=None):
    """Bool [B or 1, 1, N, M]: which keys each query sees (queries the last N of M), or None: all of them.
    With causal_extent [B, N]: j <= causal_extent[b, i], and the window bounds the past only."""
    visible = None
    if causal_extent is not None:
        q_pos = torch.arange(n, device=q.device)[:, None] + (m - n)
        k_pos = torch.arange(m, device=q.device)
        visible = k_pos <= causal_extent[:, :, None]
        if sliding_window is not None:
            visible = visible & (q_pos - k_pos < sliding_window)
        visible = visible[:, None]
    elif causal or sliding_window is not None:
        q_pos = torch.arange(n, device=q.device)[:, None] + (m - n)
        k_pos = torch.arange(m, device=q.device)[None, :]
        visible = (k_pos <= q_pos) if causal else torch.ones(n, m, dtype=torch.bool, device=q.device)
        if sliding_window is not None:
            visible = visible & ((q_pos - k_pos).abs() < sliding_window)  # symmetric without causality
        visible = visible[None, None]
    if key_padding_mask is not None:
        pad = key_padding_mask[:, None, None, :]
        visible = pad if visible is None else visible & pad
    return visible


def _with_sink(q, k, v, sinks, *, causal, scale, key_padding_mask, sliding_window, bias, gqa, causal_extent=None):
    """SDPA with one extra key per kv head (value 0) that every query sees, scored s_h through an extra
    coordinate (module docstring). Every row sees the sink: no row is empty, its output is 0 where no
    real key is visible."""
    b, h, n, d = q.shape
    hkv, m = k.shape[1], k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    column = (sinks.detach().to(q.dtype) / scale).view(1, h, 1, 1).expand(b, h, n, 1)
    q = torch.cat([q, column], -1)
    sink_key = torch.zeros(b, hkv, 1, d + 1, dtype=k.dtype, device=k.device)
    sink_key[..., d] = 1.0
    k = torch.cat([F.pad(k, (0, 1)), sink_key], 2)
    v = F.pad(v, (0, 1, 0, 1))  # the sink's value row is 0; the extra column (dropped) keeps D + 1 throughout
    visible = _visible(q, n, m, causal, sliding_window, key_padding_mask, causal_extent)
    mask = visible
    if bias is not None:
        mask = bias.to(q.dtype) if visible is None else bias.to(q.dtype).masked_fill(~visible, float("-inf"))
    if mask is not None:
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
        mask = F.pad(mask.expand(*mask.shape[:2], n, m), (0, 1), value=True if mask.dtype == torch.bool else 0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out[..., :d]
