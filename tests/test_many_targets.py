"""Many targets, one backward (issue 11, part 6): K explained scores run through the backward together.

- the PyTorch attention twin takes K stacked dO [K, B, H, N, D] and equals K one-stream calls;
- every LRP op's backward under vmap over K cotangents (`core.batched_grads`) equals K backward
  passes, on each backend;
- attribute(..., position=[...]) with several targets, contrasts, padded batches and every mode
  equals one call per position and the explicit float64 reference, chunked or not;
- encoders (masked LM), T5, latent relevance and checkpointing take the batched route alike;
- bad chunk sizes and a vmap over the ops' inputs are refused with clear errors.
"""

from __future__ import annotations

import copy

import pytest
import torch

import lrp_triton
from lrp_triton.attribution import core
from lrp_triton.kernels.attention_torch import attention_backward_torch, attention_forward_torch
from lrp_triton.ops import lrp_activation, lrp_attention, lrp_glu, lrp_layer_norm, lrp_rms_norm
from lrp_triton.ops.elementwise import lrp_softcap, lrp_uniform_product
from lrp_triton.ops.gamma import lrp_gamma_conv2d, lrp_gamma_linear
from model_zoo import T5, ZOO, Decoder, padded_index, tiny
from reference_encoders import bert_reference
from scaled_close import assert_rel_close, summed


def sequential_grads(scores, tensors, columns):
    """The baseline: one plain backward pass per column."""
    out = [torch.autograd.grad(scores[..., j].sum(), tensors, retain_graph=True, materialize_grads=True)
           for j in columns]
    return [torch.stack(g) for g in zip(*out)]


# ------------------------------------------------------------------------------------------------
# The attention twin with K stacked dO
# ------------------------------------------------------------------------------------------------
ATTENTION_CASES = [
    dict(causal=True),
    dict(causal=True, sliding_window=4, softcap=7.0),
    dict(causal=False, bias=True, relative_bias=True),
]


@pytest.mark.parametrize("streams", [1, 3])
@pytest.mark.parametrize("mode", ["attnlrp", "cp-lrp", "gradient"])
@pytest.mark.parametrize("case", range(len(ATTENTION_CASES)))
def test_twin_takes_stacked_do_and_equals_one_stream_calls(streams, mode, case):
    kw = dict(ATTENTION_CASES[case])
    b, h, hkv, n, m, d = 2, 4, 2, 7, 9, 8  # GQA, queries the last 7 of 9 positions
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, hkv, m, d), torch.randn(b, hkv, m, d)
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[1, :3] = False  # left padding in row 1
    kw["bias"] = torch.randn(b, 1, n, m) if kw.get("bias") else None
    kw["relative_bias"] = torch.randn(h, n + m - 1) if kw.get("relative_bias") else None
    kw["scale"] = d ** -0.5
    out, lse = attention_forward_torch(q, k, v, key_padding_mask=mask, **kw)
    do = torch.randn(streams, b, h, n, d)
    dq, dk, dv = attention_backward_torch(do, q, k, v, out, lse, mode=mode, key_padding_mask=mask, **kw)
    assert dq.shape == (streams, b, h, n, d) and dk.shape == dv.shape == (streams, b, hkv, m, d)
    for s in range(streams):
        one = attention_backward_torch(do[s], q, k, v, out, lse, mode=mode, key_padding_mask=mask, **kw)
        for got, want in zip((dq[s], dk[s], dv[s]), one):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert dv.abs().max() > 0 and (mode == "cp-lrp") == bool(dq.abs().max() == 0)


def test_twin_refuses_a_do_of_the_wrong_shape():
    q = k = v = torch.randn(1, 2, 5, 4)
    out, lse = attention_forward_torch(q, k, v, causal=True, scale=0.5)
    with pytest.raises(ValueError, match=r"do must have shape \(1, 2, 5, 4\) or \[K, \*that\]"):
        attention_backward_torch(torch.randn(3, 1, 2, 5, 3), q, k, v, out, lse, causal=True, scale=0.5, mode="attnlrp")


# ------------------------------------------------------------------------------------------------
# Every op under vmap over K cotangents
# ------------------------------------------------------------------------------------------------
def _attention(backend, mode, softcap=None):
    def build():
        q, k, v = (torch.randn(2, h, 6, 16, requires_grad=True) for h in (4, 2, 2))
        mask = torch.tensor([[True] * 6, [False, False] + [True] * 4])
        out = lrp_attention(q, k, v, mode=mode, key_padding_mask=mask, softcap=softcap, backend=backend)
        return out, [q, k, v]
    return build


def _norm_glu(backend):
    def build():
        x = torch.randn(2, 5, 12, requires_grad=True)
        w = torch.randn(12)
        h = lrp_layer_norm(lrp_rms_norm(x, w, backend=backend), w, torch.randn(12), backend=backend)
        gate, up = h[..., :6], h[..., 6:]
        out = lrp_activation(lrp_glu(gate, up, "silu", backend=backend), "gelu_tanh", backend=backend)
        return out, [x]
    return build


def _elementwise():
    x, w = torch.randn(3, 8, requires_grad=True), torch.randn(1, 8, requires_grad=True)
    return lrp_softcap(lrp_uniform_product(x, w), 2.0), [x, w]


def _gamma(signed):
    def build():
        img = torch.randn(2, 3, 6, 6, requires_grad=True)
        y = lrp_gamma_conv2d(img, torch.randn(4, 3, 3, 3), torch.randn(4), padding=1, signed=signed)
        out = lrp_gamma_linear(y.flatten(1), torch.randn(10, 144), torch.randn(10), signed=signed)
        return out, [img]
    return build


OPS = {
    **{f"attention-{be}-{mode}": _attention(be, mode) for be in ("torch", "triton", "sdpa")
       for mode in ("attnlrp", "cp-lrp", "gradient")},
    "attention-torch-softcap": _attention("torch", "attnlrp", softcap=5.0),
    "attention-triton-softcap": _attention("triton", "attnlrp", softcap=5.0),
    "norms-glu-torch": _norm_glu("torch"), "norms-glu-triton": _norm_glu("triton"),
    "product-softcap": _elementwise, "gamma": _gamma(False), "gamma-signed": _gamma(True),
}


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_op_backward_under_vmap_equals_separate_passes(name, k):
    out, inputs = OPS[name]()
    scores = torch.einsum("...,p...->p", out, torch.randn(k, *out.shape))  # K scores of the output
    batched = core.batched_grads(scores, inputs, range(k), retain_graph=True)
    expected = sequential_grads(scores, inputs, range(k))
    for got, want in zip(batched, expected):
        assert got.shape == (k, *want.shape[1:])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert any(g.abs().max() > 0 for g in batched)


def test_a_vmap_over_the_ops_inputs_is_refused_clearly():
    x, w = torch.randn(3, 4, 8), torch.randn(8)
    with pytest.raises(NotImplementedError, match="lrp_rms_norm: torch.func.vmap over the op's inputs is not "
                                                  "supported; pass the samples as one batch"):
        torch.func.vmap(lambda t: lrp_rms_norm(t, w, backend="torch"))(x)


# ------------------------------------------------------------------------------------------------
# attribute with several positions: batched = one call per position = the explicit reference
# ------------------------------------------------------------------------------------------------
DECODER_CASES = [("llama", "auto", "attnlrp"), ("llama", "torch", "cp-lrp"), ("llama", "triton", "gradient"),
                 ("gemma2", "torch", "attnlrp"), ("gemma2", "triton", "attnlrp"), ("gpt2", "auto", "attnlrp"),
                 ("mixtral", "auto", "attnlrp"), ("qwen2", "sdpa", "gradient")]


def several_targets(b, k, contrast):
    targets = [torch.randint(0, 101, (b,)) for _ in range(k)]
    targets[0] = None  # the model's own prediction at the first position
    contrasts = [torch.randint(0, 101, (b,)) for _ in range(k)] if contrast else None
    return targets, contrasts


@pytest.mark.parametrize("family, backend, mode", DECODER_CASES)
def test_several_positions_equal_single_calls_and_the_reference(family, backend, mode):
    entry = Decoder(family)
    model = entry.build()
    inputs = entry.inputs(batch=2, size=13, pad=4)  # the last row padded at the end
    positions = [-1, 2, -4]
    targets, contrasts = several_targets(2, 3, contrast=family != "mixtral")
    kw = dict(mode=mode, backend=backend)
    multi = lrp_triton.attribute(model, **inputs, position=positions, target=targets, contrast=contrasts, **kw)
    assert multi.relevance.shape == (2, 3, 13)
    case = next(c for c in entry.cases if c.dtype == torch.float32)
    mask = inputs["attention_mask"]
    for j, p in enumerate(positions):
        request = dict(position=p, target=multi.target[:, j])
        if contrasts is not None:
            request["contrast"] = contrasts[j]
        single = lrp_triton.attribute(model, **inputs, **request, **kw)
        for name in entry.fields:
            torch.testing.assert_close(getattr(multi, name)[:, j], getattr(single, name), rtol=1e-5, atol=1e-6)
        if mode == "gradient":  # Input x Gradient of the untouched model
            assert_rel_close(multi.relevance[:, j], input_x_gradient(entry, model, inputs, request), 1e-4,
                             f"input x gradient at position {p}")
            continue
        ref = entry.reference(model, inputs, single, type(case)(mode=mode), request)
        assert (ref.position == padded_index(mask, p)).all()
        for name in entry.fields:
            assert_rel_close(getattr(multi, name)[:, j], ref.fields[name], 1e-4, f"{name} at position {p}")


def input_x_gradient(entry, model, inputs, request):
    """sum over hidden of x * d(score)/dx, the explained score of `request` on the unapplied model (float64)."""
    m64 = copy.deepcopy(model).double()
    x, kwargs = entry.leaf(m64, inputs)
    logits = m64(**kwargs).logits
    rows = torch.arange(len(logits))
    index = padded_index(inputs["attention_mask"], request["position"])
    score = logits[rows, index, request["target"]]
    if "contrast" in request:
        score = score - logits[rows, index, request["contrast"]]
    score.sum().backward()
    return summed(x * x.grad, -1)


SWEEP = [pytest.param(e, id=e.name) for e in ZOO if type(e).__name__ in ("Decoder", "T5", "Bart")]


@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("entry", SWEEP)
def test_every_decoder_and_seq2seq_family_explains_several_positions_in_one_pass(entry, checkpoint, monkeypatch):
    """Every op of every family batches over K streams (checkpoint=True: the forward is recomputed
    inside the batched backward); equal to one backward pass per position."""
    model = entry.build()
    inputs = entry.inputs(batch=2, size=entry.cases[0].size)
    batched = entry.attribute(model, inputs, position=[-1, 1, -2], checkpoint=checkpoint)
    monkeypatch.setattr(core, "SCORES_PER_BACKWARD", 1)
    separate = entry.attribute(model, inputs, position=[-1, 1, -2], checkpoint=checkpoint)
    for name in entry.fields:
        torch.testing.assert_close(getattr(batched, name), getattr(separate, name), rtol=1e-5, atol=1e-6)
    assert batched.relevance.shape[1] == 3 and batched.relevance.abs().max() > 0


def test_scores_go_through_the_backward_a_chunk_at_a_time(monkeypatch):
    model = Decoder("llama").build()
    ids = torch.randint(0, 101, (2, 11))
    positions = [-1, -2, -3, 4, 5]
    calls, events = [], []
    plain = core.batched_grads
    monkeypatch.setattr(core, "batched_grads", lambda s, t, c, **kw: calls.append(len(c)) or plain(s, t, c, **kw))
    one_pass = lrp_triton.attribute(model, ids, position=positions, progress=lambda d, t: events.append((d, t)))
    assert calls == [5] and events == [(j, 5) for j in range(1, 6)]
    calls.clear()
    monkeypatch.setattr(core, "SCORES_PER_BACKWARD", 2)
    chunked = lrp_triton.attribute(model, ids, position=positions)
    assert calls == [2, 2, 1]
    torch.testing.assert_close(chunked.relevance, one_pass.relevance, rtol=1e-5, atol=1e-6)


def test_the_chunk_is_capped_by_the_gradient_memory(monkeypatch):
    monkeypatch.setattr(core, "STREAM_ELEMENTS", 3 * 2 * 11 * 64)  # three streams of the [2, 11, 64] embeddings
    calls = []
    plain = core.batched_grads
    monkeypatch.setattr(core, "batched_grads", lambda s, t, c, **kw: calls.append(len(c)) or plain(s, t, c, **kw))
    lrp_triton.attribute(Decoder("llama").build(), torch.randint(0, 101, (2, 11)), position=[-1, -2, -3, 4, 5])
    assert calls == [3, 2]
    assert core.scores_per_pass([torch.empty(10 ** 9, device="meta")]) == 1


@pytest.mark.parametrize("chunk", [0, -2, 1.5, True])
def test_a_bad_chunk_size_is_refused(chunk):
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="scores per backward pass must be a positive int"):
        core.one_backward_per_score((x * 2)[None], [x], dict, chunk=chunk)


def test_latent_and_checkpoint_take_the_batched_route():
    model = Decoder("mistral").build()
    ids = torch.randint(0, 101, (2, 12))
    positions = [-1, 3, 7]
    multi = lrp_triton.attribute(model, ids, position=positions, latent=True)
    for j, p in enumerate(positions):
        single = lrp_triton.attribute(model, ids, position=p, latent=True)
        torch.testing.assert_close(multi.relevance[:, j], single.relevance, rtol=1e-5, atol=1e-6)
        for key in ("residual", "heads", "neurons"):
            for got, want in zip(multi.latent[key], single.latent[key]):
                torch.testing.assert_close(got[:, j], want, rtol=1e-5, atol=1e-6)
    checkpointed = lrp_triton.attribute(model, ids, position=positions, checkpoint=True, backend="torch")
    torch.testing.assert_close(checkpointed.relevance, multi.relevance, rtol=1e-5, atol=1e-6)


def test_masked_lm_positions_equal_the_reference():
    model = tiny("bert-mlm")
    ids = torch.randint(0, 61, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    positions, targets = [1, -2, 4], [None, 7, torch.tensor([3, 5])]
    multi = lrp_triton.attribute(model, input_ids=ids, attention_mask=mask, position=positions, target=targets)
    for j, p in enumerate(positions):
        ref = bert_reference(model, ids, mask, target=multi.target[:, j], position=padded_index(mask, p))
        assert_rel_close(multi.relevance[:, j], ref["word"], 1e-4, f"relevance at position {p}")
        assert_rel_close(multi.position_relevance[:, j], ref["pos"], 1e-4, f"position relevance at {p}")


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_t5_decoder_positions_equal_the_reference(backend):
    entry = T5("flan")
    model = entry.build()
    inputs = entry.inputs(batch=2, size=(15, 5), pad=4)
    positions = [-1, 1, 3]
    targets, contrasts = several_targets(2, 3, contrast=True)
    multi = lrp_triton.attribute(model, **inputs, position=positions, target=targets, contrast=contrasts,
                                 backend=backend)
    case = entry.cases[0]
    for j, p in enumerate(positions):
        request = dict(position=p, target=multi.target[:, j], contrast=contrasts[j])
        ref = entry.reference(model, inputs, multi, case, request)
        for name in entry.fields:
            assert_rel_close(getattr(multi, name)[:, j], ref.fields[name], 1e-4, f"{name} at position {p}")
