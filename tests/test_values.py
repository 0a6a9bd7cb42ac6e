"""Issue 10, class 5 "Values": every bad value is one clear error at the entry point (its type, and a
message naming the argument and the problem), the model is left as it was, and the valid edge forms
(int16 / uint8 / int32 ids, numpy and tensor ids, a single row) give the very same relevance as the
plain int64 form.

Policy (lrp_triton.attribute's docstring, README "Input checks"): ids of any integer dtype are
taken; bool / float ids, empty batches and empty rows are ValueErrors; float / bool / str targets are
TypeErrors; NaN or inf in inputs_embeds / pixel_values, or in an explained score, is a ValueError
naming the rows (relevance would be NaN), never a result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lrp_triton
from model_zoo import hidden_score, text_inputs, tiny, tiny_model, tiny_t5

A = lrp_triton.attribute


def state(model):
    """What an error must leave untouched: module types, flags, the attention implementation."""
    return ({n: type(m) for n, m in model.named_modules()}, {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()}, model.config._attn_implementation)


def refused(model, error, match, *args, **kwargs):
    """attribute(model, ...) raises `error` matching `match`, and the model is as it was."""
    before = state(model)
    with pytest.raises(error, match=match):
        A(model, *args, **kwargs)
    assert state(model) == before


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(1)
    return tiny("bert-cls")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(2)
    return tiny("vit")


@pytest.fixture(scope="module")
def t5():
    torch.manual_seed(3)
    return tiny_t5("flan")


def ids(batch=2, n=7, vocab=101):
    return torch.randint(0, vocab, (batch, n))


# ------------------------------------------------------------------------------------------------
# target / contrast
# ------------------------------------------------------------------------------------------------
BAD_IDS = [
    (2.7, "got float 2.7.*never rounded"),
    (True, "got bool True.*not an id"),
    ("a", "got str 'a'.*convert_tokens_to_ids"),
    (torch.tensor([2.5, 3.0]), "got a torch.float32 tensor"),
    (torch.tensor(True), "got a torch.bool tensor"),
    (np.array([1.0, 2.0]), "got a torch.float64 tensor"),
    ([3, 4.5], "got float 4.5"),
    ([3, True], "got bool True"),
    ([3, None], " has None inside a list of ids per row; None \\(the model's own prediction\\) is taken only"),
    (lambda out: out.logits[:, -1, 0], "callable targets are taken by encoder and vision models"),
]


@pytest.mark.parametrize("name", ("target", "contrast"))
@pytest.mark.parametrize("value, match", BAD_IDS, ids=[repr(v)[:20] for v, _ in BAD_IDS])
def test_decoder_target_and_contrast_refuse_non_integer_values(llama, name, value, match):
    accepted = " must be a token id \\(int\\), an integer tensor, or a list of ints.*"
    if isinstance(value, list) and None in value:
        accepted = ""
    refused(llama, TypeError, f"attribute: {name}{accepted}{match}", ids(), **{name: value})


@pytest.mark.parametrize("value, match", [(2.0, "float 2.0"), (False, "bool False"), ("positive", "str")])
def test_classification_target_refuses_non_integer_values(bert, value, match):
    refused(bert, TypeError, f"target must be a class index \\(int\\).*or a callable.*{match}",
            ids(n=6, vocab=61), target=value)


@pytest.mark.parametrize("value", (1.5, True))
def test_vision_target_refuses_non_integer_values(vit, value):
    refused(vit, TypeError, "target must be a class index", pixel_values=torch.randn(1, 3, 32, 32), target=value)


def test_t5_and_masked_lm_targets_refuse_floats(t5):
    refused(t5, TypeError, "target must be a token id.*float 3.3", ids(vocab=101), target=3.3)
    refused(t5, TypeError, "contrast must be a token id.*bool", ids(vocab=101), contrast=True)
    torch.manual_seed(4)
    mlm = tiny("bert-mlm")
    refused(mlm, TypeError, "target must be a token id.*float 2.5", ids(n=6, vocab=61), position=2, target=2.5)


def test_several_positions_need_one_entry_per_position(llama):
    x = ids()
    refused(llama, TypeError, "with several positions, target must be a list with one entry per position \\(2\\)",
            x, position=[-1, -2], target=5)
    refused(llama, TypeError, "with several positions, contrast must be a list.*got a torch.int64 tensor",
            x, position=[-1, -2], contrast=torch.tensor(5))
    several = A(llama, x, position=[-1, -2], target=torch.tensor([3, 4]))  # a tensor: its first dim is positions
    assert several.target.tolist() == [[3, 4], [3, 4]]
    torch.testing.assert_close(A(llama, x, position=[-1, -2], target=np.array([3, 4])).relevance, several.relevance,
                               rtol=0, atol=0)
    refused(llama, TypeError, "target must be a token id.*one entry per position, got float 3.5",
            x, position=[-1, -2], target=[3, 3.5])
    refused(llama, TypeError, "target has None inside a list of ids per row", x, position=[-1, -2],
            target=[None, [3, None]])
    refused(llama, ValueError, "contrast must give an id for every position", x, position=[-1, -2],
            contrast=[3, None])
    refused(llama, ValueError, "target must have one entry per position \\(2\\), got 3", x, position=[-1, -2],
            target=[1, 2, 3])


def test_integer_targets_in_every_form_give_the_same_relevance(llama):
    x = ids()
    plain = A(llama, x, target=[3, 9], contrast=4)
    for target in (torch.tensor([3, 9], dtype=torch.int16), torch.tensor([3, 9], dtype=torch.uint8),
                   np.array([3, 9]), [np.int64(3), torch.tensor(9)], torch.tensor([[3], [9]])):
        for contrast in (4, np.int32(4), torch.tensor(4, dtype=torch.int8), [4, 4]):
            r = A(llama, x, target=target, contrast=contrast)
            torch.testing.assert_close(r.relevance, plain.relevance, rtol=0, atol=0)
            assert r.target.tolist() == [3, 9] and r.contrast.tolist() == [4, 4]
    several = A(llama, x, position=[-1, -3], target=[3, None])
    for target in ([torch.tensor(3, dtype=torch.int16), None], (np.int64(3), None), [np.array([3, 3]), None]):
        torch.testing.assert_close(A(llama, x, position=[-1, -3], target=target).relevance, several.relevance,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("position", (True, 1.0, [0, True], [], "1", torch.tensor([1, 2])))
def test_position_refuses_bool_float_and_non_ints(llama, position):
    refused(llama, TypeError, "position must be an int or a non-empty list of ints", ids(), position=position)


def test_position_as_numpy_or_tensor_integer_is_the_int(llama):
    x = ids()
    plain = A(llama, x, position=-2)
    for position in (np.int64(-2), torch.tensor(-2), torch.tensor(-2, dtype=torch.int16)):
        torch.testing.assert_close(A(llama, x, position=position).relevance, plain.relevance, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# ids: dtypes, empty batches and rows
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", (torch.int32, torch.int16, torch.uint8, torch.int8))
def test_every_integer_id_dtype_gives_the_int64_relevance(llama, bert, t5, dtype):
    x = torch.randint(0, 61, (2, 7))  # fits int8 and every vocabulary here
    torch.testing.assert_close(A(llama, x.to(dtype)).relevance, A(llama, x).relevance, rtol=0, atol=0)
    types = torch.randint(0, 2, (2, 7))
    torch.testing.assert_close(A(bert, x.to(dtype), token_type_ids=types.to(dtype)).relevance,
                               A(bert, x, token_type_ids=types).relevance, rtol=0, atol=0)
    dec = torch.randint(1, 61, (2, 3))
    r = A(t5, x.to(dtype), decoder_input_ids=dec.to(dtype))
    expected = A(t5, x, decoder_input_ids=dec)
    torch.testing.assert_close(r.relevance, expected.relevance, rtol=0, atol=0)
    torch.testing.assert_close(r.decoder_relevance, expected.decoder_relevance, rtol=0, atol=0)


def test_a_single_row_is_a_batch_of_one(llama, bert):
    x = ids(batch=1)
    torch.testing.assert_close(A(llama, x[0]).relevance, A(llama, x).relevance, rtol=0, atol=0)
    emb = llama.get_input_embeddings()(x).detach()
    torch.testing.assert_close(A(llama, inputs_embeds=emb[0]).relevance, A(llama, x).relevance)
    y = ids(batch=1, vocab=61)
    torch.testing.assert_close(A(bert, y[0]).relevance, A(bert, y).relevance, rtol=0, atol=0)


@pytest.mark.parametrize("dtype, match", [(torch.float32, "torch.float32"),
                                          (torch.bool, "torch.bool \\(a bool tensor is a mask")])
def test_float_and_bool_ids_are_refused(llama, bert, t5, dtype, match):
    x = torch.randint(0, 2, (2, 5)).to(dtype)
    refused(llama, ValueError, f"input_ids must be integer token ids \\[batch, seq\\], got \\(2, 5\\) {match}", x)
    refused(bert, ValueError, f"input_ids must be integer token ids.*{match}", x)
    refused(bert, ValueError, f"token_type_ids must be integer token ids.*{match}", ids(2, 5, 61),
            token_type_ids=x)
    refused(t5, ValueError, f"decoder_input_ids must be integer token ids.*{match}", ids(2, 5),
            decoder_input_ids=x)


def test_ids_outside_the_vocabulary_name_the_range(llama):
    refused(llama, ValueError, "input_ids outside the vocabulary \\[0, 101\\): values from -1", torch.tensor([[-1, 3]]))
    refused(llama, ValueError, "outside the vocabulary \\[0, 101\\).*to 300",
            torch.tensor([[300, 3]], dtype=torch.int16))


def test_empty_batches_and_rows_for_every_model_kind(llama, bert, vit, t5):
    for model, vocab in ((llama, 101), (bert, 61)):
        refused(model, ValueError, "input_ids has a batch of 0 rows \\(0, 5\\)", ids(0, 5, vocab))
        refused(model, ValueError, "input_ids is empty: its rows have 0 tokens \\(2, 0\\)", ids(2, 0, vocab))
        refused(model, ValueError, "input_ids is empty", torch.zeros(0, dtype=torch.long))
        hidden = model.get_input_embeddings().weight.shape[1]
        refused(model, ValueError, "inputs_embeds has a batch of 0 rows", inputs_embeds=torch.randn(0, 5, hidden))
        refused(model, ValueError, "inputs_embeds is empty: its rows have 0 tokens",
                inputs_embeds=torch.randn(2, 0, hidden))
    refused(bert, ValueError, "input_ids has a batch of 0 rows", ids(0, 5, 61),
            token_type_ids=torch.zeros(0, 5, dtype=torch.long))
    refused(vit, ValueError, "pixel_values has a batch of 0 images \\(0, 3, 32, 32\\)",
            pixel_values=torch.randn(0, 3, 32, 32))
    refused(vit, ValueError, "pixel_values is empty \\(1, 3, 0, 0\\)", pixel_values=torch.randn(1, 3, 0, 0))
    refused(t5, ValueError, "input_ids has a batch of 0 rows", ids(0, 5))
    refused(t5, ValueError, "input_ids is empty: its rows have 0 tokens", ids(2, 0))
    refused(t5, ValueError, "decoder_input_ids is empty: its rows have 0 tokens", ids(2, 5),
            decoder_input_ids=ids(2, 0))


# ------------------------------------------------------------------------------------------------
# token_type_ids, attention masks, inputs_embeds, pixel_values
# ------------------------------------------------------------------------------------------------
def test_token_type_ids_shape_and_range(bert):
    x, _, types = text_inputs(2, 6)
    refused(bert, ValueError, "token_type_ids must be integer \\(2, 6\\) like the input, got \\(2, 5\\)", x,
            token_type_ids=types[:, :5])
    refused(bert, ValueError, "token_type_ids outside \\[0, 2\\)", x, token_type_ids=types + 1)


def test_an_additive_mask_is_refused_and_a_float_01_mask_is_the_bool_mask(llama):
    x = ids()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, -2:] = False
    additive = torch.zeros(2, 7).masked_fill(~mask, float("-inf"))
    refused(llama, ValueError, "attention_mask must hold only 0/1 or True/False.*additive mask", x,
            attention_mask=additive)
    refused(llama, ValueError, "attention_mask must hold only 0/1", x, attention_mask=mask.long() * 2)
    torch.testing.assert_close(A(llama, x, attention_mask=mask.float()).relevance,
                               A(llama, x, attention_mask=mask).relevance, rtol=0, atol=0)


def test_inputs_embeds_hidden_size_and_dtype(llama, bert):
    refused(llama, ValueError, "inputs_embeds has hidden size 63 but this model's input embeddings have 64",
            inputs_embeds=torch.randn(2, 6, 63))
    refused(bert, ValueError, "inputs_embeds has hidden size 64 but this model's input embeddings have 32",
            inputs_embeds=torch.randn(2, 6, 64))
    refused(llama, ValueError, "inputs_embeds must be a floating-point tensor, got torch.int64",
            inputs_embeds=torch.randint(0, 3, (2, 6, 64)))
    refused(llama, ValueError, "inputs_embeds must be \\[batch, seq, hidden=64\\]", inputs_embeds=torch.randn(64))


@pytest.mark.parametrize("bad", (float("nan"), float("inf"), -float("inf")))
def test_non_finite_inputs_embeds_are_refused_naming_the_rows(llama, bert, bad):
    for model in (llama, bert):
        emb = torch.randn(3, 5, model.get_input_embeddings().weight.shape[1])
        emb[1, 2, 3] = bad
        refused(model, ValueError, "inputs_embeds contains NaN or inf in row\\(s\\) \\[1\\]; relevance would be NaN",
                inputs_embeds=emb)


def test_embeds_that_overflow_the_model_dtype_are_refused(llama):
    emb = torch.randn(2, 5, 64, dtype=torch.float64)
    emb[0, 0, 0] = 1e300  # finite in float64, inf in the model's float32
    refused(llama, ValueError, "inputs_embeds contains NaN or inf after conversion to the model's dtype "
            "torch.float32.*row\\(s\\) \\[0\\]", inputs_embeds=emb)


@pytest.mark.parametrize("bad", (float("nan"), float("inf")))
def test_non_finite_pixels_are_refused_naming_the_rows(vit, bad):
    px = torch.randn(3, 3, 32, 32)
    px[2, 1, 5, 7] = bad
    refused(vit, ValueError, "pixel_values contains NaN or inf in row\\(s\\) \\[2\\]", pixel_values=px)


def test_pixel_channels_and_size_follow_the_config(vit):
    refused(vit, ValueError, "pixel_values has 1 channels but the model takes 3 \\(config.num_channels\\)",
            pixel_values=torch.randn(2, 1, 32, 32))
    refused(vit, ValueError, "pixel_values images are 48 x 48 but the model takes 32 x 32 \\(config.image_size\\)",
            pixel_values=torch.randn(2, 3, 48, 48))
    refused(vit, ValueError, "pixel_values must be float", pixel_values=torch.zeros(2, 3, 32, 32, dtype=torch.long))
    px = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(A(vit, pixel_values=px[0]).relevance, A(vit, pixel_values=px).relevance,
                               rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Non-finite explained scores
# ------------------------------------------------------------------------------------------------
def test_a_nan_logit_is_an_error_naming_the_rows_not_a_prediction():
    model = tiny_model("qwen2", seed=5)
    with torch.no_grad():
        model.get_input_embeddings().weight[7] = float("nan")  # token 7 poisons the rows it is in
    x = torch.randint(8, 101, (3, 6))
    x[2, 1] = 7
    refused(model, ValueError, "the explained score \\(target logit\\) is NaN or inf in row\\(s\\) \\[2\\], so its "
            "relevance would be NaN", x)
    refused(model, ValueError, "\\(target logit minus contrast logit\\) is NaN or inf in row\\(s\\) \\[2\\]", x,
            target=3, contrast=4)
    assert torch.isfinite(A(model, x[:2]).relevance).all()  # the clean rows alone are explained
    with torch.no_grad():
        model.lm_head.weight[5] = float("inf")  # +inf logit: the "prediction" would be token 5
    refused(model, ValueError, "is NaN or inf in row\\(s\\) \\[0, 1\\]", x[:2])


def test_non_finite_scores_of_encoders_vision_and_t5_are_errors():
    torch.manual_seed(6)
    bert, vit, t5 = tiny("bert-cls"), tiny("vit"), tiny_t5("flan")
    with torch.no_grad():
        bert.classifier.weight[1] = float("nan")
        vit.classifier.weight[0, 0] = float("inf")
        t5.lm_head.weight[9] = float("nan")
    refused(bert, ValueError, "target logit\\) is NaN or inf in row\\(s\\) \\[0, 1\\]", ids(2, 5, 61))
    refused(vit, ValueError, "is NaN or inf in row\\(s\\) \\[0\\]", pixel_values=torch.randn(1, 3, 32, 32), target=0)
    refused(t5, ValueError, "is NaN or inf in row\\(s\\) \\[0, 1\\]", ids(2, 5))


def test_nan_relevance_behind_a_finite_score_is_an_error():
    """Class 0's logit is finite, but the NaN weights of class 1 turn its zero gradient into NaN (0 * NaN)."""
    torch.manual_seed(9)
    bert = tiny("bert-cls")
    with torch.no_grad():
        bert.classifier.weight[1] = float("nan")
    refused(bert, ValueError, "relevance is NaN or inf in row\\(s\\) \\[0, 1\\] although the explained score "
            "is finite", ids(2, 5, 61), target=0)


def test_check_finite_relevance_names_the_field_and_rows():
    from lrp_triton.attribution.targets import check_finite_relevance

    r = torch.zeros(3, 4)
    check_finite_relevance({"relevance": r, "position_relevance": None, "latent": {"x": 1}})
    r[2, 1] = float("nan")
    with pytest.raises(ValueError, match="position_relevance of explained score 1 is NaN or inf in row\\(s\\) "
                                         "\\[2\\] although the explained score is finite"):
        check_finite_relevance({"relevance": torch.zeros(3, 4), "position_relevance": r}, score=1)


# ------------------------------------------------------------------------------------------------
# Callable targets: [B] or 0-d
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("score, shape", [
    (lambda out: out.last_hidden_state[:, 0, :2], "\\(2, 2\\)"),
    (lambda out: out.last_hidden_state[:, 0, 5:6], "\\(2, 1\\)"),
    (lambda out: out.last_hidden_state[:1, 0, 5], "\\(1,\\)"),
    (lambda out: out.last_hidden_state[:, :, 5].flatten(), "\\(10,\\)"),
])
def test_a_callable_target_of_the_wrong_shape_is_refused(score, shape):
    torch.manual_seed(7)
    base = tiny("bert-base")
    refused(base, ValueError, f"callable target must return one score per row, shape \\[2\\], or a 0-d score of the "
            f"whole batch; got shape {shape}", ids(2, 5, 61), target=score)


def test_callable_targets_of_shape_b_or_0d_work_and_vision_batch_is_read_from_the_outputs(vit):
    torch.manual_seed(8)
    base = tiny("bert-base")
    x = ids(2, 5, 61)
    per_row = A(base, x, target=hidden_score)
    assert per_row.logit.shape == (2,)
    whole = A(base, x, target=lambda out: hidden_score(out).sum())
    torch.testing.assert_close(whole.relevance, per_row.relevance)  # rows are independent
    one = A(base, x[:1], target=hidden_score)
    torch.testing.assert_close(one.relevance, per_row.relevance[:1], atol=1e-6, rtol=1e-5)
    refused(vit, ValueError, "shape \\[2\\].*got shape \\(2, 3\\)", pixel_values=torch.randn(2, 3, 32, 32),
            target=lambda out: out.logits[:, :3])
    refused(base, ValueError, "the callable target's score is NaN or inf in row\\(s\\) \\[1\\]", x,
            target=lambda out: hidden_score(out) * torch.tensor([1.0, float("nan")]))
    refused(base, ValueError, "the callable target's score is NaN or inf, so", x,
            target=lambda out: hidden_score(out).sum() * float("inf"))


# ------------------------------------------------------------------------------------------------
# Flags
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(latent="yes"), "latent must be True or False, got 'yes'"),
    (dict(latent=1), "latent must be True or False, got 1"),
    (dict(checkpoint=None), "checkpoint must be True or False, got None"),
    (dict(progress=5), "progress must be a callable progress\\(done, total\\) or None, got 5"),
])
def test_flags_are_bools_and_progress_is_callable(llama, kwargs, match):
    refused(llama, TypeError, match, ids(), **kwargs)
