"""Flan-T5 / T5: in-kernel relative bias, forward equality and relevance against the explicit reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

import lrp_triton
from lrp_triton.modules.t5_attention import LRPT5Attention
from lrp_triton.ops import lrp_attention
from reference_attention import dense_relative_bias
from reference_t5 import t5_reference
from scaled_close import assert_rel_close, summed

VARIANTS = {  # Flan-T5 (T5 v1.1): gated GELU-tanh, no output rescaling; T5 v1.0: ReLU, rescaled tied head
    "flan": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
}


def tiny_t5(variant="flan"):
    cfg = transformers.T5Config(vocab_size=101, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=2,
                                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                decoder_start_token_id=0, pad_token_id=0, **VARIANTS[variant])
    model = transformers.T5ForConditionalGeneration(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(0.1 * torch.randn_like(p) + 1.0)
            elif "shared" in name or "relative" in name or "lm_head" in name:
                p.copy_(torch.randn_like(p))
            elif name.endswith(".q.weight"):  # T5's own init: no 1/sqrt(d) in attention, so q is small
                p.copy_(torch.randn_like(p) / (p.shape[-1] * cfg.d_kv) ** 0.5 * 2.0)
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model.float().eval()




def inputs(batch=2, n=29, n_dec=7, pad_from=20):
    ids = torch.randint(1, 101, (batch, n))
    dec = torch.randint(1, 101, (batch, n_dec))
    mask = torch.ones(batch, n, dtype=torch.long)
    if batch > 1 and pad_from is not None:
        mask[1, pad_from:] = 0
    return ids, dec, mask


@pytest.mark.parametrize("decoder", (False, True))
@pytest.mark.parametrize("n, m", ((1, 1), (7, 7), (40, 40), (5, 33), (60, 60)))
def test_compact_bias_equals_transformers_bias(decoder, n, m):
    cfg = transformers.T5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=12,
                                relative_attention_max_distance=24, is_decoder=decoder)
    hf = transformers.models.t5.modeling_t5.T5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)
    torch.nn.init.normal_(hf.relative_attention_bias.weight)
    ours = LRPT5Attention(hf)
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
    rel = LRPT5Attention(hf).relative_bias(n, n, torch.device("cpu")).detach()
    out = lrp_attention(q, k, v, causal=False, scale=1.0, relative_bias=rel, backend=backend)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=hf.compute_bias(n, n).detach(), scale=1.0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", tuple(VARIANTS))
def test_applied_forward_equals_unapplied(variant):
    model = tiny_t5(variant)
    ids, dec, mask = inputs()
    expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    with lrp_triton.apply(model):
        actual = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits
    assert_rel_close(actual, expected, 1e-5)


def _check_against_reference(model, result, ids, dec, mask, positions, target, contrast=None, mode="attnlrp"):
    r_enc, r_dec, score, z = t5_reference(model, ids, mask, dec, positions, target, contrast, mode)
    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert_rel_close(z.float(), logits[torch.arange(len(ids)), positions], 1e-5)
    # the score is target logit - contrast logit: its float32 rounding scales with the logits, not with it
    err, scale = (result.logit.double() - score).abs().max().item(), z.abs().max().item()
    assert err <= 1e-5 * scale, f"score: max error {err:.2e}, max |logit| {scale:.2e}"
    for actual, expected, what in ((result.relevance, r_enc, "encoder"), (result.decoder_relevance, r_dec, "decoder")):
        assert_rel_close(actual, expected, 5e-5, f"{what} relevance")
    return r_enc, r_dec


@pytest.mark.parametrize("variant", tuple(VARIANTS))
def test_relevance_matches_explicit_reference(variant, capsys):
    model = tiny_t5(variant)
    ids, dec, mask = inputs()
    target, contrast = torch.randint(0, 101, (2,)), torch.randint(0, 101, (2,))
    result = lrp_triton.attribute(model, ids, attention_mask=mask, decoder_input_ids=dec, position=4,
                                  target=target, contrast=contrast)
    assert result.relevance.shape == (2, 29) and result.decoder_relevance.shape == (2, 7)
    assert (result.relevance[1, 20:] == 0).all()  # encoder padding gets nothing
    assert (result.decoder_relevance[:, 5:] == 0).all()  # causal decoder
    _check_against_reference(model, result, ids, dec, mask, torch.tensor([4, 4]), target, contrast)
    total = result.relevance.sum(-1) + result.decoder_relevance.sum(-1)
    with capsys.disabled():
        print(f"\n[t5 {variant}] sum(relevance) / score = {(total / result.logit).tolist()}")


@pytest.mark.parametrize("variant", tuple(VARIANTS))
def test_float64_relevance_equals_the_reference_to_float64_rounding(variant):
    """In float64 (the PyTorch path) the relevance equals the explicit walker's to float64 rounding."""
    model = tiny_t5(variant).double()
    ids, dec, mask = inputs()
    target, contrast = torch.randint(0, 101, (2,)), torch.randint(0, 101, (2,))
    result = lrp_triton.attribute(model, ids, attention_mask=mask, decoder_input_ids=dec, position=4,
                                  target=target, contrast=contrast)
    r_enc, r_dec, score, _ = t5_reference(model, ids, mask, dec, torch.tensor([4, 4]), target, contrast, "attnlrp")
    assert result.relevance.dtype == result.decoder_relevance.dtype == torch.float64
    assert_rel_close(result.logit, score, 1e-12, "score")
    assert_rel_close(result.relevance, r_enc, 1e-12, "encoder relevance")
    assert_rel_close(result.decoder_relevance, r_dec, 1e-12, "decoder relevance")


def test_triton_backend_and_cp_lrp_match_reference():
    model = tiny_t5("flan")
    ids, dec, mask = inputs(batch=1, n=23, n_dec=5, pad_from=None)
    result = lrp_triton.attribute(model, ids, decoder_input_ids=dec, backend="triton")
    _check_against_reference(model, result, ids, dec, mask, torch.tensor([4]), result.target)
    cp = lrp_triton.attribute(model, ids, decoder_input_ids=dec, mode="cp-lrp")
    _check_against_reference(model, cp, ids, dec, mask, torch.tensor([4]), cp.target, mode="cp-lrp")


def test_default_decoder_input_is_the_start_token():
    model = tiny_t5("flan")
    ids, _, mask = inputs()
    result = lrp_triton.attribute(model, ids, attention_mask=mask)
    assert result.decoder_relevance.shape == (2, 1)
    start = torch.zeros(2, 1, dtype=torch.long)
    expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=start).logits[:, 0].argmax(-1)
    assert torch.equal(result.target, expected)


def test_padded_batch_equals_unbatched_rows():
    model = tiny_t5("flan")
    ids, dec, mask = inputs()
    batched = lrp_triton.attribute(model, ids, attention_mask=mask, decoder_input_ids=dec)
    for i in range(2):
        real = mask[i].bool()
        single = lrp_triton.attribute(model, ids[i][real][None], decoder_input_ids=dec[i][None])
        torch.testing.assert_close(batched.relevance[i][real], single.relevance[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batched.decoder_relevance[i], single.decoder_relevance[0], atol=1e-5, rtol=1e-4)


def test_remove_restores_save_load_and_gradient_mode(tmp_path):
    model = tiny_t5("flan")
    ids, dec, mask = inputs()
    modules = dict(model.named_modules())
    before = lrp_triton.attribute(model, ids, decoder_input_ids=dec, mode="gradient")
    assert dict(model.named_modules()) == modules
    # gradient mode is Input x Gradient of the untouched model
    emb = model.get_input_embeddings()(ids).detach().requires_grad_()
    logits = model(inputs_embeds=emb, decoder_input_ids=dec).logits[:, -1]
    logits.gather(-1, before.target[:, None]).sum().backward()
    assert_rel_close(before.relevance, summed(emb * emb.grad, -1), 1e-5)
    model.save_pretrained(tmp_path)
    loaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    a = lrp_triton.attribute(model, ids, decoder_input_ids=dec)
    b = lrp_triton.attribute(loaded, ids, decoder_input_ids=dec)
    torch.testing.assert_close(b.relevance, a.relevance)


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
