"""Idefics3 / SmolVLM beyond the contract suite (test_model_contract.py runs that on the zoo entries): per
sub-image pixel, patch and token maps against the explicit float64 reference with a partly padded sub-image
(pixel_attention_mask) and zero padding slots; the processor's own outputs (two split images in one prompt);
the tile layout against the image processor's split; bad input.

SmolVLMProcessor itself needs num2words and a video processor (torchvision), neither importable here: the
SmolVLM model is explained on Idefics3Processor's prompt layout (SmolVLM's is the same) with
SmolVLMImageProcessorPil. The torchvision image processors (Idefics3ImageProcessor, SmolVLMImageProcessor)
are not importable here either: the PIL ones are used.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

import lrp_triton
from lrp_triton.models.idefics3 import tile_canvas
from model_zoo import BY_NAME, idefics3_batch, llava_row
from reference_idefics3 import idefics3_reference
from scaled_close import assert_rel_close

ROW_COL = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def tokenizer():
    """Words, the image tokens at the model's ids (<image> = 90), the processor's tile tags."""
    vocab = {w: i for i, w in enumerate("<pad> <unk> <s> what is in the picture a cat and dog".split())}
    vocab.update({t: 40 + k for k, t in enumerate(ROW_COL)})
    vocab.update({"<image>": 90, "<fake_token_around_image>": 91, "<global-img>": 92, "<end_of_utterance>": 93})
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", unk_token="<unk>",
                                               bos_token="<s>")
    tok.add_special_tokens({"additional_special_tokens": ["<global-img>", *ROW_COL]})
    return tok


def image_processor(smolvlm=False, **kw):
    cls = transformers.SmolVLMImageProcessorPil if smolvlm else transformers.Idefics3ImageProcessorPil
    return cls(**{"size": {"longest_edge": 112}, "max_image_size": {"longest_edge": 56}, **kw})


def picture(h, w):
    from PIL import Image

    return Image.fromarray(np.random.randint(0, 256, (h, w, 3), dtype=np.uint8))


def check_maps(result, ref, ids, n_sub, what, tol=1e-5):
    """Per sub-image maps against the reference; image / text totals; returns the largest relative error."""
    errs = [assert_rel_close(result.relevance, ref["relevance"], tol, f"{what} relevance"),
            assert_rel_close(result.text_relevance, ref["text_relevance"], tol, f"{what} text relevance")]
    assert len(result.image_pixel_relevance) == len(result.image_token_relevance) == n_sub
    tokens = ref["relevance"][ids == 90].view(n_sub, 2, 2)  # the sub-images in order, blocks row-major
    for i in range(n_sub):
        # compared at the scale of all sub-images' terms: one sub-image may get a small share, and the float32
        # rounding of its relevance follows that of the image tokens (the row's scale), not its own
        pixels, patches = ref["pixels"][i], ref["patches"][i]
        pixels.magnitude, patches.magnitude = ref["pixels"].magnitude, ref["patches"].magnitude
        assert result.image_pixel_relevance[i].shape == (56, 56) and result.image_patch_relevance[i].shape == (4, 4)
        # (3 x tol: a pixel's relevance sums the patch convolution's output channels, which cancel, at float32
        # rounding that the channel-summed magnitude does not count: seen up to 1.1e-5 over 80 random models)
        errs.append(assert_rel_close(result.image_pixel_relevance[i], pixels, 3 * tol, f"{what} sub-image {i} pixels"))
        errs.append(assert_rel_close(result.image_patch_relevance[i], patches, tol, f"{what} sub-image {i} patches"))
        token_map = tokens[i]
        token_map.magnitude = ref["relevance"].abs().max().expand(token_map.shape)  # (a slice: the rows' scale)
        errs.append(assert_rel_close(result.image_token_relevance[i], token_map, tol, f"{what} sub-image {i} tokens"))
    for b in range(ids.shape[0]):  # an image's relevance: the sum over its sub-images' tokens
        image_terms = ref["relevance"][b][ids[b] == 90]
        torch.testing.assert_close(result.image_total[b].double(), image_terms.sum(),
                                   atol=tol * image_terms.abs().sum().item(), rtol=0)
    maps = torch.stack([m.sum() for m in result.image_token_relevance])
    rows = torch.tensor(result.image_rows)
    torch.testing.assert_close(maps.new_zeros(ids.shape[0]).index_add_(0, rows, maps), result.image_total)
    torch.testing.assert_close(result.image_total + result.text_total, result.relevance.sum(-1))
    torch.testing.assert_close(result.image_share + result.text_share, maps.new_ones(ids.shape[0]))
    return max(errs)


def test_sub_images_with_padding_slots_and_a_masked_region_match_the_reference():
    model = BY_NAME["idefics3"].build()
    n_sub = [3, 1]  # the second row's two slots are zero padding, dropped as the model drops them
    rows = [llava_row(7, 3, 4), llava_row(5, 1, 4)]
    inputs = idefics3_batch(rows, n_sub, side="left")
    inputs["pixel_attention_mask"][0, 1, 42:] = 0  # sub-image 1: a 42 x 28 image padded to 56 x 56
    inputs["pixel_attention_mask"][0, 1, :, 28:] = 0
    inputs["pixel_values"][0, 1] *= inputs["pixel_attention_mask"][0, 1]
    result = lrp_triton.attribute(model, **inputs, backend="torch")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ref, score, _ = idefics3_reference(model, ids, mask, inputs["pixel_values"], torch.full((2,), ids.shape[1] - 1),
                                       result.target, pixel_attention_mask=inputs["pixel_attention_mask"])
    torch.testing.assert_close(result.logit.double(), score, atol=2e-5, rtol=1e-5)
    assert result.image_rows == [0, 0, 0, 1] and torch.equal(result.image_mask, ids == 90)
    with torch.no_grad():  # the masked region changes the model's output: the mask is read, not ignored
        unmasked = model(**dict(inputs, pixel_attention_mask=None)).logits[:, -1]
    assert not torch.allclose(unmasked.gather(-1, result.target[:, None])[:, 0], result.logit, atol=1e-4)
    err = check_maps(result, ref, ids, 4, "padded")
    several = lrp_triton.attribute(model, **inputs, position=[-2, -1], target=[0, result.target], backend="torch")
    for level in ("pixel", "patch", "token"):  # the maps of each explained position: [P, ...] per sub-image
        for one, both in zip(getattr(result, f"image_{level}_relevance"),
                             getattr(several, f"image_{level}_relevance")):
            assert both.shape == (2, *one.shape)
            torch.testing.assert_close(both[1], one, atol=1e-6, rtol=1e-5)
    m64, px64 = model.double(), inputs["pixel_values"].double()  # float64: to float64 rounding
    r64 = lrp_triton.attribute(m64, **dict(inputs, pixel_values=px64), target=result.target, backend="torch")
    ref64, _, _ = idefics3_reference(m64, ids, mask, px64, torch.full((2,), ids.shape[1] - 1), result.target,
                                     pixel_attention_mask=inputs["pixel_attention_mask"])
    err64 = check_maps(r64, ref64, ids, 4, "padded float64", tol=1e-12)
    print(f"\n[idefics3 sub-images] max rel err float32 {err:.1e}, float64 {err64:.1e}; "
          f"image share {result.image_share.tolist()}")


@pytest.mark.parametrize("name", ["idefics3", "smolvlm"])
def test_the_processors_outputs_are_explained(name):
    """Two images in one prompt, each split into 2 x 2 tiles and a global view (5 sub-images of 4 tokens)."""
    model = BY_NAME[name].build()
    processor = transformers.Idefics3Processor(image_processor=image_processor(name == "smolvlm"),
                                               tokenizer=tokenizer(), image_seq_len=4)
    images = [picture(80, 100), picture(40, 30)]
    inputs = processor(images=[images], text=["what is <image> and <image> in the picture"], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 10, 3, 56, 56) and "pixel_attention_mask" in inputs
    result = lrp_triton.attribute(model, **inputs, backend="torch")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    torch.testing.assert_close(result.logit[0], logits[result.target[0]], atol=2e-5, rtol=1e-5)
    ids = inputs["input_ids"]
    ref, _, _ = idefics3_reference(model, ids, inputs["attention_mask"], inputs["pixel_values"],
                                   torch.tensor([ids.shape[1] - 1]), result.target,
                                   pixel_attention_mask=inputs["pixel_attention_mask"])
    err = check_maps(result, ref, ids, 10, name)
    for k in range(2):  # each image: its tiles on the canvas of the resized image, and its global view
        canvas, overview = tile_canvas(result.image_pixel_relevance[5 * k:5 * k + 5], 2, 2)
        assert canvas.shape == (112, 112) and overview.shape == (56, 56)
    print(f"\n[{name} processor] max rel err {err:.1e}; image share {result.image_share.tolist()}")


def test_tile_canvas_undoes_the_image_processors_split():
    """An image already at the split size (112 x 112, no resize, no rescaling): the processor's tiles are its
    crops, and tile_canvas puts them back."""
    image = picture(112, 112)
    out = image_processor(do_resize=False, do_rescale=False, do_normalize=False)(
        images=[[image]], return_row_col_info=True, return_tensors="pt")
    out["pixel_values"] = out["pixel_values"].float()
    rows, cols = out["rows"][0][0], out["cols"][0][0]
    assert (rows, cols) == (2, 2) and out["pixel_values"].shape == (1, 5, 3, 56, 56)
    canvas, overview = tile_canvas(list(out["pixel_values"][0].unbind(0)), rows, cols)  # [3, 112, 112] maps
    torch.testing.assert_close(canvas, torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1))
    torch.testing.assert_close(overview, out["pixel_values"][0, 4])
    single, same = tile_canvas([overview], 0, 0)
    assert single is same is overview
    with pytest.raises(ValueError, match="2 x 2 tiles and a global view are 5 maps, got 4"):
        tile_canvas(list(out["pixel_values"][0, :4]), 2, 2)


def test_bad_idefics3_inputs_are_clear_errors():
    entry = BY_NAME["idefics3"]
    model = entry.build()
    inputs = entry.inputs(batch=1)
    px, pam = inputs["pixel_values"], inputs["pixel_attention_mask"]
    cases = [
        (dict(inputs, pixel_values=px[0]), "add the sub-image axis"),
        (dict(inputs, pixel_values=px[..., :42]), r"pixel_values must be float \[batch, n_sub_images, 3, H, W\]"),
        (dict(inputs, pixel_values=px[..., :42, :42]), "a multiple of patch_size x scale_factor = 28"),
        (dict(inputs, pixel_values=torch.zeros_like(px)), "every sub-image is all zeros"),
        (dict(inputs, pixel_values=px[:, :1], pixel_attention_mask=pam[:, :1]),
         "hold 8 image tokens but pixel_values' 1 images give 4"),
        (dict(inputs, pixel_attention_mask=pam[:, :1]), r"pixel_attention_mask must be 0 / 1 \[batch"),
        (dict(inputs, pixel_attention_mask=pam.float()), "pixel_attention_mask must be 0 / 1"),
        (dict(inputs, pixel_attention_mask=torch.zeros_like(pam)), "masks every pixel of a sub-image"),
        (dict(inputs, image_grid_thw=torch.tensor([[1, 4, 4]])), "image_grid_thw does not apply to idefics3"),
        (dict(inputs, image_sizes=torch.tensor([[56, 56]])), "image_sizes does not apply to idefics3"),
        (dict(inputs, pixel_values=None), "no pixel_values were given"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            lrp_triton.attribute(model, **kwargs)
    llava = BY_NAME["llava"]
    with pytest.raises(ValueError, match="pixel_attention_mask does not apply to llava"):
        lrp_triton.attribute(llava.build(), **llava.inputs(batch=1), pixel_attention_mask=pam)
    with pytest.raises(ValueError, match="pixel_attention_mask does not apply to Llama"):
        lrp_triton.attribute(BY_NAME["llama"].build(), torch.randint(0, 50, (1, 5)), pixel_attention_mask=pam)


def test_cli_explains_an_image_into_its_sub_images(tmp_path, capsys):
    """`lrp-triton explain --image` on a saved model and processor: one overlay per sub-image (the 2 x 2 tiles
    and the global view; the CLI draws them on the sub-images as the model saw them, not on the one file)."""
    pytest.importorskip("matplotlib")
    from lrp_triton import cli

    model = BY_NAME["idefics3"].build()
    model.save_pretrained(tmp_path)
    transformers.Idefics3Processor(image_processor=image_processor(), tokenizer=tokenizer(),
                                   image_seq_len=4).save_pretrained(tmp_path)
    picture(80, 100).save(tmp_path / "picture.png")
    code = cli.main(["explain", "--model", str(tmp_path), "--image", str(tmp_path / "picture.png"), "--prompt",
                     "what is in the picture", "--out", str(tmp_path / "out.html")])
    assert code == 0 and "image share of the relevance" in capsys.readouterr().err
    page = (tmp_path / "out.html").read_text()
    assert page.count("data:image/png") == 5  # one overlay per sub-image
