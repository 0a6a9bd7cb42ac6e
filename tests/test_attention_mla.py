"""A value head dim different from the query/key head dim (D_v != D_qk: multi-head latent attention,
DeepSeek-V2/V3) in every attention route: the Triton kernels (interpreter), the PyTorch twin and SDPA,
against the explicit float64 references, every mode, GQA / MQA, causal and not, N != M, padding."""

from __future__ import annotations

import pytest
import torch

from lrp_triton.ops import lrp_attention
from lrp_triton.ops.sdpa_attention import lrp_sdpa_attention
from reference_attention import attention_forward_reference, attention_gradient_reference, attention_relevance_reference
from scaled_close import assert_rel_close

MODES = ("attnlrp", "cp-lrp", "gradient")

pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest: NaN-filled output buffers


def make_case(name, dtype=torch.float32):
    """(q, k, v, grad_out, kwargs): odd head dims, fresh random draws.

    "smaller_v": D_qk 24 > D_v 16, causal, GQA (4 query heads on 2 kv heads), queries the last 13 of 21
    positions, left padding in one row. "larger_v": D_qk 16 < D_v 40, not causal, MQA, N 17 > M 11,
    scattered padding."""
    if name == "smaller_v":
        b, h, hkv, n, m, d, dv, kw = 2, 4, 2, 13, 21, 24, 16, dict(causal=True)
    else:
        b, h, hkv, n, m, d, dv, kw = 2, 3, 1, 17, 11, 16, 40, dict(causal=False)
    mask = torch.ones(b, m, dtype=torch.bool)
    if name == "smaller_v":
        mask[1, :5] = False
    else:
        mask[0, torch.randperm(m)[:3]] = False
    kw["key_padding_mask"] = mask
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, hkv, m, d), torch.randn(b, hkv, m, dv)
    g = torch.randn(b, h, n, dv)
    return q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype), kw


def run(fn, q, k, v, grad_out, **kw):
    """(out, R_q, R_k, R_v) through `fn`: relevance as x * x.grad."""
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kw)
    out.backward(grad_out)
    return out, q * q.grad, k * k.grad, v * v.grad


def reference(q, k, v, grad_out, mode, **kw):
    if mode == "gradient":
        return attention_gradient_reference(q, k, v, grad_out, **kw)
    return attention_relevance_reference(q, k, v, grad_out, mode=mode, **kw)


def check(result, q, k, v, grad_out, mode, tol, **kw):
    out, rq, rk, rv = result
    assert out.shape == (*q.shape[:3], v.shape[3]) and rq.shape == q.shape and rk.shape == k.shape
    assert rv.shape == v.shape
    torch.testing.assert_close(out.double(), attention_forward_reference(q, k, v, **kw)["out"], atol=20 * tol, rtol=tol)
    eq, ek, ev = reference(q, k, v, grad_out, mode, **kw)
    assert_rel_close(rv, ev, tol, "R_v")
    if mode == "cp-lrp":  # nothing through Q and K (and the reference's zeros have their shapes)
        assert rq.abs().max() == 0 and rk.abs().max() == 0 and eq.shape == q.shape and ek.shape == k.shape
    else:
        assert_rel_close(rq, eq, tol, "R_q")
        assert_rel_close(rk, ek, tol, "R_k")


@pytest.mark.parametrize("backend", ("triton", "torch", "sdpa"))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ("smaller_v", "larger_v"))
def test_value_head_dim_differs_fp32(case, mode, backend):
    q, k, v, g, kw = make_case(case)
    check(run(lrp_attention, q, k, v, g, mode=mode, backend=backend, **kw), q, k, v, g, mode, 1e-5, **kw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ("smaller_v", "larger_v"))
def test_value_head_dim_differs_fp64(case, mode):
    """float64 on the PyTorch twin and through SDPA: float64 rounding against the float64 reference."""
    q, k, v, g, kw = make_case(case, torch.float64)
    check(run(lrp_attention, q, k, v, g, mode=mode, backend="torch", **kw), q, k, v, g, mode, 1e-12, **kw)
    check(run(lrp_sdpa_attention, q, k, v, g, mode=mode, **kw), q, k, v, g, mode, 1e-12, **kw)


def test_value_head_dim_differs_triton_interior_tiles_and_window():
    """Several full tiles (the interpreter's 32 x 16 and 16 x 32) with D_qk 24, D_v 40, causal with a
    sliding window: the unmasked interior runs of every kernel between the window's edges, and N != M."""
    q, k, v, g = torch.randn(1, 2, 70, 24), torch.randn(1, 1, 90, 24), torch.randn(1, 1, 90, 40), torch.randn(1, 2, 70, 40)
    kw = dict(causal=True, sliding_window=60)
    check(run(lrp_attention, q, k, v, g, mode="attnlrp", backend="triton", **kw), q, k, v, g, "attnlrp", 1e-5, **kw)


def test_value_head_dim_differs_triton_stacked_streams():
    """K = 2 stacked cotangents [K, B, H, N, D_v] through the kernels' third grid axis."""
    from lrp_triton.kernels.attention import attention_backward, attention_forward

    q, k, v, _, kw = make_case("smaller_v")
    dos = torch.randn(2, *q.shape[:3], v.shape[3])
    out, lse = attention_forward(q, k, v, scale=q.shape[3] ** -0.5, **kw)
    dq, dk, dv = attention_backward(dos, q, k, v, out, lse, scale=q.shape[3] ** -0.5, mode="attnlrp", **kw)
    assert dq.shape == (2, *q.shape) and dk.shape == (2, *k.shape) and dv.shape == (2, *v.shape)
    for j in range(2):
        eq, ek, ev = reference(q, k, v, dos[j], "attnlrp", **kw)
        for actual, expected, name in ((q * dq[j], eq, "R_q"), (k * dk[j], ek, "R_k"), (v * dv[j], ev, "R_v")):
            assert_rel_close(actual, expected, 1e-5, f"{name} stream {j}")
    with pytest.raises(ValueError, match="expected"):
        attention_backward(dos[..., 1:], q, k, v, out, lse, scale=q.shape[3] ** -0.5, mode="attnlrp", **kw)


def test_value_head_dim_bad_inputs():
    q, k = torch.randn(1, 2, 5, 24), torch.randn(1, 2, 5, 24)
    with pytest.raises(ValueError, match="same shape but for the head dim"):
        lrp_attention(q, k, torch.randn(1, 2, 6, 16))
    with pytest.raises(ValueError, match="head_dim 8"):
        lrp_attention(q, k, torch.randn(1, 2, 5, 8), backend="triton")
    with pytest.raises(ValueError, match="empty input"):
        lrp_attention(q, k, torch.randn(1, 2, 5, 0))
    assert lrp_attention(q, k, torch.randn(1, 2, 5, 8), backend="torch").shape == (1, 2, 5, 8)
