"""Flan-T5 / T5 beyond the model contract (test_model_contract.py runs forward, relevance against the
explicit reference, gradient mode, isolation, save / load and padding on both variants): the
compact in-kernel relative bias, the default decoder input, and O(N) memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

import lrp_triton
from lrp_triton.modules.t5_attention import LRPT5Attention
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
