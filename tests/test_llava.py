"""LLaVA beyond the contract suite (test_model_contract.py runs that on the zoo entry, a Llama decoder with
feature layer -2 and the CLS token dropped): a Mistral decoder reading two feature layers with the CLS token
kept ("full"), two images in one prompt, left padding, against the explicit float64 reference (pixel, patch
and image-token maps, image / text totals); bad input."""

from __future__ import annotations

import pytest
import torch
import transformers

import lrp_triton
from model_zoo import BY_NAME, llava_batch, llava_config, llava_row, randomize_vlm
from reference_llava import llava_reference
from scaled_close import assert_rel_close

ENTRY = BY_NAME["llava"]


def test_full_strategy_two_feature_layers_mistral_matches_the_reference():
    config = llava_config(text={"model_type": "mistral", "sliding_window": 16}, vision_feature_layer=[0, -1],
                          vision_feature_select_strategy="full", projector_hidden_act="gelu_pytorch_tanh")
    model = randomize_vlm(transformers.LlavaForConditionalGeneration(config))
    per_image = 10  # 3 x 3 patches and the CLS token
    rows = [llava_row(6, 2, per_image), llava_row(5, 1, per_image)]
    inputs = llava_batch(rows, [2, 1], side="left")
    result = lrp_triton.attribute(model, **inputs, backend="torch")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ref, score, _ = llava_reference(model, ids, mask, inputs["pixel_values"], torch.full((2,), ids.shape[1] - 1),
                                    result.target)
    torch.testing.assert_close(result.logit.double(), score, atol=2e-5, rtol=1e-5)
    assert result.image_rows == [0, 0, 1] and torch.equal(result.image_mask, ids == 90)
    errs = [assert_rel_close(result.relevance, ref["relevance"], 1e-5, "relevance"),
            assert_rel_close(result.text_relevance, ref["text_relevance"], 1e-5, "text relevance")]
    image_tokens = ref["relevance"][ids == 90].view(3, per_image)  # the images in order, row after row
    for i in range(3):
        pixels, patches = ref["pixels"][i], ref["patches"][i]
        pixels.magnitude, patches.magnitude = ref["pixels"].magnitude[i], ref["patches"].magnitude[i]
        assert result.image_pixel_relevance[i].shape == (24, 24)
        errs.append(assert_rel_close(result.image_pixel_relevance[i], pixels, 1e-5, f"image {i} pixels"))
        errs.append(assert_rel_close(result.image_patch_relevance[i], patches, 1e-5, f"image {i} patches"))
        token_map = image_tokens[i, 1:].view(3, 3)  # after the CLS token, the patches row-major
        token_map.magnitude = ref["relevance"].abs().max().expand(token_map.shape)  # (a slice: the rows' scale)
        errs.append(assert_rel_close(result.image_token_relevance[i], token_map, 1e-5, f"image {i} tokens"))
    for b in range(2):
        image_terms = ref["relevance"][b][ids[b] == 90]  # (a sum of terms: compared at the scale of their sizes)
        torch.testing.assert_close(result.image_total[b].double(), image_terms.sum(),
                                   atol=1e-5 * image_terms.abs().sum().item(), rtol=0)
    torch.testing.assert_close(result.image_total + result.text_total, result.relevance.sum(-1))
    # (with random weights either share may be negative: only their sum is fixed)
    torch.testing.assert_close(result.image_share + result.text_share, torch.ones(2))
    print(f"\n[llava full, layers [0, -1], mistral] max rel err {max(errs):.1e}; "
          f"image share {result.image_share.tolist()}")


def test_bad_llava_inputs_are_clear_errors():
    model = ENTRY.build()
    inputs = ENTRY.inputs(batch=1)
    px = inputs["pixel_values"]
    cases = [
        (dict(inputs, image_grid_thw=torch.tensor([[1, 3, 3]] * 2)), "image_grid_thw does not apply to llava"),
        (dict(inputs, pixel_values=px[:, :, :16, :16]), r"pixel_values must be float \[n_images, 3, 24, 24\]"),
        (dict(inputs, pixel_values=px[0]), "add the image axis"),
        (dict(inputs, pixel_values=px[:1]), "hold 18 image tokens but pixel_values' 1 images give 9"),
        (dict(inputs, pixel_values=None), "no pixel_values were given"),
        (dict(inputs, input_ids=torch.randint(3, 90, (1, 9)), attention_mask=None), "need image tokens"),
        (dict(inputs, linear_rule="gamma"), "linear_rule does not apply"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            lrp_triton.attribute(model, **kwargs)
