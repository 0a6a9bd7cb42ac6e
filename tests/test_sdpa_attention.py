"""lrp_sdpa_attention (SDPA with scaled gradients, lxt's method) against the explicit float64 references:
relevance x * grad of q, k and v, every mode, GQA, padding, windows, N != M, bias; float32 and float64."""

from __future__ import annotations

import pytest
import torch

from lrp_triton.attention_interface import lrp_attention_mask
from lrp_triton.ops import lrp_attention
from lrp_triton.attention_interface import sdpa_attention_interface
from lrp_triton.ops.sdpa_attention import lrp_sdpa_attention
from reference_attention import (attention_forward_reference, attention_gradient_reference,
                                 attention_relevance_reference)
from scaled_close import assert_rel_close

MODES = ("attnlrp", "cp-lrp", "gradient")
CASES = ("causal", "noncausal_gqa", "cross", "cached_prefix", "left_padding_mqa", "right_padding_noncausal",
         "window", "window_prefix", "local_window", "bias", "bias_causal_padding")


def make_case(name, dtype):
    """(q, k, v, grad_out, kwargs) with odd sizes; fresh random draws."""
    b, h, hkv, n, m, d = 2, 4, 2, 37, 37, 24
    kw = dict(causal=True)
    if name == "noncausal_gqa":
        h, hkv, n, m, kw = 6, 2, 29, 29, dict(causal=False)
    elif name == "cross":
        n, m, kw = 23, 41, dict(causal=False)
    elif name == "cached_prefix":
        n, m = 19, 50
    elif name == "left_padding_mqa":
        hkv = 1
    elif name == "window":
        kw["sliding_window"] = 7
    elif name == "window_prefix":
        n, m, kw["sliding_window"] = 13, 30, 5
    elif name == "local_window":  # the symmetric band of ModernBERT's local layers, N != M, padding
        n, m, kw = 21, 33, dict(causal=False, sliding_window=6)
    elif name == "bias":
        n, m, kw = 29, 45, dict(causal=False)
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, hkv, m, d), torch.randn(b, hkv, m, d)
    if name in ("left_padding_mqa", "right_padding_noncausal", "bias_causal_padding", "local_window"):
        mask = torch.ones(b, m, dtype=torch.bool)
        if name == "right_padding_noncausal":
            kw["causal"] = False
            mask[0, m - 7:] = False
        else:
            mask[1, :11] = False
        kw["key_padding_mask"] = mask
    if name.startswith("bias"):
        kw["bias"] = (torch.randn(1, h, n, m) + torch.randn(b, 1, 1, m)).to(dtype)
    grad_out = torch.randn(b, h, n, d)
    return q.to(dtype), k.to(dtype), v.to(dtype), grad_out.to(dtype), kw


def relevance(fn, q, k, v, grad_out, **kw):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kw)
    out.backward(grad_out)
    return out, q * q.grad, k * k.grad, v * v.grad


def lrp_attention_sdpa_backend(q, k, v, **kw):
    return lrp_attention(q, k, v, backend="sdpa", **kw)


ENTRIES = {"op": lrp_sdpa_attention, "backend": lrp_attention_sdpa_backend}  # the op, and lrp_attention's route


@pytest.mark.parametrize("entry", tuple(ENTRIES))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_relevance_matches_explicit_reference(case, mode, dtype, entry):
    q, k, v, grad_out, kw = make_case(case, dtype)
    out, rq, rk, rv = relevance(ENTRIES[entry], q, k, v, grad_out, mode=mode, **kw)
    assert out.dtype == rq.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    assert_rel_close(out, attention_forward_reference(q, k, v, **kw)["out"], tol, "out")
    if mode == "gradient":
        expected = attention_gradient_reference(q, k, v, grad_out, **kw)
    else:
        expected = attention_relevance_reference(q, k, v, grad_out, mode=mode, **kw)
    for actual, ref, name in zip((rq, rk, rv), expected, ("R_q", "R_k", "R_v")):
        if mode == "cp-lrp" and name != "R_v":
            assert actual.abs().max() == 0, name
        else:
            assert_rel_close(actual, ref, tol, name)


@pytest.mark.parametrize("mode", MODES)
def test_rows_without_visible_keys_give_zeros(mode):
    b, h, n, m, d = 2, 2, 21, 13, 16
    q, k, v, g = torch.randn(b, h, n, d), torch.randn(b, 1, m, d), torch.randn(b, 1, m, d), torch.randn(b, h, n, d)
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[1] = False  # batch row 1 sees no key; causal with N > M: the first N - M queries see none either
    for extra in ({}, {"bias": torch.randn(1, h, n, m)}):
        out, rq, rk, rv = relevance(lrp_sdpa_attention, q, k, v, g, causal=True, key_padding_mask=mask, mode=mode,
                                    **extra)
        for t in (out, rq, rk, rv):
            assert torch.isfinite(t).all()
        assert out[1].abs().max() == 0 and out[0, :, : n - m].abs().max() == 0
        assert out[0, :, n - m:].abs().min() > 0 and rv[1].abs().max() == 0


def test_plain_causal_uses_is_causal_and_no_mask(monkeypatch):
    import torch.nn.functional as F

    seen = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = torch.randn(1, 4, 9, 16), torch.randn(1, 2, 9, 16), torch.randn(1, 2, 9, 16)
    lrp_sdpa_attention(q, k, v)
    lrp_sdpa_attention(q, k, v, causal=False)
    lrp_sdpa_attention(q[:, :, 3:], k, v)  # N != M: bottom-right aligned, needs a mask
    assert [(s["is_causal"], s.get("attn_mask"), s["enable_gqa"]) for s in seen[:2]] == [(True, None, True),
                                                                                         (False, None, True)]
    assert seen[2].get("attn_mask") is not None and not seen[2].get("is_causal", False)


def test_errors_are_clear():
    q, k, v = torch.randn(1, 4, 8, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)
    with pytest.raises(NotImplementedError, match="use lrp_triton.ops.lrp_attention"):
        lrp_sdpa_attention(q, k, v, softcap=50.0)
    with pytest.raises(NotImplementedError, match="relative_bias.*lrp_attention"):
        lrp_sdpa_attention(q, k, v, relative_bias=torch.randn(4, 15))
    with pytest.raises(ValueError, match="multiple of"):
        lrp_sdpa_attention(q, torch.randn(1, 3, 8, 16), torch.randn(1, 3, 8, 16))
    with pytest.raises(ValueError, match="4-D"):
        lrp_sdpa_attention(q[0], k, v)
    with pytest.raises(TypeError, match="dtype"):
        lrp_sdpa_attention(q, k.half(), v)
    with pytest.raises(TypeError, match="dtype"):
        lrp_sdpa_attention(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="unknown mode"):
        lrp_sdpa_attention(q, k, v, mode="lrp")
    with pytest.raises(TypeError, match="^lrp_sdpa_attention: key_padding_mask"):
        lrp_sdpa_attention(q, k, v, key_padding_mask=torch.ones(1, 8))
    with pytest.raises(ValueError, match="broadcast"):
        lrp_sdpa_attention(q, k, v, bias=torch.randn(1, 4, 7, 8))
    with pytest.raises(ValueError, match="sliding_window"):
        lrp_sdpa_attention(q, k, v, sliding_window=0)


class _Module(torch.nn.Module):
    def __init__(self, is_causal):
        super().__init__()
        self.is_causal = is_causal


@pytest.mark.parametrize("mode", MODES)
def test_interface_matches_lrp_attention(mode):
    """The HF-signature wrapper with lrp_triton's 2-D padding mask (lrp_attention_mask): the same output and
    relevance as lrp_attention (PyTorch path) with that padding, output [B, S, H, D]."""
    q, k, v, g, kw = make_case("left_padding_mqa", torch.float64)
    pad = lrp_attention_mask(2, 37, 37, attention_mask=kw["key_padding_mask"].long())

    def ours(q, k, v):
        return sdpa_attention_interface(_Module(is_causal=True), q, k, v, pad, scaling=0.3, mode=mode)[0]

    def theirs(q, k, v):
        return lrp_attention(q, k, v, causal=True, scale=0.3, mode=mode, key_padding_mask=kw["key_padding_mask"],
                             backend="torch").transpose(1, 2)

    a, b = relevance(ours, q, k, v, g.transpose(1, 2)), relevance(theirs, q, k, v, g.transpose(1, 2))
    assert a[0].shape == (2, 37, 4, 24)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_interface_position_bias_and_4d_mask():
    """T5-style call: a materialised position bias [1, H, N, M] plus a caller-made 4-D bool mask."""
    q, k, v, g, _ = make_case("cross", torch.float64)
    bias = torch.randn(1, 4, 23, 41, dtype=torch.float64)
    mask4 = torch.rand(2, 1, 23, 41) > 0.3
    mask4[..., 0] = True
    out = sdpa_attention_interface(_Module(False), q, k, v, mask4, position_bias=bias, scaling=1.0)[0]
    full = bias + torch.zeros(mask4.shape, dtype=torch.float64).masked_fill(~mask4, float("-inf"))
    want = lrp_attention(q, k, v, causal=False, scale=1.0, bias=full, backend="torch").transpose(1, 2)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(NotImplementedError, match="lrp_attention"):
        sdpa_attention_interface(_Module(True), q, k, v, None, softcap=30.0)


def test_the_sdpa_backend_refuses_what_sdpa_cannot_express():
    q = torch.randn(1, 2, 5, 16)
    with pytest.raises(NotImplementedError, match="backend='sdpa' cannot express soft-capping.*'torch' or 'triton'"):
        lrp_attention(q, q, q, softcap=5.0, backend="sdpa")
    with pytest.raises(NotImplementedError, match="backend='sdpa' cannot express a relative-position bias"):
        lrp_attention(q, q, q, relative_bias=torch.zeros(2, 9), backend="sdpa")


@pytest.mark.parametrize("name", ("llama", "mistral", "gpt2", "bert-cls", "vit"))
def test_attribute_with_the_sdpa_backend_equals_the_torch_backend(name, monkeypatch):
    """GQA, sliding window, learned positions, padding, vision: the SDPA route gives the same relevance."""
    import lrp_triton
    import lrp_triton.ops.attention as op_module
    from model_zoo import text_inputs, tiny, tiny_model

    calls = []
    real = op_module.lrp_sdpa_attention
    monkeypatch.setattr(op_module, "lrp_sdpa_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))

    if name in ("bert-cls", "vit"):
        model = tiny(name)
        ids, mask, types = text_inputs(2, 9, pad_last=3)
        kwargs = (dict(pixel_values=torch.randn(2, 3, 32, 32)) if name == "vit"
                  else dict(input_ids=ids, attention_mask=mask, token_type_ids=types))
    else:
        model = tiny_model(name)
        mask = torch.ones(2, 13, dtype=torch.bool)
        mask[1, :4] = False  # left padding
        kwargs = dict(input_ids=torch.randint(0, 101, (2, 13)), attention_mask=mask, position=[-1, -5])
    for mode in MODES:
        expected = lrp_triton.attribute(model, mode=mode, backend="torch", **kwargs)
        assert not calls
        actual = lrp_triton.attribute(model, mode=mode, backend="sdpa", **kwargs)
        assert len(calls) == model.config.num_hidden_layers  # every attention layer took the SDPA route
        calls.clear()
        assert_rel_close(actual.relevance, expected.relevance, 1e-5, f"{name} {mode} relevance")
        torch.testing.assert_close(actual.logit, expected.logit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ("gemma2", "t5"))
def test_attribute_with_the_sdpa_backend_refuses_softcaps_and_t5s_bias(name):
    import lrp_triton
    from model_zoo import tiny_model, tiny_t5

    model = tiny_t5("flan") if name == "t5" else tiny_model(name)
    with pytest.raises(NotImplementedError, match="backend='sdpa' cannot express"):
        lrp_triton.attribute(model, torch.randint(1, 101, (1, 7)), backend="sdpa")
    assert model.config._attn_implementation != "lrp_triton"  # restored after the error
