"""lrp_attention (Triton under the interpreter, and PyTorch) against the explicit float64 references."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lrp_triton.ops import lrp_attention
from reference_attention import (attention_forward_reference, attention_gradient_reference,
                                 attention_relevance_reference, dense_relative_bias, visibility)
from scaled_close import assert_rel_close

BACKENDS = ("triton", "torch")
MODES = ("attnlrp", "cp-lrp", "gradient")

pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest: NaN-filled output buffers


def make_case(name, dtype=torch.float32, head_dim=80):
    """Fresh random inputs for one named mask/shape case: (q, k, v, grad_out, kwargs)."""
    b, h, hkv, n, m = 2, 4, 2, 37, 37
    kw = dict(causal=True)
    if name == "noncausal_cross":  # encoder-decoder cross attention: N != M, no causality
        n, m, kw = 23, 41, dict(causal=False)
    elif name == "cached_prefix":  # causal with queries the last N of M positions
        n, m = 19, 50
    elif name == "mqa_padding":  # one kv head, left padding in one row
        hkv = 1
    elif name == "window":
        kw["sliding_window"] = 7
    elif name == "softcap":
        kw["softcap"] = 2.0
    elif name == "local_window":  # ModernBERT's local layers: the band |i - j| < 9, N != M, padding
        n, m, kw = 41, 58, dict(causal=False, sliding_window=9)
    elif name == "bias":
        n, m, kw = 29, 45, dict(causal=False)
    elif name == "relative_bias":  # T5 decoder-like: causal, queries the last N of M, bias per offset
        n, m = 27, 40
    q = torch.randn(b, h, n, head_dim, dtype=torch.float32)
    if name == "softcap":
        q = q * 3.0  # logits large enough that the tanh cap matters
    k = torch.randn(b, hkv, m, head_dim)
    v = torch.randn(b, hkv, m, head_dim)
    if name in ("mqa_padding", "local_window"):
        mask = torch.ones(b, m, dtype=torch.bool)
        mask[1, :11] = False  # left padding
        mask[0, torch.randperm(m)[:5]] = False  # scattered holes
        kw["key_padding_mask"] = mask
    if name == "bias":
        kw["bias"] = torch.randn(1, h, n, m) + torch.randn(b, 1, 1, m)
    if name == "relative_bias":
        kw["relative_bias"] = 2.0 * torch.randn(h, n + m - 1)
    grad_out = torch.randn(b, h, n, head_dim)
    return (q.to(dtype), k.to(dtype), v.to(dtype), grad_out.to(dtype), kw)


CASES = ("causal", "noncausal_cross", "cached_prefix", "mqa_padding", "window", "softcap", "bias", "relative_bias")


def run_op(q, k, v, grad_out, backend, mode, **kw):
    """Relevance x * x.grad of q, k, v through lrp_attention, and its output."""
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = lrp_attention(q, k, v, mode=mode, backend=backend, **kw)
    out.backward(grad_out)
    return out, q * q.grad, k * k.grad, v * v.grad


def reference(q, k, v, grad_out, mode, **kw):
    if mode == "gradient":
        return attention_gradient_reference(q, k, v, grad_out, **kw)
    return attention_relevance_reference(q, k, v, grad_out, mode=mode, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_relevance_fp32_matches_explicit_reference(case, mode, backend):
    q, k, v, grad_out, kw = make_case(case)
    out, rq, rk, rv = run_op(q, k, v, grad_out, backend, mode, **kw)
    ref_out = attention_forward_reference(q, k, v, **kw)["out"]
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=1e-5)
    eq, ek, ev = reference(q, k, v, grad_out, mode, **kw)
    assert_rel_close(rv, ev, 1e-5, "R_v")
    if mode == "cp-lrp":
        assert rq.abs().max() == 0 and rk.abs().max() == 0
    else:
        assert_rel_close(rq, eq, 1e-5, "R_q")
        assert_rel_close(rk, ek, 1e-5, "R_k")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", (*CASES, "local_window"))  # (Triton's band: test_triton_symmetric_window_tiles)
def test_relevance_fp64_runs_in_float64_on_the_torch_path(case, mode):
    """float64 inputs ("auto" picks the PyTorch path) are computed in float64 throughout: the
    relevance matches the float64 reference to float64 rounding, not float32's."""
    q, k, v, grad_out, kw = make_case(case, dtype=torch.float64)
    out, rq, rk, rv = run_op(q, k, v, grad_out, "auto", mode, **kw)
    assert out.dtype == rq.dtype == rk.dtype == rv.dtype == torch.float64
    torch.testing.assert_close(out, attention_forward_reference(q, k, v, **kw)["out"], atol=1e-12, rtol=1e-12)
    for actual, expected, name in zip((rq, rk, rv), reference(q, k, v, grad_out, mode, **kw), ("R_q", "R_k", "R_v")):
        if mode == "cp-lrp" and name != "R_v":
            assert actual.abs().max() == 0
        else:
            assert_rel_close(actual, expected, 1e-12, name)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ("causal", "cached_prefix", "softcap", "mqa_padding"))
def test_relevance_half_precision(case, backend, dtype):
    q, k, v, grad_out, kw = make_case(case, dtype=dtype)
    out, rq, rk, rv = run_op(q, k, v, grad_out, backend, "attnlrp", **kw)
    assert out.dtype == dtype and rq.dtype == dtype
    eq, ek, ev = attention_relevance_reference(q, k, v, grad_out, mode="attnlrp", **kw)
    tol = 2e-2 if dtype == torch.float16 else 6e-2
    for actual, expected, name in ((rq, eq, "R_q"), (rk, ek, "R_k"), (rv, ev, "R_v")):
        assert_rel_close(actual, expected, tol, name)


@pytest.mark.parametrize("head_dim", (16, 64, 96, 128, 256))
def test_head_dims_triton(head_dim):
    q, k, v, grad_out, kw = make_case("cached_prefix", head_dim=head_dim)
    _, rq, rk, rv = run_op(q, k, v, grad_out, "triton", "attnlrp", **kw)
    eq, ek, ev = attention_relevance_reference(q, k, v, grad_out, mode="attnlrp", **kw)
    for actual, expected, name in ((rq, eq, "R_q"), (rk, ek, "R_k"), (rv, ev, "R_v")):
        assert_rel_close(actual, expected, 1e-5, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ("causal", "cached_prefix", "window", "local_window", "mqa_padding", "bias",
                                  "relative_bias"))
def test_forward_matches_sdpa(case, backend):
    q, k, v, _, kw = make_case(case)
    b, h, n, _ = q.shape
    m, g = k.shape[2], q.shape[1] // k.shape[1]
    vis = visibility(b, n, m, causal=kw.get("causal", True), sliding_window=kw.get("sliding_window"),
                     key_padding_mask=kw.get("key_padding_mask"), device=q.device)
    attn_mask = torch.zeros(b, 1, n, m).masked_fill(~vis, float("-inf"))
    if "bias" in kw:
        attn_mask = attn_mask + kw["bias"]
    if "relative_bias" in kw:
        attn_mask = attn_mask + dense_relative_bias(kw["relative_bias"], n, m).float()
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                              attn_mask=attn_mask)
    out = lrp_attention(q, k, v, backend=backend, **kw)
    rows = vis.any(-1).expand(b, h, n)  # SDPA gives NaN on rows with no visible key
    torch.testing.assert_close(out[rows], expected[rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_mode_equals_torch_autograd(backend):
    """mode='gradient' is the exact gradient: compare with autograd through SDPA (float32)."""
    q, k, v, grad_out, kw = make_case("causal")
    _, rq, rk, rv = run_op(q, k, v, grad_out, backend, "gradient", **kw)
    qa, ka, va = (t.clone().requires_grad_() for t in (q, k, v))
    F.scaled_dot_product_attention(qa, ka, va, is_causal=True, enable_gqa=True).backward(grad_out)
    for actual, t in ((rq, qa), (rk, ka), (rv, va)):
        torch.testing.assert_close(actual, t.detach() * t.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_fully_masked_rows_give_zeros_not_nan(backend, mode):
    b, h, n, m, d = 2, 2, 21, 13, 32
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, 1, m, d), torch.randn(b, 1, m, d)
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[1] = False  # batch row 1 sees no key at all
    # causal with N > M: the first N - M queries sit before every key
    out, rq, rk, rv = run_op(q, k, v, torch.randn(b, h, n, d), backend, mode, causal=True,
                             key_padding_mask=mask)
    for t in (out, rq, rk, rv):
        assert torch.isfinite(t).all()
    assert out[1].abs().max() == 0 and rq[1].abs().max() == 0 and rk[1].abs().max() == 0
    assert out[0, :, : n - m].abs().max() == 0
    assert out[0, :, n - m:].abs().min() > 0


def test_triton_and_torch_backends_agree_on_long_odd_input():
    """Several key and query blocks, causal with a window: the two backends against each other."""
    q, k, v = torch.randn(1, 2, 75, 48), torch.randn(1, 1, 101, 48), torch.randn(1, 1, 101, 48)
    g = torch.randn(1, 2, 75, 48)
    a = run_op(q, k, v, g, "triton", "attnlrp", causal=True, sliding_window=40)
    b = run_op(q, k, v, g, "torch", "attnlrp", causal=True, sliding_window=40)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_auto_backend_on_cpu_takes_sdpa_where_it_can_and_torch_otherwise(monkeypatch):
    """CPU policy (measured, see lrp_triton.ops.attention): SDPA with scaled gradients, except for what
    SDPA cannot express (soft-capping, T5's relative bias), which takes the PyTorch twin."""
    import lrp_triton.ops.attention as op_module

    chosen, sdpa = [], []
    real, real_sdpa = op_module.ATTENTION, op_module.lrp_sdpa_attention
    monkeypatch.setattr(op_module, "ATTENTION", lambda backend: chosen.append(backend) or real(backend))
    monkeypatch.setattr(op_module, "lrp_sdpa_attention", lambda *a, **kw: sdpa.append(1) or real_sdpa(*a, **kw))
    q = torch.randn(1, 2, 5, 16)
    lrp_attention(q, q, q)
    assert sdpa == [1] and chosen == []
    lrp_attention(q, q, q, softcap=3.0)
    lrp_attention(q, q, q, relative_bias=torch.zeros(2, 9))
    assert sdpa == [1] and chosen == ["torch", "torch"]


def test_auto_backend_sends_float64_to_torch_even_on_cuda():
    from lrp_triton.backend import resolve_backend

    cuda = torch.device("cuda")  # resolve_backend only reads the device type: no GPU needed
    assert resolve_backend("auto", cuda, dtype=torch.float64) == "torch"
    with pytest.raises(TypeError, match="use backend='torch' or 'auto'"):
        resolve_backend("triton", cuda, dtype=torch.float64)


@pytest.mark.parametrize("args, kwargs, error, match", [
    (((1, 4, 5, 16), (1, 3, 5, 16), (1, 3, 5, 16)), {}, ValueError, "multiple of the number of key/value heads"),
    (((1, 4, 5, 16), (1, 2, 5, 16), (1, 2, 6, 16)), {}, ValueError, "same shape"),
    (((1, 4, 5, 16), (2, 2, 5, 16), (2, 2, 5, 16)), {}, ValueError, "batch and head_dim"),
    (((1, 4, 5, 16), (1, 2, 5, 32), (1, 2, 5, 32)), {}, ValueError, "batch and head_dim"),
    (((4, 5, 16), (1, 2, 5, 16), (1, 2, 5, 16)), {}, ValueError, "4-D"),
    (((1, 4, 5, 16),) * 3, {"mode": "lrp"}, ValueError, "unknown mode"),
    (((1, 4, 5, 16),) * 3, {"backend": "cuda"}, ValueError, "unknown backend"),
    (((1, 4, 5, 8),) * 3, {"backend": "triton"}, ValueError, "head_dim 8"),
    (((1, 4, 5, 320),) * 3, {"backend": "triton"}, ValueError, "head_dim 320"),
    (((1, 4, 5, 16),) * 3, {"sliding_window": 0}, ValueError, "sliding_window"),
    (((1, 4, 5, 16),) * 3, {"softcap": -1.0}, ValueError, "softcap"),
    (((1, 4, 5, 16),) * 3, {"scale": -0.25}, ValueError, "scale must be positive"),
    (((1, 4, 5, 16),) * 3, {"scale": float("nan")}, ValueError, "scale must be positive"),
    (((1, 4, 5, 16),) * 3, {"key_padding_mask": torch.ones(1, 5)}, TypeError, "bool"),
    (((1, 4, 5, 16),) * 3, {"key_padding_mask": torch.ones(1, 4, dtype=torch.bool)}, ValueError, r"shape \(1, 5\)"),
    (((1, 4, 5, 16),) * 3, {"bias": torch.ones(1, 3, 5, 5)}, ValueError, "does not broadcast"),
    (((1, 4, 5, 16),) * 3, {"bias": torch.ones(1, 4, 5, 5, dtype=torch.bool)}, TypeError, "floating-point"),
    (((1, 4, 5, 16),) * 3, {"relative_bias": torch.ones(4, 10)}, ValueError, r"\[heads, q_len \+ kv_len - 1\]"),
])
def test_bad_input_errors(args, kwargs, error, match):
    q, k, v = (torch.randn(s) for s in args)
    with pytest.raises(error, match=match):
        lrp_attention(q, k, v, **kwargs)


def test_bad_dtype_and_device_errors():
    q = torch.randn(1, 2, 5, 16)
    with pytest.raises(TypeError, match="unsupported dtype torch.int32"):
        lrp_attention(q.int(), q.int(), q.int())
    with pytest.raises(TypeError, match="Triton kernels take float32, float16 or bfloat16"):
        lrp_attention(q.double(), q.double(), q.double(), backend="triton")
    with pytest.raises(TypeError, match="share a dtype"):
        lrp_attention(q, q.half(), q.half())
    with pytest.raises(ValueError, match="is on meta"):
        lrp_attention(q, q.to("meta"), q)


def test_triton_on_cpu_without_interpreter_says_how_to_fix():
    code = ("import torch; from lrp_triton.ops import lrp_attention\n"
            "q = torch.randn(1, 1, 4, 16)\n"
            "try:\n    lrp_attention(q, q, q, backend='triton')\n"
            "except RuntimeError as e:\n    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ERR" in res.stdout and "TRITON_INTERPRET=1" in res.stdout, res.stdout + res.stderr


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v = torch.randn(1, 1, 6, 36), torch.randn(1, 1, 6, 36), torch.randn(1, 1, 6, 36)
    out = lrp_attention(q, k, v, causal=False)
    expected = F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(36))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(lrp_attention(q, k, v, causal=False, scale=1.0), out)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ("causal", "window", "mqa_padding", "relative_bias"))
def test_triton_backward_takes_stacked_cotangent_streams(case, mode):
    """attention_backward with dO of K = 3 stacked cotangents [K, B, H, N, D] (the kernels' third grid
    axis): stream j's gradients give the explicit reference's relevance for cotangent j."""
    from lrp_triton.kernels.attention import attention_backward, attention_forward

    q, k, v, _, kw = make_case(case, head_dim=48)
    dos = torch.randn(3, *q.shape)
    scale = q.shape[-1] ** -0.5
    out, lse = attention_forward(q, k, v, scale=scale, **dict(kw, causal=kw.get("causal", True)))
    kw_b = dict(kw, causal=kw.get("causal", True))
    dq, dk, dv = attention_backward(dos, q, k, v, out, lse, scale=scale, mode=mode, **kw_b)
    assert dq.shape == (3, *q.shape) and dk.shape == dv.shape == (3, *k.shape)
    for j in range(3):
        eq, ek, ev = reference(q, k, v, dos[j], mode, **kw)
        assert_rel_close(v * dv[j], ev, 1e-5, f"R_v stream {j}")
        if mode == "cp-lrp":
            assert dq[j].abs().max() == 0 and dk[j].abs().max() == 0
        else:
            assert_rel_close(q * dq[j], eq, 1e-5, f"R_q stream {j}")
            assert_rel_close(k * dk[j], ek, 1e-5, f"R_k stream {j}")
    with pytest.raises(ValueError, match="expected"):
        attention_backward(dos[:, :, :, 1:], q, k, v, out, lse, scale=scale, mode=mode, **kw_b)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw, n, m", [
    (dict(causal=True), 100, 100),  # interior key tiles below the diagonal in every kernel
    (dict(causal=True), 70, 130),  # a cached prefix: queries the last N of M
    (dict(causal=True, sliding_window=45), 100, 100),  # interior tiles between the window's edges
    (dict(causal=False), 96, 80),  # no mask at all but the bounds
    (dict(causal=True, softcap=2.0), 100, 100),  # interior tiles on the general (soft-capped) path
    (dict(causal=False, padding=True, bias=True), 96, 80),  # padding and a bias inside interior tiles
])
def test_triton_interior_and_boundary_tiles(kw, n, m, mode):
    """Sizes with several full tiles on each side of the diagonal / window edge for the interpreter's
    tiles (forward and dQ 32 x 16, dK-dV 16 x 32), so that every kernel runs its unmasked interior run
    (one fused exponent, no masks) as well as its masked boundary run: against the explicit reference."""
    kw = dict(kw)
    q, k, v, g = torch.randn(2, 4, n, 32), torch.randn(2, 2, m, 32), torch.randn(2, 2, m, 32), torch.randn(2, 4, n, 32)
    if kw.pop("padding", False):
        mask = torch.ones(2, m, dtype=torch.bool)
        mask[1, :9] = False
        mask[0, torch.randperm(m)[:6]] = False
        kw["key_padding_mask"] = mask
    if kw.pop("bias", False):
        kw["bias"] = torch.randn(1, 4, n, m)
    if "softcap" in kw:
        q = 3.0 * q
    _, rq, rk, rv = run_op(q, k, v, g, "triton", mode, **kw)
    eq, ek, ev = reference(q, k, v, g, mode, **kw)
    assert_rel_close(rv, ev, 1e-5, "R_v")
    if mode != "cp-lrp":
        assert_rel_close(rq, eq, 1e-5, "R_q")
        assert_rel_close(rk, ek, 1e-5, "R_k")


def test_triton_symmetric_window_tiles():
    """ModernBERT's local band |i - j| < window without causality, N != M, padding, against the explicit
    reference. Sizes for the interpreter's tiles (forward and dQ 32 x 16, dK-dV 16 x 32): every kernel
    skips tiles wholly outside the band on either side (forward: key tile 80 for query block 0, key
    tile 0 for block 32; dK-dV: query tiles 48, 64 for key block 0, query tile 0 for block 64) and runs
    unmasked interior tiles wholly inside it (key tile 32 of query block 0; query tile 16 of key block 32)."""
    n, m, w = 75, 96, 28
    q, k, v, g = torch.randn(1, 2, n, 32), torch.randn(1, 1, m, 32), torch.randn(1, 1, m, 32), torch.randn(1, 2, n, 32)
    mask = torch.ones(1, m, dtype=torch.bool)
    mask[0, torch.randperm(m)[:7]] = False
    kw = dict(causal=False, sliding_window=w, key_padding_mask=mask)
    out, rq, rk, rv = run_op(q, k, v, g, "triton", "attnlrp", **kw)
    torch.testing.assert_close(out.double(), attention_forward_reference(q, k, v, **kw)["out"], atol=2e-5, rtol=1e-5)
    for actual, expected, name in zip((rq, rk, rv), reference(q, k, v, g, "attnlrp", **kw), ("R_q", "R_k", "R_v")):
        assert_rel_close(actual, expected, 1e-5, name)


SINK_CASES = ("cross", "prefix_window", "padding")


def sink_case(case, dtype=torch.float32):
    """Small inputs (the interpreter is slow) with one sink logit per query head, large enough that each sink
    takes a real share: "cross" non-causal GQA with N != M; "prefix_window" causal GQA, queries the last N of
    M, a sliding window; "padding" causal MQA with left padding (the padded row's first queries see no key but
    the sink) and scattered holes."""
    b, h, hkv, n, m, d = 2, 4, 2, 12, 12, 16
    kw = dict(causal=True)
    if case == "cross":
        n, m, kw = 7, 13, dict(causal=False)
    elif case == "prefix_window":
        n, m, kw["sliding_window"] = 9, 16, 5
    else:
        hkv = 1
        mask = torch.ones(b, m, dtype=torch.bool)
        mask[1, :5] = False
        mask[0, torch.randperm(m)[:3]] = False
        kw["key_padding_mask"] = mask
    q, k, v, grad_out = (torch.randn(b, x, length, d) for x, length in ((h, n), (hkv, m), (hkv, m), (h, n)))
    kw["sinks"] = 1.0 + 2.0 * torch.randn(h)
    return q.to(dtype), k.to(dtype), v.to(dtype), grad_out.to(dtype), dict(kw, sinks=kw["sinks"].to(dtype))


# every case in every mode on the fast backends; on Triton (the interpreter is slow) every case in AttnLRP mode
# and the padded one in every mode
SINK_RUNS = [(c, m, b) for c in SINK_CASES for m in MODES for b in ("torch", "sdpa")] + \
    [(c, "attnlrp", "triton") for c in SINK_CASES] + [("padding", m, "triton") for m in MODES if m != "attnlrp"]


@pytest.mark.parametrize("case, mode, backend", SINK_RUNS)
def test_sinks_match_explicit_reference(case, mode, backend):
    """Attention sinks (gpt-oss): the forward is HF's eager formula (the sink one more softmax column, then
    dropped), and the relevance equals the explicit reference's, where the sink keeps its share."""
    q, k, v, grad_out, kw = sink_case(case)
    out, rq, rk, rv = run_op(q, k, v, grad_out, backend, mode, **kw)
    b, h, n, _ = q.shape
    m, g = k.shape[2], h // k.shape[1]
    vis = visibility(b, n, m, causal=kw.get("causal", True), sliding_window=kw.get("sliding_window"),
                     key_padding_mask=kw.get("key_padding_mask"), device=q.device)
    scores = (q @ k.repeat_interleave(g, 1).transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~vis, -math.inf)
    eager = torch.cat([scores, kw["sinks"].view(1, h, 1, 1).expand(b, h, n, 1)], -1).softmax(-1)[..., :-1]
    torch.testing.assert_close(out, eager @ v.repeat_interleave(g, 1), atol=2e-5, rtol=1e-5)
    eq, ek, ev = reference(q, k, v, grad_out, mode, **kw)
    assert_rel_close(rv, ev, 1e-5, "R_v")
    if mode == "cp-lrp":
        assert rq.abs().max() == 0 and rk.abs().max() == 0
        return
    assert_rel_close(rq, eq, 1e-5, "R_q")
    assert_rel_close(rk, ek, 1e-5, "R_k")
    if mode == "attnlrp":  # the sinks keep a share: less relevance reaches q and k than without them
        nq, nk, _ = reference(q, k, v, grad_out, mode, **{a: b for a, b in kw.items() if a != "sinks"})
        assert not torch.allclose(eq.sum(), nq.sum(), rtol=1e-3)


@pytest.mark.parametrize("backend", ("torch", "sdpa"))
@pytest.mark.parametrize("mode", MODES)
def test_sinks_fp64(mode, backend):
    q, k, v, grad_out, kw = sink_case("padding", dtype=torch.float64)
    out, rq, rk, rv = run_op(q, k, v, grad_out, backend, mode, **kw)
    assert out.dtype == rq.dtype == torch.float64
    for actual, expected, name in zip((rq, rk, rv), reference(q, k, v, grad_out, mode, **kw), ("R_q", "R_k", "R_v")):
        if mode == "cp-lrp" and name != "R_v":
            assert actual.abs().max() == 0
        else:
            assert_rel_close(actual, expected, 1e-12, name)


def test_sinks_bad_input():
    q = torch.randn(1, 4, 5, 16)
    with pytest.raises(ValueError, match=r"sinks must have shape \[heads\] = \(4,\)"):
        lrp_attention(q, q[:, :2], q[:, :2], sinks=torch.zeros(2))
    with pytest.raises(TypeError, match="sinks must be a floating-point tensor"):
        lrp_attention(q, q, q, sinks=torch.zeros(4, dtype=torch.long))


def test_every_code_path_flag_is_in_its_autotune_key():
    """A HAS_* constexpr selects another compiled variant (sinks, window, padding, ...): one left out of the
    autotuner's key makes the variants share one tuning choice (the first one tuned)."""
    from triton.runtime.autotuner import Autotuner

    from lrp_triton.kernels import attention, attention_backward

    tuners = [o for m in (attention, attention_backward) for o in vars(m).values() if isinstance(o, Autotuner)]
    assert {t.base_fn.__name__ for t in tuners} == {"_attn_fwd", "attn_bwd_dq", "attn_bwd_dkdv"}
    for t in tuners:
        flags = [a for a in t.arg_names if a.startswith("HAS_")]
        assert flags and not set(flags) - set(t.keys), (t.base_fn.__name__, set(flags) - set(t.keys))
