"""Heatmaps of a vision-language attribution (Qwen2-VL): the PNG checked by its pixels (each image's
most relevant patch is its panel's reddest block), the HTML by its structure (images embedded as PNG
data URIs and decoded here, each image's tokens as one token carrying their summed relevance; in
headless Chromium when installed); and `lrp-triton explain --image ... --generate N` in-process on a
tiny random-weight Qwen2-VL saved with a tokenizer built here and Qwen2-VL's image processor."""

from __future__ import annotations

import base64
import html.parser
import json
import os
import subprocess

import pytest
import torch

import lrp_triton
from model_zoo import BY_NAME
from png_pixels import count_colored, read_png

ENTRY = BY_NAME["qwen2_vl"]
PATCH, IMAGE_TOKEN = 2, 90
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(4321)
    return ENTRY.build()


@pytest.fixture(scope="module")
def result(model):
    torch.manual_seed(5)
    return lrp_triton.attribute(model, **ENTRY.inputs(batch=1))  # two images: 8 x 8 and 4 x 8 pixels


def patch_redness(pixels, width, box, grid, side):
    """Mean r - (g + b) / 2 (positive part) per patch block of an image box: on grey it is alpha * v * 166 for
    positive relevance v and 0 for negative (the overlay's blend)."""
    x0, y0 = box
    out = torch.zeros(grid)
    for i in range(grid[0]):
        for j in range(grid[1]):
            block = [pixels[(y0 + y) * width + x0 + x] for y in range(i * side, (i + 1) * side)
                     for x in range(j * side, (j + 1) * side)]
            out[i, j] = sum(max(0, r - (g + b) / 2) for r, g, b in block) / len(block)
    return out


def best_patch(pixel_map):
    """(row, column) of the patch with the most positive pixel relevance."""
    h, w = pixel_map.shape
    patches = pixel_map.clamp(min=0).view(h // PATCH, PATCH, w // PATCH, PATCH).sum((1, 3))
    return divmod(int(patches.argmax()), w // PATCH), patches.shape


def test_png_shows_each_image_reddest_at_its_most_relevant_patch_above_the_text(result, tmp_path):
    pytest.importorskip("matplotlib")
    from lrp_triton.render import vl_png

    images = [torch.rand(3, 20, 20), torch.rand(13, 26)]  # any size: resized to the maps (8 x 8, 4 x 8)
    result.to_png(tmp_path / "vl.png", images=images, scale=6, dpi=60)
    width, height, pixels = read_png(tmp_path / "vl.png")
    expected, boxes = vl_png.compose(result, "qwen2_vl · attnlrp", images, scale=6, dpi=60)
    assert (height, width) == tuple(expected.shape[:2]) and pixels[::97] == [tuple(p) for p in
                                                                             expected.view(-1, 3)[::97].tolist()]
    assert [(r, k) for r, k, *_ in boxes] == [(0, 0), (0, 1)]
    for (_, k, x0, y0, x1, y1) in boxes:
        pixel_map = result.image_pixel_relevance[k]
        assert (x1 - x0, y1 - y0) == (pixel_map.shape[1] * 6, pixel_map.shape[0] * 6)
        best, grid = best_patch(pixel_map)
        redness = patch_redness(pixels, width, (x0, y0), grid, PATCH * 6)
        assert divmod(int(redness.argmax()), grid[1]) == best, (k, redness, pixel_map)
        bar = [pixels[y * width + x] for y in range(y0, y1) for x in range(x1 + 12, x1 + 26)]  # the colour bar
        assert min(count_colored(bar)) > 20
    text = pixels[max(y1 for *_, y1 in boxes) * width:]
    assert max(count_colored(text)) > 20  # the token heatmap below the panels


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.figures, self.tokens, self.sources, self._open = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.sources += [attrs[k] for k in ("src", "href") if k in attrs] + (["<script>"] if tag == "script" else [])
        if tag == "img":
            self.images.append(attrs)
        if tag == "figure":
            self.figures.append(attrs)
        if tag == "span" and "data-relevance" in attrs:
            self._open = [float(attrs["data-relevance"]), ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.tokens.append(tuple(self._open))
            self._open = None


def test_html_embeds_each_overlay_and_shows_each_image_as_one_token(result, tmp_path):
    page = Page()
    page.feed(result.to_html(tmp_path / "vl.html", images=[torch.rand(8, 8, 3), torch.rand(4, 8)]))
    assert page.sources and all(s.startswith("data:image/png;base64,") for s in page.sources)  # self-contained
    assert len(page.images) == 2 and [f["data-image"] for f in page.figures] == ["0", "1"]
    mask = result.image_mask[0]
    image_tokens = result.relevance[0][mask].double()  # the images' tokens in order: 4, then 2
    for k, (img, figure, n) in enumerate(zip(page.images, page.figures, (4, 2))):
        path = tmp_path / f"image{k}.png"
        path.write_bytes(base64.b64decode(img["src"].split(",", 1)[1]))
        width, height, pixels = read_png(path)
        pixel_map = result.image_pixel_relevance[k]
        assert (height, width) == tuple(pixel_map.shape)  # at the map's resolution, scaled by the page
        best, grid = best_patch(pixel_map)
        assert divmod(int(patch_redness(pixels, width, (0, 0), grid, PATCH).argmax()), grid[1]) == best
        total = image_tokens[:n].sum() if k == 0 else image_tokens[4:].sum()
        assert float(figure["data-total"]) == pytest.approx(float(total), rel=1e-6, abs=1e-9)
        shown = [v for v, text in page.tokens if text == f"[image {k}]"]
        assert shown == [pytest.approx(float(total), rel=1e-6, abs=1e-9)]
    texts = [text for _, text in page.tokens if not text.startswith("[image")]
    assert len(texts) == int((~mask).sum())  # every text token once (the legend's boxes left out)
    with pytest.raises(ValueError, match="got 1 image"):
        result.to_html(images=[torch.rand(8, 8)])


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="headless Chromium is not installed (/usr/bin/chromium)")
def test_html_overlay_renders_in_headless_chromium(result, tmp_path):
    page = tmp_path / "vl.html"
    result.to_html(page, images=[torch.full((8, 8), 0.5), torch.full((4, 8), 0.5)])
    shot = tmp_path / "shot.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=800,600",
                           f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    width, height, pixels = read_png(shot)
    red, blue = count_colored(pixels)
    assert red > 200 and blue > 200  # the scaled overlays, the colour bars and the tokens


# ------------------------------------------------------------------------------------------------
# lrp-triton explain --image
# ------------------------------------------------------------------------------------------------
SPECIAL = {"<|image_pad|>": 90, "<|video_pad|>": 91, "<|vision_start|>": 92, "<|vision_end|>": 93}


def tiny_tokenizer():
    """A word-level tokenizer over the zoo entry's vocabulary (97 ids), with Qwen2-VL's vision tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 90)}, **SPECIAL,
             **{f"x{i}": i for i in range(94, 97)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens=list(SPECIAL))


def image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=2, temporal_patch_size=2, merge_size=2, min_pixels=16, max_pixels=256)


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    pytest.importorskip("PIL")
    import numpy
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_qwen2_vl")
    model.save_pretrained(root)
    tiny_tokenizer().save_pretrained(root)
    image_processor().save_pretrained(root)
    generator = numpy.random.default_rng(3)
    Image.fromarray((generator.random((12, 16, 3)) * 255).astype("uint8")).save(root / "picture.png")
    return root


def test_explain_image_generates_and_explains_each_token(model, model_dir, tmp_path, capsys):
    from PIL import Image

    from lrp_triton import cli

    prompt = "w5 w17 w40 w8"
    out = tmp_path / "vl.json"
    html_out = tmp_path / "vl.html"
    code = cli.main(["explain", "--model", str(model_dir), "--image", str(model_dir / "picture.png"), "--prompt",
                     prompt, "--generate", "2", "--device", "cpu", "--out", str(out), "--out", str(html_out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "image share of the relevance" in captured.err and "generated:" in captured.out
    doc = json.loads(out.read_text())
    # the inputs built here, independently: the image processor's patches, <start> image tokens <end>, the words
    picture = Image.open(model_dir / "picture.png").convert("RGB")
    pixels = image_processor()(images=[picture], return_tensors="pt")
    grid = pixels["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 8]]  # 12 x 16 pixels, in 2 x 2 patches
    words = [int(w[1:]) for w in prompt.split()]
    ids = torch.tensor([[92] + [IMAGE_TOKEN] * 12 + [93] + words])
    inputs = dict(pixel_values=pixels["pixel_values"], image_grid_thw=grid)
    generated = []
    with torch.no_grad():  # greedy, step by step with the plain model
        for _ in range(2):
            full = torch.cat([ids, torch.tensor([generated], dtype=torch.long)], 1)
            logits = model(input_ids=full, mm_token_type_ids=(full == IMAGE_TOKEN).long(), **inputs).logits
            generated.append(int(logits[0, -1].argmax()))
    full = torch.cat([ids, torch.tensor([generated[:-1]])], 1)
    expected = lrp_triton.attribute(model, full, **inputs, mm_token_type_ids=(full == IMAGE_TOKEN).long(),
                                    position=[ids.shape[1] - 1, ids.shape[1]], target=generated)
    assert [row["target"] for row in doc["rows"]] == generated
    for j, row in enumerate(doc["rows"]):  # the JSON keeps every token, raw
        assert row["indices"] == list(range(ids.shape[1] + j))
        assert [t.strip() for t in row["tokens"][:2]] == ["<|vision_start|>", "<|image_pad|>"]
        torch.testing.assert_close(torch.tensor(row["relevance"]), expected.relevance[0, j, :ids.shape[1] + j],
                                   atol=1e-5, rtol=1e-4)
    page = Page()
    page.feed(html_out.read_text())
    assert len(page.images) == 2  # the picture in both explained rows
    with pytest.raises(ValueError, match="got 2 image"):  # the CLI's images come with the result
        expected.to_html(images=[picture, picture])


def test_explain_image_errors_are_one_line(model_dir, tmp_path, capsys):
    from lrp_triton import cli

    (tmp_path / "notes.png").write_text("not an image")
    cases = [(["--model", str(model_dir), "--image", str(tmp_path / "absent.png")], "no such file"),
             (["--model", str(model_dir), "--image", str(tmp_path / "notes.png")], "not an image Pillow can read"),
             (["--image", str(model_dir / "picture.png")], "--image needs a vision-language model")]
    for args, message in cases:
        assert cli.main(["explain", *args, "--prompt", "w5", "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("lrp-triton: error:") and message in err, err


def test_inputs_from_the_image_processor_equal_the_qwen2_vl_processors(model, model_dir):
    """The CLI's inputs without a processor (Qwen2-VL's needs torchvision for its video processor) equal
    those of `Qwen2VLProcessor.__call__` (the instance made without __init__, which would build that)."""
    import transformers
    from PIL import Image

    from lrp_triton.cli import CLIError
    from lrp_triton.cli_vision import build_inputs
    from lrp_triton.models import ADAPTERS

    tokenizer, images = tiny_tokenizer(), [Image.open(model_dir / "picture.png").convert("RGB")] * 2
    processor = transformers.Qwen2VLProcessor.__new__(transformers.Qwen2VLProcessor)
    processor.tokenizer, processor.image_processor, processor.video_processor = tokenizer, image_processor(), None
    processor.chat_template, processor.image_token, processor.image_token_id = None, "<|image_pad|>", IMAGE_TOKEN
    processor.video_token, processor.video_token_id = "<|video_pad|>", 91
    parts = ADAPTERS["qwen2_vl"].vision_language_of(model)
    for prompt in ("w5 w6", "w5 <|image_pad|> w7 <|image_pad|>"):  # the images put first, or where the prompt says
        real = build_inputs(processor, None, tokenizer, parts, model.config, images, prompt)
        built = build_inputs(None, image_processor(), tokenizer, parts, model.config, images, prompt)
        assert sorted(real) == sorted(built) and int((real["input_ids"] == IMAGE_TOKEN).sum()) == 24
        for key in real:
            torch.testing.assert_close(built[key], real[key], rtol=0, atol=0, msg=key)
    with pytest.raises(CLIError, match="holds 1 image placeholder"):
        build_inputs(None, image_processor(), tokenizer, parts, model.config, images, "w5 <|image_pad|>")
