"""attribute under the caller's grad modes: torch.no_grad and torch.inference_mode (issue: it crashed)."""

from __future__ import annotations

import pytest
import torch

import lrp_triton
from model_state import model_state
from model_zoo import t5_inputs, text_inputs, tiny, tiny_model, tiny_t5


def calls():
    """(name, model, attribute kwargs) for one model of each kind."""
    ids, mask, types = text_inputs(2, 9, pad_last=2)
    enc, dec, enc_mask = t5_inputs(2, 11, 3, pad_from=8)
    return [
        ("llama", tiny_model("llama"), dict(input_ids=torch.randint(0, 101, (2, 9)), position=[-1, -2])),
        ("bert-cls", tiny("bert-cls"), dict(input_ids=ids, attention_mask=mask, token_type_ids=types)),
        ("vit", tiny("vit"), dict(pixel_values=torch.randn(2, 3, 32, 32))),
        ("t5-flan", tiny_t5("flan"), dict(input_ids=enc, attention_mask=enc_mask, decoder_input_ids=dec)),
    ]


@pytest.mark.parametrize("index", range(4), ids=["llama", "bert-cls", "vit", "t5-flan"])
def test_no_grad_and_inference_mode_give_the_same_relevance(index):
    name, model, kwargs = calls()[index]
    expected = lrp_triton.attribute(model, **kwargs)
    before = model_state(model)
    with torch.no_grad():
        under_no_grad = lrp_triton.attribute(model, **kwargs)
        assert not torch.is_grad_enabled()  # the caller's mode is back after the call
    with torch.inference_mode():
        inference_inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        assert all(v.is_inference() for v in inference_inputs.values() if isinstance(v, torch.Tensor))
        under_inference = lrp_triton.attribute(model, **inference_inputs)
        assert torch.is_inference_mode_enabled()
    assert model_state(model) == before
    for result in (under_no_grad, under_inference):
        assert not result.relevance.is_inference() and not result.relevance.requires_grad
        torch.testing.assert_close(result.relevance, expected.relevance, rtol=0, atol=0)
        torch.testing.assert_close(result.logit, expected.logit, rtol=0, atol=0)


def test_a_model_built_under_inference_mode_is_refused_with_the_fix():
    with torch.inference_mode():
        model = tiny_model("llama")
    with pytest.raises(RuntimeError, match="created under torch.inference_mode.*outside inference_mode"):
        lrp_triton.attribute(model, torch.randint(0, 101, (1, 5)))
