"""`attribute(model, **processor(images=..., text=..., return_tensors="pt"))` with the real processors, built
here from a word-level tokenizer and Pillow image processors (no torchvision, nothing downloaded): LLaVA
(LlavaProcessor + CLIPImageProcessorPil), LLaVA-NeXT (LlavaNextProcessor + LlavaNextImageProcessorPil: two
images of different sizes in one prompt, a third in a padded second prompt) and Qwen2-VL. Each explains the
model's own prediction on the processor's inputs: its logit equals the plain model's on them. Extra keys:
image_sizes is LLaVA-NeXT's input; a tokenizer's token_type_ids are accepted when all 0 (ignored: these
decoders have no token-type embedding) and refused otherwise. Then the CLI on a LLaVA directory saved
with its processor: AutoProcessor builds it, and the overlay's image is the processor's centre crop.

Qwen2-VL's processor cannot be built by its constructor here: ProcessorMixin.__init__ checks the class of
every sub-processor, and the video processor's class (VideoProcessorMixin) is looked up in
transformers.VIDEO_PROCESSOR_MAPPING, which without torchvision is a placeholder with no `_extra_content`
(an AttributeError, for video_processor=None as for anything else; the Pillow image processor is not the
problem). The instance is made without __init__ (as in test_vision_language_view), its attributes set.
"""

from __future__ import annotations

import json

import numpy
import pytest
import torch
import transformers

import lrp_triton
from lrp_triton.models import ADAPTERS
from model_zoo import BY_NAME

PIL = pytest.importorskip("PIL.Image")

LLAVA_SPECIAL = {"<image>": 90}
QWEN_SPECIAL = {"<|image_pad|>": 90, "<|video_pad|>": 91, "<|vision_start|>": 92, "<|vision_end|>": 93}


def tokenizer(special):
    """A word-level tokenizer over the zoo's 97 ids: <pad> <s> </s>, w3 ... w89, the special tokens, x..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 90)}, **special}
    vocab.update({f"x{i}": i for i in range(90, 97) if i not in vocab.values()})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<pad>", pad_token="<pad>",
                                                bos_token="<s>", eos_token="</s>", extra_special_tokens=list(special))


def picture(height, width, seed):
    return PIL.fromarray((numpy.random.default_rng(seed).random((height, width, 3)) * 255).astype("uint8"))


def llava_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    images = CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    return transformers.LlavaProcessor(image_processor=images, tokenizer=tokenizer(LLAVA_SPECIAL), patch_size=8,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1)


def llava_next_processor():
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    images = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]])
    return transformers.LlavaNextProcessor(image_processor=images, tokenizer=tokenizer(LLAVA_SPECIAL), patch_size=14,
                                           vision_feature_select_strategy="default", num_additional_image_tokens=1)


def assert_explains_its_own_prediction(model, inputs, result):
    """The explained score of each row is the plain model's largest logit at its last real token."""
    with torch.no_grad():
        logits = model(**inputs).logits
    last = inputs["attention_mask"].sum(-1) - 1  # right padding
    own = logits[torch.arange(len(last)), last]
    assert torch.equal(result.target, own.argmax(-1))
    torch.testing.assert_close(result.logit, own.max(-1).values, atol=2e-5, rtol=1e-5)


def test_llava_processor_inputs_and_token_type_ids():
    model = BY_NAME["llava"].build()
    processor = llava_processor()
    inputs = processor(images=picture(20, 45, 0), text="w5 <image> w7 w9", return_tensors="pt",
                       return_token_type_ids=True)
    assert sorted(inputs) == ["attention_mask", "input_ids", "pixel_values", "token_type_ids"]
    assert int((inputs["input_ids"] == 90).sum()) == 9 and inputs["pixel_values"].shape == (1, 3, 24, 24)
    result = lrp_triton.attribute(model, **inputs)
    assert result.image_pixel_relevance[0].shape == (24, 24) and result.image_token_relevance[0].shape == (3, 3)
    model_inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    assert_explains_its_own_prediction(model, model_inputs, result)
    plain = lrp_triton.attribute(model, **model_inputs)  # the all-zero token types change nothing
    torch.testing.assert_close(result.relevance, plain.relevance, rtol=0, atol=0)
    with pytest.raises(ValueError, match="token_type_ids must be all 0"):
        lrp_triton.attribute(model, **dict(inputs, token_type_ids=torch.ones_like(inputs["input_ids"])))
    with pytest.raises(ValueError, match=r"token_type_ids shape \(1, 3\) does not match input_ids"):
        lrp_triton.attribute(model, **dict(inputs, token_type_ids=inputs["token_type_ids"][:, :3]))
    with pytest.raises(ValueError, match="image_sizes does not apply to llava"):
        lrp_triton.attribute(model, **model_inputs, image_sizes=torch.tensor([[20, 45]]))


def test_llava_next_processor_two_sizes_in_one_prompt_and_padding():
    """Images of 20 x 45 (canvas [28, 56]) and 30 x 30 (one canvas tile: its third tile slot is padding) in the
    first prompt, 40 x 30 (canvas [56, 28], rows unpadded) in the second, right-padded."""
    model = BY_NAME["llava_next"].build()
    processor = llava_next_processor()
    images = [picture(20, 45, 1), picture(30, 30, 2), picture(40, 30, 3)]
    inputs = processor(images=images, text=["w5 <image> w6 <image> w7", "w8 <image> w9 w10"], return_tensors="pt",
                       padding=True)
    assert sorted(inputs) == ["attention_mask", "image_sizes", "input_ids", "pixel_values"]
    assert inputs["pixel_values"].shape == (3, 3, 3, 28, 28) and inputs["image_sizes"].tolist() == [[20, 45], [30, 30],
                                                                                                   [40, 30]]
    assert (inputs["input_ids"] == 90).sum(-1).tolist() == [14 + 10, 10]  # the processor's own counts
    result = lrp_triton.attribute(model, **inputs)
    assert_explains_its_own_prediction(model, inputs, result)
    assert result.image_rows == [0, 0, 1]
    assert [tuple(m.shape) for m in result.image_pixel_relevance] == [(28, 56), (28, 28), (56, 28)]
    assert [tuple(m.shape) for m in result.image_base_pixel_relevance] == [(28, 28)] * 3
    assert [tuple(m.shape) for m in result.image_token_relevance] == [(2, 5), (2, 3), (2, 3)]
    torch.testing.assert_close(result.image_total + result.text_total, result.relevance.sum(-1))
    print(f"\n[llava_next processor] image share {result.image_share.tolist()}")


def test_llava_next_canvas_is_the_processors_tiles_in_place(tmp_path):
    """An image of exactly a pinpoint's size (28 x 56) is neither resized nor padded into its canvas, so the
    canvas laid out from the tiles (the layout of the pixel maps), its normalisation undone, is the image.
    The CLI loads the processor saved with the model (AutoProcessor); without it, the image processor and
    the tokenizer build the very same inputs."""
    from lrp_triton.cli_vision import build_inputs, load_processor, seen_images

    model = BY_NAME["llava_next"].build()
    processor = llava_next_processor()
    image = picture(28, 56, 4)
    inputs = processor(images=image, text="w5 <image>", return_tensors="pt")
    parts = ADAPTERS["llava_next"].vision_language_of(model)
    shown = seen_images(parts, processor.image_processor, dict(inputs), [image])
    expected = torch.tensor(numpy.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255
    torch.testing.assert_close(shown[0], expected, atol=1e-5, rtol=0)
    processor.save_pretrained(tmp_path)
    source = type("Source", (), {"path": str(tmp_path), "offline": None})()
    assert isinstance(load_processor(source)[0], transformers.LlavaNextProcessor)
    images = [picture(40, 30, 5), image]
    real = build_inputs(processor, None, processor.tokenizer, parts, model.config, images, "w5 <image> w6 <image>")
    built = build_inputs(None, processor.image_processor, processor.tokenizer, parts, model.config, images,
                         "w5 <image> w6 <image>")
    assert sorted(real) == sorted(built) == ["attention_mask", "image_sizes", "input_ids", "pixel_values"]
    for key in real:
        torch.testing.assert_close(built[key], real[key], rtol=0, atol=0, msg=key)


def test_qwen2_vl_processor_inputs():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model = BY_NAME["qwen2_vl"].build()
    with pytest.raises(AttributeError, match="_extra_content"):  # see the module docstring
        transformers.Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer(QWEN_SPECIAL),
                                      video_processor=None)
    processor = transformers.Qwen2VLProcessor.__new__(transformers.Qwen2VLProcessor)
    processor.tokenizer, processor.video_processor, processor.chat_template = tokenizer(QWEN_SPECIAL), None, None
    processor.image_processor = Qwen2VLImageProcessorPil(patch_size=2, temporal_patch_size=2, merge_size=2,
                                                         min_pixels=16, max_pixels=256)
    processor.image_token, processor.image_token_id = "<|image_pad|>", 90
    processor.video_token, processor.video_token_id = "<|video_pad|>", 91
    inputs = processor(images=picture(12, 16, 5), text="w5 <|vision_start|> <|image_pad|> <|vision_end|> w7",
                       return_tensors="pt")
    assert sorted(inputs) == ["attention_mask", "image_grid_thw", "input_ids", "mm_token_type_ids", "pixel_values"]
    result = lrp_triton.attribute(model, **inputs)
    assert_explains_its_own_prediction(model, inputs, result)
    assert result.image_pixel_relevance[0].shape == (12, 16)  # 6 x 8 patches of 2 x 2 pixels


def test_cli_explains_a_llava_directory_with_its_processor(tmp_path, capsys, monkeypatch):
    """`lrp-triton explain --model DIR --image FILE` on LLaVA saved with its processor: the inputs are
    AutoProcessor's, and the image drawn under the map is the processor's resize and centre crop (not the
    whole image resized)."""
    from lrp_triton import cli, cli_vision

    reported = []
    report = cli_vision.report
    monkeypatch.setattr(cli_vision, "report", lambda result, args: reported.append(result) or report(result, args))

    model, processor = BY_NAME["llava"].build(), llava_processor()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    image = picture(20, 45, 6)
    image.save(tmp_path / "picture.png")
    source = type("Source", (), {"path": str(tmp_path), "offline": None})()
    assert isinstance(cli_vision.load_processor(source)[0], transformers.LlavaProcessor)
    out = tmp_path / "r.json"
    code = cli.main(["explain", "--model", str(tmp_path), "--image", str(tmp_path / "picture.png"), "--prompt",
                     "w5 w17 w40", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "image share of the relevance" in captured.err
    inputs = processor(images=image, text="<image>w5 w17 w40", return_tensors="pt")
    expected = lrp_triton.attribute(model, **inputs)
    row = json.loads(out.read_text())["rows"][0]
    torch.testing.assert_close(torch.tensor(row["relevance"]), expected.relevance[0], atol=1e-6, rtol=1e-5)
    # the image as the model saw it: 20 x 45 resized to 24 x 54 (shortest edge 24), columns 15 ... 38 kept
    shown = reported[0].images[0]
    crop = numpy.asarray(image.resize((54, 24), PIL.Resampling.BICUBIC))[:, 15:39]
    torch.testing.assert_close(shown, torch.tensor(crop, dtype=torch.float32).permute(2, 0, 1) / 255, atol=1e-5,
                               rtol=0)
