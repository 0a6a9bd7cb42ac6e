"""Code written for LXT runs unchanged inside `with lrp_triton.apply(model):` (README, "Coming from
LXT"): x * x.grad at the input embeddings after a backward from the max logit is
lrp_triton.attribute's relevance; hooks on hidden states give the latent relevance h * h.grad; the
same for CP-LRP. No extra needed."""

from __future__ import annotations

import pytest
import torch

import lrp_triton
from frontend_models import VOCAB, causal_lm
from scaled_close import assert_rel_close


def lxt_style_relevance(model, input_ids, layers):
    """The LXT 2.x script's user code, as written for LXT (after its monkey-patch), plus hooks that
    keep the residual stream entering each layer."""
    for param in model.parameters():
        param.requires_grad = False
    hidden = []

    def keep(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        h.retain_grad()
        hidden.append(h)
    hooks = [layer.register_forward_pre_hook(keep, with_kwargs=True) for layer in layers]
    input_embeds = model.get_input_embeddings()(input_ids)
    output_logits = model(inputs_embeds=input_embeds.requires_grad_(), use_cache=False).logits
    max_logits, max_indices = torch.max(output_logits[0, -1, :], dim=-1)
    max_logits.backward()
    relevance = (input_embeds.grad * input_embeds).float().sum(-1).detach()[0]
    latent = [(h * h.grad).float().sum(-1).detach()[0] for h in hidden]
    for hook in hooks:
        hook.remove()
    return relevance, latent, int(max_indices)


@pytest.mark.parametrize("family, mode", [("llama", "attnlrp"), ("gpt2", "attnlrp"), ("llama", "cp-lrp")])
def test_lxt_user_code_on_an_applied_model_equals_attribute(family, mode):
    model = causal_lm(family, seed=50 + len(family) + len(mode))
    ids = torch.randint(4, VOCAB, (1, 11))
    layers = model.model.layers if family == "llama" else model.transformer.h
    with lrp_triton.apply(model, mode):
        relevance, latent, predicted = lxt_style_relevance(model, ids, layers)
    want = lrp_triton.attribute(model, ids, mode=mode, latent=True)
    assert predicted == int(want.target)
    assert_rel_close(relevance, want.relevance[0], 1e-5)
    assert len(latent) == len(want.latent["residual"]) == 2
    for got, expected in zip(latent, want.latent["residual"]):
        assert_rel_close(got, expected[0], 1e-5)
    # the same code on the plain model is Input x Gradient, not AttnLRP
    plain, _, _ = lxt_style_relevance(model, ids, layers)
    assert_rel_close(plain, lrp_triton.attribute(model, ids, mode="gradient").relevance[0], 1e-5)
    assert (plain - relevance).abs().max() > 1e-3 * relevance.abs().max()
