"""Decoder-only behaviour beyond the model contract (test_model_contract.py runs forward, relevance
against the explicit references, gradient mode, isolation, save / load and padding on every family):
several positions, latent relevance, checkpointing, training state, an applied model's handle, errors."""

from __future__ import annotations

import pytest
import torch

import lrp_triton
from model_zoo import tiny_model


def test_several_positions_share_one_forward_and_match_single_calls():
    model = tiny_model("llama")
    ids = torch.randint(0, 101, (2, 12))
    multi = lrp_triton.attribute(model, ids, position=[-1, 5], target=[None, torch.tensor([3, 4])])
    assert multi.relevance.shape == (2, 2, 12) and multi.target.shape == (2, 2)
    assert multi.target[:, 1].tolist() == [3, 4]
    first = lrp_triton.attribute(model, ids, position=-1)
    second = lrp_triton.attribute(model, ids, position=5, target=torch.tensor([3, 4]))
    torch.testing.assert_close(multi.relevance[:, 0], first.relevance)
    torch.testing.assert_close(multi.relevance[:, 1], second.relevance)


def test_latent_relevance_shapes_and_consistency():
    model = tiny_model("llama")
    ids = torch.randint(0, 101, (2, 10))
    result = lrp_triton.attribute(model, ids, latent=True)
    lat = result.latent
    assert len(lat["residual"]) == 2 and lat["residual"][0].shape == (2, 10)
    assert lat["heads"][1].shape == (2, 4) and lat["neurons"][0].shape == (2, 96)
    # the residual stream entering layer 0 is the (unscaled) embedding: same relevance
    torch.testing.assert_close(lat["residual"][0], result.relevance, atol=1e-6, rtol=1e-5)


def test_checkpoint_gives_identical_relevance():
    model = tiny_model("mistral")
    ids = torch.randint(0, 101, (1, 17))
    plain = lrp_triton.attribute(model, ids)
    ckpt = lrp_triton.attribute(model, ids, checkpoint=True)
    torch.testing.assert_close(ckpt.relevance, plain.relevance, atol=1e-6, rtol=1e-5)
    assert "forward" not in vars(model.model.layers[0])  # the checkpoint wrapper is gone


def test_attribute_restores_training_mode_and_requires_grad():
    model = tiny_model("llama").train()
    model.lm_head.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    lrp_triton.attribute(model, torch.randint(0, 101, (1, 6)))
    assert model.training
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}


def test_attribute_on_an_applied_model_keeps_the_handle():
    model = tiny_model("qwen2")
    ids = torch.randint(0, 101, (1, 8))
    with lrp_triton.apply(model) as handle:
        inside = lrp_triton.attribute(model, ids)
        assert handle.active
        with pytest.raises(ValueError, match="mode 'attnlrp'"):
            lrp_triton.attribute(model, ids, mode="cp-lrp")
    torch.testing.assert_close(inside.relevance, lrp_triton.attribute(model, ids).relevance)


def test_errors():
    model = tiny_model("llama")
    ids = torch.randint(0, 101, (2, 6))
    with pytest.raises(IndexError, match="out of range"):
        lrp_triton.attribute(model, ids, position=6)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lrp_triton.attribute(model, ids, target=101)
    with pytest.raises(ValueError, match="does not match"):
        lrp_triton.attribute(model, ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="exactly one"):
        lrp_triton.attribute(model)
    with pytest.raises(ValueError, match="unknown mode"):
        lrp_triton.apply(model, mode="lrp")
    with pytest.raises(ValueError, match="exceeds the 256 tokens this model takes"):
        lrp_triton.attribute(model, torch.randint(0, 101, (1, 300)))
    with lrp_triton.apply(model):
        with pytest.raises(RuntimeError, match="already called"):
            lrp_triton.apply(model)
    import transformers
    albert = transformers.AlbertModel(transformers.AlbertConfig(
        vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=40))
    with pytest.raises(NotImplementedError, match="'albert'.*supported model types: .*gemma2"):
        lrp_triton.apply(albert)


def test_inputs_embeds_give_the_same_relevance_as_ids():
    model = tiny_model("phi3")
    ids = torch.randint(0, 101, (1, 9))
    emb = model.get_input_embeddings()(ids).detach()
    torch.testing.assert_close(lrp_triton.attribute(model, inputs_embeds=emb).relevance,
                               lrp_triton.attribute(model, ids).relevance)
