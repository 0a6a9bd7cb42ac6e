"""LLaVA-NeXT beyond the contract suite (test_model_contract.py runs that on the zoo entry): every map against
the explicit float64 reference (the canvas and base-tile pixel, patch and token maps, image / text totals) on
images whose canvases are unpadded by columns (B) and by rows (C) and one with an unused tile slot (D), two of
them in one left-padded prompt; the newline tokens; bad input."""

from __future__ import annotations

import pytest
import torch
import transformers

import lrp_triton
from model_zoo import BY_NAME, F64, llava_next_batch, llava_next_config, llava_next_row, randomize_vlm
from reference_llava import llava_next_reference
from scaled_close import assert_rel_close

ENTRY = BY_NAME["llava_next"]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (F64, 1e-12)], ids=["f32", "f64"])
def test_every_map_matches_the_reference(dtype, tol):
    model = ENTRY.build().to(dtype)
    images = [("B", "C"), ("D",)]
    inputs = llava_next_batch([llava_next_row(n, per_row) for n, per_row in zip((6, 5), images)], images, side="left")
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    result = lrp_triton.attribute(model, **inputs, backend="torch")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ref, score, _ = llava_next_reference(model, ids, mask, inputs["pixel_values"], inputs["image_sizes"],
                                         torch.full((2,), ids.shape[1] - 1), result.target)
    torch.testing.assert_close(result.logit.double(), score, atol=2e-5 * (dtype == torch.float32), rtol=1e-5)
    assert result.image_rows == [0, 0, 1] and torch.equal(result.image_mask, ids == 90)
    # B: canvas [28, 56], its 2 x 4 feature grid cut to columns 1, 2; C: [56, 28], rows 1, 2 of 4; D: one tile
    assert ref["layout"] == [(1, 2, 2, 2), (2, 1, 2, 2), (1, 1, 2, 2)]
    errs = [assert_rel_close(result.relevance, ref["relevance"], tol, "relevance"),
            assert_rel_close(result.text_relevance, ref["text_relevance"], tol, "text relevance")]
    image_tokens = ref["relevance"][ids == 90].split([10, 10, 10])  # the images in order, row after row
    scale = ref["relevance"].abs().max()  # (token maps: slices of the rows, compared at the rows' scale)
    # pixel and patch maps: at the scale of all the tiles' (float32 rounding follows the largest relevance in
    # the tower's batch of tiles; one tile's map can be small beside it)
    for key in ("pixels", "patches"):
        largest = max(m.magnitude.max() for m in ref[key] + ref[f"base_{key}"])
        for m in ref[key] + ref[f"base_{key}"]:
            m.magnitude = largest.expand(m.shape)
    for i, (rows, cols, r, c) in enumerate(ref["layout"]):
        for field, key in (("pixel", "pixels"), ("patch", "patches")):
            canvas = getattr(result, f"image_{field}_relevance")[i]
            base = getattr(result, f"image_base_{field}_relevance")[i]
            errs.append(assert_rel_close(canvas, ref[key][i], tol, f"image {i} canvas {field}"))
            errs.append(assert_rel_close(base, ref[f"base_{key}"][i], tol, f"image {i} base {field}"))
        assert result.image_pixel_relevance[i].shape == (28 * rows, 28 * cols)
        base_tokens, canvas_tokens = image_tokens[i][:4].view(2, 2), image_tokens[i][4:].view(r, c + 1)
        base_tokens.magnitude, canvas_tokens.magnitude = scale.expand(2, 2), scale.expand(r, c + 1)
        errs.append(assert_rel_close(result.image_base_token_relevance[i], base_tokens, tol, f"image {i} base tokens"))
        errs.append(assert_rel_close(result.image_token_relevance[i], canvas_tokens, tol, f"image {i} tokens"))
        # the newline tokens (the last column) take relevance, which the reference passes to no pixel
        assert (result.image_token_relevance[i][:, -1].abs() > 1e-6 * scale).all()
    for b in range(2):
        image_terms = ref["relevance"][b][ids[b] == 90]  # (a sum of terms: compared at the scale of their sizes)
        torch.testing.assert_close(result.image_total[b].double(), image_terms.sum(),
                                   atol=tol * image_terms.abs().sum().item(), rtol=0)
    torch.testing.assert_close(result.image_total + result.text_total, result.relevance.sum(-1))
    torch.testing.assert_close(result.image_share + result.text_share, torch.ones(2, dtype=dtype))
    print(f"\n[llava_next maps {dtype}] max rel err {max(errs):.1e} (per field {['%.0e' % e for e in errs]}); "
          f"image share {result.image_share.tolist()}")


def test_bad_llava_next_inputs_are_clear_errors():
    model = ENTRY.build()
    inputs = ENTRY.inputs(batch=1)  # images A (3 tiles) and C (3 tiles)
    px, sizes = inputs["pixel_values"], inputs["image_sizes"]
    cases = [
        (dict(inputs, pixel_values=px[:, 0]), r"pixel_values must be float \[n_images, n_tiles, 3, 28, 28\]"),
        (dict(inputs, pixel_values=px[..., :14]), r"pixel_values must be float \[n_images, n_tiles"),
        (dict(inputs, image_sizes=None), "LLaVA-NeXT needs image_sizes"),
        (dict(inputs, image_sizes=sizes[:1]), r"image_sizes must be positive integers \[n_images, 2\] = \[2, 2\]"),
        (dict(inputs, image_sizes=sizes.float()), "image_sizes must be positive integers"),
        (dict(inputs, image_sizes=-sizes), "image_sizes must be positive integers"),
        (dict(inputs, pixel_values=px[:, :2]), r"image 0 of size \[20, 45\] takes 1 \+ 1 x 2 tiles"),
        (dict(inputs, image_sizes=torch.tensor([[20, 45], [28, 56]])), "hold 24 image tokens but pixel_values' 2 "
                                                                          "images give 28"),
        (dict(inputs, image_grid_thw=torch.tensor([[1, 2, 2]] * 2)), "image_grid_thw does not apply to llava_next"),
        (dict(inputs, token_type_ids=torch.ones_like(inputs["input_ids"])), "token_type_ids must be all 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            lrp_triton.attribute(model, **kwargs)
    text_model = BY_NAME["llama"].build()
    with pytest.raises(ValueError, match="image_sizes does not apply"):
        lrp_triton.attribute(text_model, torch.randint(0, 50, (1, 5)), image_sizes=sizes)
    full = randomize_vlm(transformers.LlavaNextForConditionalGeneration(
        llava_next_config(vision_feature_select_strategy="full")))
    with pytest.raises(NotImplementedError, match="'full' is not supported"):
        lrp_triton.attribute(full, **inputs)


def test_heatmap_rows_show_each_image_as_one_token_with_its_total():
    """The display rows (HTML / PNG / terminal) fold each image's tokens, base tile and canvas (newlines
    included), into one `[image k]` token carrying their sum, and draw its canvas map; several positions
    give the maps a leading position axis, each as that position alone."""
    from lrp_triton.render.vl_rows import image_rows

    model = ENTRY.build()
    inputs = ENTRY.inputs(batch=1)
    several = lrp_triton.attribute(model, **inputs, position=[-3, -1])  # one forward, the maps with a P axis
    result = lrp_triton.attribute(model, **inputs)
    for name in ("pixel", "patch", "token"):
        for kind in ("image", "image_base"):
            field = f"{kind}_{name}_relevance"
            for m, one in zip(getattr(several, field), getattr(result, field)):
                torch.testing.assert_close(m[1], one, atol=1e-6, rtol=1e-5)
    (item,) = image_rows(result)
    assert [t for t in item.row.tokens if t.startswith("[image")] == ["[image 0]", "[image 1]"]
    assert len(item.row.tokens) == result.relevance.shape[1] - 24 + 2  # 14 + 10 image tokens, two placeholders
    assert len(image_rows(several)) == 2
    tokens = result.relevance[0][result.image_mask[0]].split([14, 10])
    for panel, own in zip(item.panels, tokens):
        assert panel.relevance.shape == result.image_pixel_relevance[panel.index].shape
        torch.testing.assert_close(torch.tensor(panel.total, dtype=torch.float64), own.sum().double(), atol=1e-6,
                                   rtol=1e-5)
    total = torch.tensor(sum(p.total for p in item.panels), dtype=torch.float64)
    torch.testing.assert_close(total, result.image_total[0].double(), atol=1e-6, rtol=1e-5)
