"""Qwen3-VL beyond the contract suite (test_model_contract.py runs that on the zoo entries qwen3_vl and
qwen3_vl_moe; test_vision_language.py its per-image maps against the reference): the inputs as
`Qwen3VLProcessor` returns them, explained and checked against the explicit float64 reference, and the
CLI's inputs built without a processor equal to its.

The processor is the real class with its real `__call__`, made without `__init__`: that one checks
its video processor's class through transformers' video-processor mapping, a placeholder without
torchvision (AttributeError: 'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content', even for
video_processor=None), and Qwen3VLVideoProcessor itself raises ImportError without torchvision, whose
CPU wheel does not import with torch 2.13.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import lrp_triton
from model_zoo import BY_NAME
from reference_vlm import vlm_reference
from scaled_close import assert_rel_close
from test_vision_language_view import image_processor, tiny_tokenizer

ENTRY = BY_NAME["qwen3_vl"]
IMAGE, START, END = 90, 92, 93


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(2024)
    return ENTRY.build()


def qwen3_vl_processor(tokenizer):
    processor = transformers.Qwen3VLProcessor.__new__(transformers.Qwen3VLProcessor)
    processor.tokenizer, processor.image_processor, processor.video_processor = tokenizer, image_processor(), None
    processor.chat_template = None
    processor.image_token, processor.image_token_id = "<|image_pad|>", IMAGE
    processor.video_token, processor.video_token_id = "<|video_pad|>", 91
    processor.vision_start_token, processor.vision_start_token_id = "<|vision_start|>", START
    processor.vision_end_token, processor.vision_end_token_id = "<|vision_end|>", END
    return processor


def test_processor_inputs_explained_match_the_reference(model):
    """Two prompts, left padded, two images of different sizes in the first: the processor's outputs, checked
    against ids built here, explained, and compared with the float64 reference (merged-sequence relevance,
    pixel relevance per image, the image / text totals)."""
    pytest.importorskip("PIL")
    import numpy
    from PIL import Image

    from lrp_triton.cli_vision import build_inputs
    from lrp_triton.models import ADAPTERS

    generator = numpy.random.default_rng(7)
    images = [Image.fromarray((generator.random(size) * 255).astype("uint8")) for size in
              ((12, 16, 3), (8, 8, 3), (8, 12, 3))]
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token, tokenizer.padding_side = "<unk>", "left"
    processor = qwen3_vl_processor(tokenizer)
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    prompts = [f"w5 {image} w7 {image} w9 w11", f"w8 {image} w6"]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    grid = inputs["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 8], [1, 4, 4], [1, 4, 6]]  # pixels / 2 per side
    tokens = [t * h * w // 4 for t, h, w in grid.tolist()]  # 12, 4 and 6 image tokens
    rows = [[5, START, *[IMAGE] * tokens[0], END, 7, START, *[IMAGE] * tokens[1], END, 9, 11],
            [8, START, *[IMAGE] * tokens[2], END, 6]]
    pad = len(rows[0]) - len(rows[1])
    assert inputs["input_ids"].tolist() == [rows[0], [0] * pad + rows[1]]
    assert inputs["attention_mask"].tolist() == [[1] * len(rows[0]), [0] * pad + [1] * len(rows[1])]
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == IMAGE).long())
    torch.testing.assert_close(inputs["pixel_values"], image_processor()(images=images, return_tensors="pt")
                               ["pixel_values"], rtol=0, atol=0)
    parts = ADAPTERS["qwen3_vl"].vision_language_of(model)  # the CLI's inputs without a processor: the same
    built = build_inputs(None, image_processor(), tokenizer, parts, model.config, images[1:2], "w8 w6")
    real = build_inputs(processor, None, tokenizer, parts, model.config, images[1:2], "w8 w6")
    assert sorted(built) == sorted(real)
    for key in real:
        torch.testing.assert_close(built[key], real[key], rtol=0, atol=0, msg=key)

    result = lrp_triton.attribute(model, **inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ref, score, _ = vlm_reference(model, ids, mask, inputs["pixel_values"], grid, result.position, result.target)
    torch.testing.assert_close(result.logit.double(), score, atol=2e-5, rtol=1e-5)
    assert result.image_rows == [0, 0, 1]
    errs = [assert_rel_close(result.relevance, ref["relevance"], 1e-5, "relevance"),
            assert_rel_close(result.text_relevance, ref["text_relevance"], 1e-5, "text relevance")]
    starts = torch.tensor([0, *grid.prod(-1).cumsum(0).tolist()])
    for i in range(len(images)):  # each image's pixel relevance in total (its layout: test_vision_language)
        flat = ref["pixels"][starts[i]:starts[i + 1]]
        assert result.image_pixel_relevance[i].shape == (grid[i, 1] * 2, grid[i, 2] * 2)
        errs.append(abs(result.image_pixel_relevance[i].sum().item() - flat.sum().item()) / flat.abs().sum().item())
        assert errs[-1] < 1e-5, f"image {i} pixels"
    for b in range(2):
        image_terms = ref["relevance"][b][ids[b] == IMAGE]
        torch.testing.assert_close(result.image_total[b].double(), image_terms.sum(),
                                   atol=1e-5 * ref["relevance"].magnitude[b].sum().item(), rtol=0)
    print(f"\n[qwen3_vl processor inputs] max rel err {max(errs):.1e}; image share {result.image_share.tolist()}, "
          f"text share {result.text_share.tolist()}")

