"""The attention kernels' two ways of reading tiles, TMA tensor descriptors and pointer loads, both under the
interpreter (LRP_TRITON_TMA=1 forces descriptors wherever the strides allow) against the float64 reference."""

from __future__ import annotations

import pytest
import torch

from lrp_triton.kernels.attention_tiles import tma_allowed
from lrp_triton.ops import lrp_attention
from reference_attention import attention_forward_reference, attention_relevance_reference
from scaled_close import assert_rel_close

pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest: NaN-filled output buffers


def make_case(name):
    """(q, k, v, grad_out, kwargs), float32, fresh draws. "gqa_causal": 2 query heads on 1 kv head, queries
    the last 33 of 48 positions (several tiles: the unmasked interior runs, the dK-dV loop stepping heads),
    D_qk 16 / D_v 24 (tiles wider than the head dim: zero-filled by TMA), q, k, v in the [B, N, H, D] layout
    seen through a transpose, left padding in one row. "cross": not causal, MQA, N 19 < M 35, D 24,
    scattered padding. "odd_dim": D 18 (72-byte rows, not 16-byte aligned): only pointer loads are possible."""
    b, h, hkv, n, m, d, dv, causal = dict(gqa_causal=(1, 2, 1, 33, 48, 16, 24, True),
                                          cross=(2, 2, 1, 19, 35, 24, 24, False),
                                          odd_dim=(1, 2, 1, 13, 22, 18, 18, True))[name]
    if name == "gqa_causal":
        q, k, v = (torch.randn(b, s, heads, dim).transpose(1, 2)
                   for s, heads, dim in ((n, h, d), (m, hkv, d), (m, hkv, dv)))
    else:
        q, k, v = torch.randn(b, h, n, d), torch.randn(b, hkv, m, d), torch.randn(b, hkv, m, dv)
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[-1, :7] = False
    mask[0, torch.randperm(m)[:3]] = False
    return q, k, v, torch.randn(b, h, n, dv), dict(causal=causal, key_padding_mask=mask)


@pytest.mark.parametrize("case,tma", [("gqa_causal", "1"), ("gqa_causal", "0"), ("cross", "1"), ("odd_dim", "1")])
def test_tma_and_pointer_tiles_match_reference(case, tma, monkeypatch):
    monkeypatch.setenv("LRP_TRITON_TMA", tma)
    q, k, v, g, kw = make_case(case)
    # which path the kernels take: descriptors exactly when forced and the strides allow it
    assert tma_allowed("dkdv", q, k, v, g) == (tma == "1" and case != "odd_dim")
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = lrp_attention(*leaves, mode="attnlrp", backend="triton", **kw)
    out.backward(g)
    torch.testing.assert_close(out.double(), attention_forward_reference(q, k, v, **kw)["out"], atol=2e-5, rtol=1e-5)
    expected = attention_relevance_reference(q, k, v, g, mode="attnlrp", **kw)
    for name, x, e in zip("qkv", leaves, expected):
        assert_rel_close(x * x.grad, e, 1e-5, f"R_{name}")
