"""Qwen2-VL beyond the contract suite (test_model_contract.py runs that on the zoo entry): the per-image
pixel, patch and image-token maps against the explicit float64 reference, laid out by an independent
index map of the image processor's patch layout; the image / text totals; several positions; bad input."""

from __future__ import annotations

import pytest
import torch

import lrp_triton
from model_zoo import BY_NAME, vlm_batch, vlm_row
from reference_vlm import vlm_reference
from scaled_close import assert_rel_close

ENTRY = BY_NAME["qwen2_vl"]
PATCH, MERGE, TEMPORAL, CHANNELS = 2, 2, 2, 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1234)
    return ENTRY.build()


def patch_sources(t, h, w):
    """For each flattened patch value of one image (the Qwen2-VL image processor's layout: patches in
    m x m merge blocks, each value (channel, temporal copy, row, column)), the index of the image pixel
    it copies in [C, H, W], built value by value; and for each patch its (row, column) in the patch grid."""
    pixels, patches = [], []
    for _ in range(t):
        for hb in range(h // MERGE):
            for wb in range(w // MERGE):
                for mh in range(MERGE):
                    for mw in range(MERGE):
                        row, col = hb * MERGE + mh, wb * MERGE + mw
                        patches.append(row * w + col)
                        for c in range(CHANNELS):
                            for _copy in range(TEMPORAL):
                                for ph in range(PATCH):
                                    for pw in range(PATCH):
                                        y, x = row * PATCH + ph, col * PATCH + pw
                                        pixels.append((c * h * PATCH + y) * w * PATCH + x)
    return torch.tensor(pixels), torch.tensor(patches)


def laid_out(flat, sources, size, shape, magnitude=None):
    """Values gathered onto the positions they came from (summed where several copy one) as `shape` (its
    first dim summed when 3-D: the channels), carrying `.magnitude`, the same sum of |terms| (of `magnitude`
    when given): float32 rounding scales with the terms (scaled_close.summed)."""
    def gather(values):
        out = torch.zeros(size, dtype=values.dtype).index_add_(0, sources, values.reshape(-1)).view(shape)
        return out.sum(0) if len(shape) == 3 else out
    out = gather(flat)
    out.magnitude = gather(flat.abs() if magnitude is None else magnitude)
    return out


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_image_maps_and_totals_match_the_reference(name):
    entry = BY_NAME[name]
    model = entry.build()
    images = [list(entry.images[:2]), [entry.images[2]]]  # two images in the first prompt, one in the second
    rows = [vlm_row(n, per_row) for n, per_row in zip((5, 8), images)]
    inputs = vlm_batch(rows, images, side="left")
    result = lrp_triton.attribute(model, **inputs, backend="torch")
    ids, mask, grid = inputs["input_ids"], inputs["attention_mask"], inputs["image_grid_thw"]
    ref, score, _ = vlm_reference(model, ids, mask, inputs["pixel_values"], grid, result.position, result.target)
    torch.testing.assert_close(result.logit.double(), score, atol=2e-5, rtol=1e-5)
    assert result.image_rows == [0, 0, 1] and torch.equal(result.image_mask, ids == 90)
    errs = [assert_rel_close(result.relevance, ref["relevance"], 1e-5, "relevance")]
    start, token_start = 0, 0
    image_tokens = ref["relevance"][ids == 90]  # [n_tokens], row after row: the images in order
    for i, (t, h, w) in enumerate(grid.tolist()):
        n = t * h * w
        pixels, patches = patch_sources(t, h, w)
        expected = laid_out(ref["pixels"][start:start + n], pixels, CHANNELS * h * PATCH * w * PATCH,
                            (CHANNELS, h * PATCH, w * PATCH))
        assert result.image_pixel_relevance[i].shape == (h * PATCH, w * PATCH)
        errs.append(assert_rel_close(result.image_pixel_relevance[i], expected, 1e-5, f"image {i} pixels"))
        patch_map = laid_out(ref["patches"][start:start + n], patches, h * w, (h, w),
                             ref["patches"].magnitude[start:start + n])
        errs.append(assert_rel_close(result.image_patch_relevance[i], patch_map, 1e-5, f"image {i} patches"))
        k = n // MERGE ** 2
        token_map = image_tokens[token_start:token_start + k].view(h // MERGE, w // MERGE)  # merged blocks row-major
        # a slice of the token relevance: compared at the scale of the whole row's (one image's tokens can
        # nearly cancel, and float32 rounding follows the row's largest values)
        token_map.magnitude = ref["relevance"].abs().max().expand(token_map.shape)
        errs.append(assert_rel_close(result.image_token_relevance[i], token_map, 1e-5, f"image {i} tokens"))
        start, token_start = start + n, token_start + k
    for b in range(2):  # the totals: over the image tokens, over the text tokens; together the whole sequence
        image_terms = ref["relevance"][b][ids[b] == 90]  # (a sum of terms: compared at the scale of their sizes)
        torch.testing.assert_close(result.image_total[b].double(), image_terms.sum(),
                                   atol=1e-5 * image_terms.abs().sum().item(), rtol=0)
        torch.testing.assert_close(result.text_total[b], result.text_relevance[b].sum(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.image_total + result.text_total, result.relevance.sum(-1))
    torch.testing.assert_close(result.image_share + result.text_share, torch.ones(2))
    print(f"\n[{name} maps] max rel err {max(errs):.1e} (per field {['%.0e' % e for e in errs]}); "
          f"image share {result.image_share.tolist()}")


def test_several_positions_equal_one_at_a_time_and_checkpointed(model):
    inputs = ENTRY.inputs(batch=1)
    several = lrp_triton.attribute(model, **inputs, position=[-1, -4])
    for j, position in enumerate((-1, -4)):
        one = lrp_triton.attribute(model, **inputs, position=position)
        torch.testing.assert_close(several.relevance[:, j], one.relevance, atol=1e-6, rtol=1e-5)
        for maps, single in ((several.image_pixel_relevance, one.image_pixel_relevance),
                             (several.image_token_relevance, one.image_token_relevance)):
            assert len(maps) == len(single) == 2
            for m, s in zip(maps, single):
                torch.testing.assert_close(m[j], s, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(several.image_total[:, j], one.image_total, atol=1e-6, rtol=1e-5)
    recomputed = lrp_triton.attribute(model, **inputs, position=[-1, -4], checkpoint=True)
    torch.testing.assert_close(recomputed.relevance, several.relevance, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(recomputed.image_pixel_relevance[0], several.image_pixel_relevance[0], atol=1e-6,
                               rtol=1e-5)


def test_a_prompt_without_images_is_explained_as_text(model):
    ids = torch.randint(3, 90, (1, 6))
    result = lrp_triton.attribute(model, ids)
    assert result.image_pixel_relevance == [] and result.image_rows == [] and result.image_total.item() == 0
    assert torch.equal(result.relevance, result.text_relevance) and result.relevance[0, -1] != 0


def test_bad_multimodal_inputs_are_clear_errors(model):
    inputs = ENTRY.inputs(batch=1)
    cases = [
        (dict(inputs, pixel_values=inputs["pixel_values"][:-4]), "pixel_values must be float"),
        (dict(inputs, image_grid_thw=torch.tensor([[1, 4, 4], [1, 4, 4]])), "pixel_values must be float"),
        (dict(inputs, image_grid_thw=torch.tensor([[1, 4, 8]]), pixel_values=torch.randn(32, 24)),
         "image tokens but image_grid_thw"),
        (dict(inputs, image_grid_thw=torch.tensor([[1, 3, 8]])), "does not fit the model's patch merging"),
        (dict(inputs, pixel_values=None), "need both pixel_values and image_grid_thw"),
        (dict(inputs, mm_token_type_ids=torch.zeros_like(inputs["input_ids"])), "mm_token_type_ids must mark"),
        (dict(inputs, linear_rule="gamma"), "linear_rule does not apply"),
        (dict(inputs, latent=True), "latent does not apply"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            lrp_triton.attribute(model, **kwargs)
    with pytest.raises(NotImplementedError, match="not supported for Qwen2-VL models yet"):
        lrp_triton.apply(model, linear_rule="gamma")
    assert not any(type(m).__name__.startswith("LRP") for m in model.modules())  # left as it was
    nan = inputs["pixel_values"].clone()
    nan[3, 5] = float("nan")
    with pytest.raises(ValueError, match="pixel_values contains NaN"):
        lrp_triton.attribute(model, **dict(inputs, pixel_values=nan))
    text_model = BY_NAME["qwen2"].build()
    with pytest.raises(ValueError, match="image_grid_thw does not apply"):
        lrp_triton.attribute(text_model, torch.randint(0, 50, (1, 5)), image_grid_thw=inputs["image_grid_thw"])


def test_image_overlay_png_is_reddest_on_the_most_relevant_patch(model, tmp_path):
    """Red over the image grows with positive relevance (r - (g + b) / 2 = alpha * v * 166 on grey), so the
    reddest block of the PNG is the patch with the most positive relevance."""
    pytest.importorskip("matplotlib")
    from png_pixels import read_png

    inputs = ENTRY.inputs(batch=1)
    result = lrp_triton.attribute(model, **inputs)
    pixel_map = result.image_pixel_relevance[0]  # [8, 8]: 4 x 4 patches of 2 x 2 pixels
    patches = pixel_map.clamp(min=0).view(4, PATCH, 4, PATCH).sum((1, 3))  # positive relevance per patch
    best = divmod(int(patches.argmax()), 4)
    image = torch.rand(3, *pixel_map.shape)
    scale = 6
    result.image_to_png(tmp_path / "overlay.png", image=image, scale=scale)
    width, height, pixels = read_png(tmp_path / "overlay.png")
    side = PATCH * scale  # one patch in PNG pixels
    redness = torch.zeros(4, 4)
    for i in range(4):
        for j in range(4):
            block = [pixels[y * width + x] for y in range(i * side, (i + 1) * side) for x in range(j * side, (j + 1) * side)]
            redness[i, j] = sum(max(0, r - (g + b) / 2) for r, g, b in block) / len(block)  # grey and blue: 0
    assert divmod(int(redness.argmax()), 4) == best, (redness, patches)
    assert width > 4 * side  # the colour bar beside the image
    with pytest.raises(IndexError, match="image 2 does not exist"):
        result.image_to_png(tmp_path / "x.png", index=2)
