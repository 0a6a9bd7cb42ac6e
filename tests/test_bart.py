"""BART / mBART / Marian beyond the model contract (test_model_contract.py runs forward, relevance
against the explicit reference, gradient mode, isolation, save / load and padding on each): the
explained logit is the model's own (final_logits_bias added, each stack's embedding scaling as
the model applies it), and checkpointing reads the layer stacks from the adapter."""

from __future__ import annotations

import pytest
import torch

import lrp_triton
from lrp_triton.models import ADAPTERS
from model_zoo import BART_FAMILIES, t5_inputs, tiny_bart


@pytest.mark.parametrize("name", list(BART_FAMILIES))
def test_explained_logit_is_the_models_own(name):
    model = tiny_bart(name)
    assert model.final_logits_bias.abs().max() > 0.1  # the bias is part of the explained logit
    ids, dec, mask = t5_inputs(2, 13, 6, pad_from=9)
    target = torch.randint(0, 101, (2,))
    result = lrp_triton.attribute(model, ids, attention_mask=mask, decoder_input_ids=dec, position=2, target=target)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(result.logit, logits[torch.arange(2), 2, target], atol=1e-5, rtol=1e-5)
    assert (result.relevance[~mask.bool()] == 0).all() and (result.decoder_relevance[:, 3:] == 0).all()


@pytest.mark.parametrize("name", ["bart", "marian"])
def test_checkpointing_reads_the_adapters_stacks(name):
    model = tiny_bart(name)
    layers = ADAPTERS[name].layers(model)
    assert len(layers) == 4 and layers[0] is model.model.encoder.layers[0] and layers[2] is model.model.decoder.layers[0]
    ids, dec, mask = t5_inputs(1, 11, 4, pad_from=None)
    plain = lrp_triton.attribute(model, ids, attention_mask=mask, decoder_input_ids=dec)
    ckpt = lrp_triton.attribute(model, ids, attention_mask=mask, decoder_input_ids=dec, checkpoint=True)
    torch.testing.assert_close(ckpt.relevance, plain.relevance, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ckpt.decoder_relevance, plain.decoder_relevance, atol=1e-6, rtol=1e-5)
