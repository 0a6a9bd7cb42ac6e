"""Decoder sequence-classification heads and the decoders' constant output factors.

- Every supported decoder family with a `*ForSequenceClassification` explains the class logit
  pooled at each row's last real token, equal to the model's own logit and, token by token, to the
  explicit float64 reference (the families of model_zoo.CLASSIFIERS also pass the whole contract).
- Pooling disagreements, a missing pad id and arguments that do not apply are clear errors.
- Granite's logits_scaling and Cohere's logit_scale are part of the explained logit: it equals the
  model's own, which the bare head on the final hidden state does not give.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import lrp_triton
from model_zoo import CLASSIFIERS, F64, F64_TOL, FAMILIES, Case, DecoderClassifier, pad_rows, tiny_classifier, tiny_model
from scaled_close import assert_rel_close

HEADS = transformers.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
WITH_HEAD = [f for f in FAMILIES if type(FAMILIES[f]()) in HEADS]


def eager_double(model):
    """The float64 copy the model's own forward runs in (HF's grouped experts take no float64)."""
    model = model.double()
    if getattr(model.config, "_experts_implementation", None) not in (None, "eager"):
        model.set_experts_implementation("eager")
    return model


def left_padded(lengths=(13, 8)):
    rows = [torch.randint(1, 101, (n,)) for n in lengths]
    ids, mask = pad_rows(rows, "left", 0)
    return {"input_ids": ids, "attention_mask": mask}


def test_the_sweep_covers_the_decoders_with_heads():
    assert {"llama", "qwen2", "gpt2", "gpt_neox", "exaone4", "olmo3"} <= set(WITH_HEAD)
    assert set(CLASSIFIERS) <= set(WITH_HEAD)
    assert not {"granite", "cohere", "cohere2", "ernie4_5"} & set(WITH_HEAD)  # transformers has no such head


@pytest.mark.parametrize("family", [f for f in WITH_HEAD if f not in CLASSIFIERS])
def test_classifier_matches_explicit_reference(family):
    entry = DecoderClassifier(family)
    model = eager_double(entry.build())
    inputs = left_padded()
    target = torch.randint(0, 3, (2,))
    result = lrp_triton.attribute(model, **inputs, target=target)
    ref = entry.reference(model, inputs, result, Case(dtype=F64), {"target": target})
    # positions counted over the real tokens, as attribute does (HF's default counts the left padding too)
    positions = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    own = model(**inputs, position_ids=positions).logits
    assert torch.equal(result.position, torch.tensor([12, 12]))  # left padding: the last token
    # HF's RMSNorms compute in float32 even in a float64 model (lrp_triton's and the reference's in float64)
    torch.testing.assert_close(result.logit, own.gather(-1, target[:, None])[:, 0], atol=1e-6, rtol=1e-6)
    tol = F64_TOL.get(family, 1e-12)  # float64 rounding, but for float32 steps inside the HF forward (Mixtral's router)
    assert_rel_close(result.logit, ref.score, tol, "score")
    assert (result.relevance[~inputs["attention_mask"]] == 0).all()
    assert_rel_close(result.relevance, ref.fields["relevance"], tol, f"{family} relevance")


def test_default_target_is_the_top_class_and_label_names():
    model = tiny_classifier("llama", num_labels=4)
    model.config.id2label = {0: "neg", 1: "neu", 2: "pos", 3: "other"}
    inputs = left_padded((9, 6))
    result = lrp_triton.attribute(model, **inputs)
    own = model(**inputs).logits
    assert torch.equal(result.target, own.argmax(-1))
    torch.testing.assert_close(result.logit, own.max(-1).values, atol=1e-5, rtol=1e-5)
    assert result.target_tokens == [model.config.id2label[t] for t in result.target.tolist()]


def test_inputs_embeds_left_padded_equal_ids():
    model = tiny_classifier("qwen2")
    inputs = left_padded((9, 6))
    by_ids = lrp_triton.attribute(model, **inputs, target=1)
    embeds = model.get_input_embeddings()(inputs["input_ids"]).detach()
    by_embeds = lrp_triton.attribute(model, inputs_embeds=embeds, attention_mask=inputs["attention_mask"], target=1)
    torch.testing.assert_close(by_embeds.relevance, by_ids.relevance)
    torch.testing.assert_close(by_embeds.logit, by_ids.logit)


def test_pooling_disagreements_and_bad_arguments_are_errors():
    model = tiny_classifier("llama")
    ids = torch.randint(1, 101, (2, 7))
    ids[1, -1] = 0  # a real token equal to the pad id: the model reads row 1 at token 5
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] at token\(s\) \[5\]"):
        lrp_triton.attribute(model, ids)
    embeds = model.get_input_embeddings()(ids).detach()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, -2:] = False  # right padding with embeddings: the model reads the last (padding) token
    with pytest.raises(ValueError, match="attention_mask's last real token"):
        lrp_triton.attribute(model, inputs_embeds=embeds, attention_mask=mask)
    ids[1, -1] = 3
    for kw, err in ((dict(position=-2), ValueError), (dict(contrast=1), ValueError), (dict(target=3), ValueError),
                    (dict(target=lambda out: out.logits[:, 0]), TypeError)):
        with pytest.raises(err):
            lrp_triton.attribute(model, ids, **kw)
    model.config.pad_token_id = None  # as transformers: one row at a time
    with pytest.raises(ValueError, match="pad_token_id is None"):
        lrp_triton.attribute(model, ids)
    one = lrp_triton.attribute(model, ids[:1], target=2)
    torch.testing.assert_close(one.logit, model(ids[:1]).logits[:, 2], atol=1e-5, rtol=1e-5)


def test_latent_and_checkpoint_on_a_classifier():
    model = tiny_classifier("olmo3")
    inputs = left_padded((9, 6))
    plain = lrp_triton.attribute(model, **inputs, target=0)
    result = lrp_triton.attribute(model, **inputs, target=0, latent=True)
    assert len(result.latent["residual"]) == model.config.num_hidden_layers
    torch.testing.assert_close(result.latent["residual"][0], plain.relevance, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lrp_triton.attribute(model, **inputs, target=0, checkpoint=True).relevance,
                               plain.relevance, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family,factor", [("granite", "logits_scaling"), ("cohere", "logit_scale"),
                                           ("cohere2", "logit_scale")])
def test_explained_logit_is_the_models_own_logit(family, factor):
    """The factor is away from 1 in the zoo, so the bare head's logit differs from the model's, and the
    explained one (target and contrast alike) is the model's."""
    model = tiny_model(family)
    assert getattr(model.config, factor) not in (None, 1.0)
    ids = torch.randint(0, 101, (2, 11))
    target, contrast = torch.tensor([3, 8]), torch.tensor([5, 5])
    result = lrp_triton.attribute(model, ids, target=target, contrast=contrast)
    with torch.no_grad():
        logits = model(ids).logits[:, -1]
        bare = model.lm_head(model.model(ids).last_hidden_state[:, -1])
    own = logits.gather(-1, target[:, None])[:, 0] - logits.gather(-1, contrast[:, None])[:, 0]
    bare_score = bare.gather(-1, target[:, None])[:, 0] - bare.gather(-1, contrast[:, None])[:, 0]
    torch.testing.assert_close(result.logit, own, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(bare_score, own, atol=1e-3, rtol=1e-3)


def test_granite_multipliers_are_away_from_one():
    """The zoo's Granite exercises every constant factor (the contract's reference then checks each)."""
    cfg = FAMILIES["granite"]()
    model = tiny_model("granite")
    assert cfg.embedding_multiplier != 1 and cfg.residual_multiplier != 1 and cfg.logits_scaling != 1
    assert model.model.layers[0].self_attn.scaling == cfg.attention_multiplier != cfg.head_dim ** -0.5


def test_readme_names_exactly_the_tested_heads():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(\w+ForSequenceClassification)`", readme))
    assert named == {HEADS[type(FAMILIES[f]())].__name__ for f in WITH_HEAD}
