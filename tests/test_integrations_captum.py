"""Captum integration (lrp_triton.integrations.captum) and plain Captum code on an applied model:
the numbers of lrp_triton.attribute. Skipped without the extra (`pip install 'lrp_triton[captum]'`;
CI installs it)."""

from __future__ import annotations

import random

import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

import lrp_triton  # noqa: E402
from frontend_models import VOCAB, WORDS, causal_lm, word_tokenizer  # noqa: E402
from lrp_triton.apply import active_handle  # noqa: E402
from lrp_triton.integrations.captum import AttnLRP, LLMAttnLRP  # noqa: E402
from scaled_close import assert_rel_close  # noqa: E402

TOK = word_tokenizer()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_attnlrp_follows_captum_conventions_and_equals_attribute(family):
    model = causal_lm(family, seed=20 + len(family))
    before = {name: type(m) for name, m in model.named_modules()}
    ids = torch.randint(4, VOCAB, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in row 1
    target = [5, 17]
    want = lrp_triton.attribute(model, ids, attention_mask=mask, target=target).relevance
    explainer = AttnLRP(model)
    got = explainer.attribute(ids, target=target, additional_forward_args=(mask,))
    assert got.shape == ids.shape
    assert_rel_close(got, want, 1e-5)
    # embeddings in, Captum-shaped out: [B, N, hidden], summing to the token relevance
    embeds = model.get_input_embeddings()(ids).detach()
    by_element = explainer.attribute(embeds, target=torch.tensor(target), additional_forward_args=(mask,))
    assert by_element.shape == embeds.shape
    assert_rel_close(by_element.sum(-1), want, 1e-5)
    assert {name: type(m) for name, m in model.named_modules()} == before and active_handle(model) is None
    with pytest.raises(ValueError, match="give target"):
        explainer.attribute(ids)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_llm_attnlrp_explains_each_target_token_from_one_forward_pass(family):
    rng = random.Random(f"captum-{family}")
    model = causal_lm(family, seed=30 + len(family))
    prompt, target = words(rng, 7), " " + words(rng, 3)
    inp = captum_attr.TextTokenInput(prompt, TOK)
    calls = []
    hook = getattr(model, model.base_model_prefix).register_forward_pre_hook(lambda *a: calls.append(1))
    result = LLMAttnLRP(model, TOK).attribute(inp, target=target)
    hook.remove()
    assert len(calls) == 1 and isinstance(result, captum_attr.LLMAttributionResult)
    ids = TOK(prompt + target, return_tensors="pt").input_ids
    positions = [6, 7, 8]
    want = lrp_triton.attribute(model, ids[:, :-1], position=positions, target=ids[0, 7:].tolist()).relevance[0, :, :7]
    assert result.token_attr.shape == (3, 7) and result.output_tokens == target.split()
    assert_rel_close(result.token_attr, want, 1e-5)
    assert_rel_close(result.seq_attr, want.sum(0), 1e-5)
    fig, _ = result.plot_token_attr(show=False)  # Captum's own plotting works on it
    assert fig is not None


def test_plain_captum_llm_gradient_attribution_on_an_applied_model_is_attnlrp_of_the_log_prob():
    """LayerGradientXActivation + LLMGradientAttribution, unchanged, under `with lrp_triton.apply(model)`:
    Captum explains log p (T forward passes); that is LLMAttnLRP(score="log_prob"), and, term by term,
    R(z_t) - sum_j p_j R(z_j) from lrp_triton.attribute over the whole vocabulary."""
    rng = random.Random("captum-plain")
    model = causal_lm("llama", seed=41)
    prompt, target = words(rng, 6), " " + words(rng, 2)
    inp = captum_attr.TextTokenInput(prompt, TOK)
    with lrp_triton.apply(model):
        plain = captum_attr.LLMGradientAttribution(
            captum_attr.LayerGradientXActivation(model, model.get_input_embeddings()), TOK).attribute(inp, target=target)
    ours = LLMAttnLRP(model, TOK, score="log_prob").attribute(inp, target=target)
    assert_rel_close(plain.token_attr, ours.token_attr, 1e-5)
    ids = TOK(prompt + target, return_tensors="pt").input_ids
    vocab = list(range(VOCAB))
    for k, position in enumerate([5, 6]):
        every = lrp_triton.attribute(model, ids[:, :position + 1], position=[-1] * VOCAB, target=vocab)
        p = every.logit[0].softmax(-1)
        want = every.relevance[0, ids[0, position + 1]] - (p[:, None] * every.relevance[0]).sum(0)
        assert_rel_close(ours.token_attr[k], want[:6], 1e-4)
    logit_route = LLMAttnLRP(model, TOK).attribute(inp, target=target)
    assert (logit_route.token_attr - ours.token_attr).abs().max() > 1e-3  # a different score


def test_llm_attnlrp_takes_a_template_input_and_generates_a_missing_target():
    """TextTemplateInput: a value's relevance is the sum over its tokens (template words are no feature);
    target=None explains the model's own greedy continuation."""
    model = causal_lm("gemma2", seed=61)
    inp = captum_attr.TextTemplateInput("the {} sat on {} and", values=["big red cat", "a mat"])
    explainer = LLMAttnLRP(model, TOK)
    result = explainer.attribute(inp, target=" it saw")
    ids = TOK("the big red cat sat on a mat and it saw", return_tensors="pt").input_ids
    every = lrp_triton.attribute(model, ids[:, :-1], position=[8, 9], target=ids[0, 9:].tolist()).relevance[0]
    want = torch.stack([every[:, 1:4].sum(-1), every[:, 6:8].sum(-1)], dim=1)
    assert result.input_tokens == ["big red cat", "a mat"] and result.token_attr.shape == (2, 2)
    assert_rel_close(result.token_attr, want, 1e-5)
    generated = explainer.attribute(captum_attr.TextTokenInput("the cat sat on", TOK),
                                    gen_args={"max_new_tokens": 3, "do_sample": False})
    continuation = model.generate(TOK("the cat sat on", return_tensors="pt").input_ids, max_new_tokens=3,
                                  do_sample=False)[0, 4:]
    assert generated.output_tokens == TOK.convert_ids_to_tokens(continuation.tolist())
