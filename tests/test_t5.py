"""Flan-T5 / T5, mT5, umT5 beyond the model contract (test_model_contract.py runs forward, relevance
against the explicit reference, gradient mode, isolation, save / load and padding on every variant):
the compact in-kernel relative bias (umT5's in every layer, by its own bucket method), the
explained logit being the model's own (mT5 never rescales, umT5 as its config says), the default
decoder input, and O(N) memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

import lrp_triton
from lrp_triton.models import ADAPTERS
from lrp_triton.modules.t5_attention import LRPT5Attention, LRPUMT5Attention
from lrp_triton.ops import lrp_attention
from model_zoo import t5_inputs as inputs  # test_cli imports `inputs` and `tiny_t5` from here too
from model_zoo import tiny_t5
from reference_attention import dense_relative_bias


@pytest.mark.parametrize("decoder", (False, True))
@pytest.mark.parametrize("n, m", ((1, 1), (7, 7), (40, 40), (5, 33), (60, 60)))
def test_compact_bias_equals_transformers_bias(decoder, n, m):
    cfg = transformers.T5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=12,
                                relative_attention_max_distance=24, is_decoder=decoder)
    hf = transformers.models.t5.modeling_t5.T5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)
    torch.nn.init.normal_(hf.relative_attention_bias.weight)
    ours = LRPT5Attention(hf, mode="attnlrp", backend="torch")
    expected = hf.compute_bias(n, m, past_seen_tokens=m - n)
    actual = dense_relative_bias(ours.relative_bias(n, m, torch.device("cpu")), n, m)
    torch.testing.assert_close(actual.float(), expected, atol=0, rtol=0)


@pytest.mark.parametrize("backend", ("triton", "torch"))
def test_kernel_with_compact_bias_equals_sdpa_with_dense_bias(backend):
    cfg = transformers.T5Config(d_model=64, d_kv=16, num_heads=4, relative_attention_num_buckets=16,
                                relative_attention_max_distance=32, is_decoder=False)
    hf = transformers.models.t5.modeling_t5.T5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)
    torch.nn.init.normal_(hf.relative_attention_bias.weight)
    n = 45
    q, k, v = (torch.randn(2, 4, n, 16) for _ in range(3))
    rel = LRPT5Attention(hf, mode="attnlrp", backend="torch").relative_bias(n, n, torch.device("cpu")).detach()
    out = lrp_attention(q, k, v, causal=False, scale=1.0, relative_bias=rel, backend=backend)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=hf.compute_bias(n, n).detach(), scale=1.0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_default_decoder_input_is_the_start_token():
    model = tiny_t5("flan")
    ids, _, mask = inputs()
    result = lrp_triton.attribute(model, ids, attention_mask=mask)
    assert result.decoder_relevance.shape == (2, 1)
    start = torch.zeros(2, 1, dtype=torch.long)
    expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=start).logits[:, 0].argmax(-1)
    assert torch.equal(result.target, expected)


def test_no_quadratic_tensor_is_saved_for_backward():
    """The relative bias stays O(N): no tensor saved for the backward has N x N entries per head."""
    model = tiny_t5("flan")
    n = 300
    ids = torch.randint(1, 101, (1, n))
    largest = []

    def pack(t):
        largest.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lrp_triton.attribute(model, ids, decoder_input_ids=torch.randint(1, 101, (1, 3)))
    assert max(largest) < n * n, f"a saved tensor has {max(largest)} entries (N^2 = {n * n})"


@pytest.mark.parametrize("decoder", (False, True))
def test_umt5_compact_bias_of_every_layer_equals_transformers_bias(decoder):
    """umT5: each self-attention layer has its own table, bucketed by UMT5Attention's own method."""
    cfg = transformers.UMT5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=12,
                                  relative_attention_max_distance=24, is_decoder=decoder)
    cls = transformers.models.umt5.modeling_umt5.UMT5Attention
    layers = [cls(cfg, has_relative_attention_bias=True, layer_idx=i) for i in range(2)]
    for layer in layers:
        torch.nn.init.normal_(layer.relative_attention_bias.weight)
    for n in (1, 9, 40):
        for layer in layers:
            ours = LRPUMT5Attention(layer, mode="attnlrp", backend="torch").relative_bias(n, n, torch.device("cpu"))
            torch.testing.assert_close(dense_relative_bias(ours, n, n).float(), layer.compute_bias(n, n),
                                       atol=0, rtol=0)


@pytest.mark.parametrize("variant", ("mt5", "umt5", "flan", "v1.0"))
def test_explained_logit_is_the_models_own(variant):
    """The explained logit is the model's own at the explained position. mT5 ties its embeddings
    (MT5Config forces it) but never rescales: T5's rule read off the tied embeddings would scale its
    logits by d_model^-0.5 = 1/8 here. umT5 rescales as its config's scale_decoder_outputs says."""
    model = tiny_t5(variant)
    ids, dec, mask = inputs(2, 13, 6, pad_from=9)
    target = torch.randint(0, 101, (2,))
    result = lrp_triton.attribute(model, ids, attention_mask=mask, decoder_input_ids=dec, position=3, target=target)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits
    expected = logits[torch.arange(2), 3, target]
    torch.testing.assert_close(result.logit, expected, atol=1e-5, rtol=1e-5)
    if variant == "mt5":
        assert model.config.tie_word_embeddings and ADAPTERS["t5"].output_scale(model.config) == 64 ** -0.5
        assert (expected * 64 ** -0.5 - expected).abs().max() > 1e-2  # the factor would show
    if variant == "umt5":
        assert model.config.scale_decoder_outputs and ADAPTERS["umt5"].output_scale(model.config) == 64 ** -0.5
