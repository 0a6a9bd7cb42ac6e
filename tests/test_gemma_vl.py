"""PaliGemma and Gemma 3 multimodal beyond the contract suite (test_model_contract.py runs that on the zoo
entries): the bidirectional block mask as it reaches the attention op, against the explicit visibility
(reference_attention's causal_extent); the processors' own outputs (PaliGemmaProcessor / Gemma3Processor built
here from a word-level tokenizer and the PIL image processors: torchvision does not import here) through
`attribute`; PaliGemma 2's Gemma 2 decoder (soft-caps, sliding layers); no token_type_ids (causal, as the
model); bad input."""

from __future__ import annotations

import pytest
import torch
import transformers
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers

import lrp_triton
from lrp_triton.attention_interface import lrp_attention_mask
from lrp_triton.ops import lrp_attention
from model_zoo import BY_NAME, GEMMA_VL_TEXT, SIGLIP_VL_VISION, paligemma_config, paligemma_row, randomize_gemma_vl
from reference_attention import attention_gradient_reference, attention_relevance_reference
from reference_gemma_vl import block_extent, gemma_vl_reference
from scaled_close import assert_rel_close


def extent_bias(extent, window, n):
    """The 0 / -inf bias of `visibility`'s causal_extent rule, built here from the dense condition."""
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    vis = j[None] <= extent[:, :, None]
    if window is not None:
        vis = vis & (i - j < window)
    return torch.zeros(vis.shape).masked_fill(~vis, float("-inf"))[:, None]


@pytest.mark.parametrize("backend,mode", [(b, m) for b in ("torch", "sdpa") for m in ("attnlrp", "cp-lrp", "gradient")]
                         + [("triton", "attnlrp")])  # (the interpreter: one mode; the bias path is mode-blind)
def test_block_mask_as_bias_matches_the_extent_reference(backend, mode):
    """GQA, padding, a block longer than the window (one-sided: a block token sees its block's end)."""
    b, h, hkv, n, d, window = 2, 4, 2, 11, 16, 3
    q, k, v, do = (torch.randn(b, x, n, d) for x in (h, hkv, hkv, h))
    block = torch.zeros(b, n, dtype=torch.bool)
    block[0, 2:7], block[1, 5:9] = True, True
    extent = block_extent(block)
    pad = torch.ones(b, n, dtype=torch.bool)
    pad[1, :2] = False
    q64, k64, v64 = (t.detach().requires_grad_() for t in (q, k, v))
    out = lrp_attention(q64, k64, v64, causal=False, mode=mode, key_padding_mask=pad,
                        bias=extent_bias(extent, window, n), backend=backend)
    out.backward(do)
    kw = dict(causal=True, key_padding_mask=pad, sliding_window=window, causal_extent=extent)
    ref = (attention_gradient_reference(q, k, v, do, **kw) if mode == "gradient"
           else attention_relevance_reference(q, k, v, do, mode=mode, **kw))
    for name, x, r in zip("qkv", (q64, k64, v64), ref):
        if mode == "cp-lrp" and name != "v":  # no relevance through the scores
            assert (x.grad == 0).all() and (r == 0).all()
        else:
            assert_rel_close(x * x.grad, r, 1e-5, f"R_{name}")


def test_mask_interface_hands_over_padding_or_the_complete_mask():
    from transformers.masking_utils import blockwise_overlay, causal_mask_function, or_masks, sdpa_mask

    pad = torch.ones(2, 6, dtype=torch.bool)
    pad[1, :2] = False
    assert torch.equal(lrp_attention_mask(2, 6, 6, mask_function=causal_mask_function, attention_mask=pad), pad)
    no_block = or_masks(causal_mask_function, blockwise_overlay(torch.full((2, 6), -1)))
    assert torch.equal(lrp_attention_mask(2, 6, 6, mask_function=no_block, attention_mask=pad,
                                          allow_is_causal_skip=False), pad)  # nothing beyond causal: the padding
    groups = torch.tensor([[-1, 0, 0, 0, -1, -1], [-1, -1, -1, 1, 1, -1]])
    blocks = or_masks(causal_mask_function, blockwise_overlay(groups))
    full = lrp_attention_mask(2, 6, 6, mask_function=blocks, attention_mask=pad, allow_is_causal_skip=False)
    assert full.shape == (2, 1, 6, 6) and full[0, 0, 1, 3] and not full[0, 0, 0, 1]
    assert torch.equal(full, sdpa_mask(2, 6, 6, mask_function=blocks, attention_mask=pad,
                                       allow_is_causal_skip=False))


def word_tokenizer(**special):
    words = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"w{i}" for i in range(20)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                bos_token="<bos>", eos_token="<eos>", **special)


def random_image(h, w):
    return Image.fromarray((torch.rand(h, w, 3).numpy() * 255).astype("uint8"))  # (torch: seeded by conftest)


def check_against_reference(model, inputs, result, tol=1e-5):
    """Relevance, text relevance, each image's pixel, patch and token maps and the totals against
    gemma_vl_reference; returns the largest relative error."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    positions = mask.sum(-1) - 1 if (mask[:, -1] == 0).any() else torch.full((len(ids),), ids.shape[1] - 1)
    ref, score, _ = gemma_vl_reference(model, ids, mask, inputs["pixel_values"], inputs.get("token_type_ids"),
                                       positions, result.target)
    torch.testing.assert_close(result.logit.double(), score, atol=2e-5 if tol >= 1e-6 else 1e-12, rtol=tol)
    errs = [assert_rel_close(result.relevance, ref["relevance"], tol, "relevance"),
            assert_rel_close(result.text_relevance, ref["text_relevance"], tol, "text relevance")]
    tokens = ref["relevance"][ids == model.config.image_token_id].view(len(result.image_rows), -1)  # images in order
    for i, pixels in enumerate(result.image_pixel_relevance):
        for name, actual, field in (("pixels", pixels, "pixels"), ("patches", result.image_patch_relevance[i], "patches")):
            expected = ref[field][i]
            expected.magnitude = ref[field].magnitude[i]
            errs.append(assert_rel_close(actual, expected, tol, f"image {i} {name}"))
        token_map = tokens[i].view(result.image_token_relevance[i].shape)
        token_map.magnitude = ref["relevance"].magnitude.max().expand(token_map.shape)  # (a slice: the rows' scale)
        errs.append(assert_rel_close(result.image_token_relevance[i], token_map, tol, f"image {i} tokens"))
    torch.testing.assert_close(result.image_total + result.text_total, result.relevance.sum(-1))
    return max(errs)


def paligemma_processor_and_config():
    """A PaliGemmaProcessor (word-level tokenizer, 28-pixel SigLIP images of 4 tokens) and a matching config."""
    tokenizer = word_tokenizer()
    images = transformers.SiglipImageProcessorPil(size={"height": 28, "width": 28})
    images.image_seq_length = 4
    processor = transformers.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    config = paligemma_config(text={"vocab_size": len(tokenizer)})
    config.image_token_id = processor.image_token_id
    return processor, config


def test_paligemma_processor_outputs_explain_as_the_reference():
    processor, config = paligemma_processor_and_config()
    # float64: every map to float64 rounding (the zoo's and the Gemma 3 processor test's cases run float32)
    model = randomize_gemma_vl(transformers.PaliGemmaForConditionalGeneration(config)).double()
    inputs = processor(images=[random_image(40, 52)], text=["w1 w2 w3"], return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].double()
    assert inputs["token_type_ids"].eq(0).all()  # the whole prompt is the bidirectional prefix
    result = lrp_triton.attribute(model, **inputs, backend="torch")
    # (transformers' Gemma RMSNorm computes in float32 even for float64 inputs: the model's own logits differ there)
    torch.testing.assert_close(result.logit, model(**inputs).logits[:, -1].gather(-1, result.target[:, None])[:, 0],
                               atol=1e-5, rtol=1e-5)
    err = check_against_reference(model, dict(inputs), result, tol=1e-12)
    assert result.image_pixel_relevance[0].shape == (28, 28) and result.image_token_relevance[0].shape == (2, 2)
    print(f"\n[paligemma processor] max rel err {err:.1e}; image share {result.image_share.tolist()}")


def test_gemma3_processor_two_images_per_prompt_and_padding_explain_as_the_reference():
    tokenizer = word_tokenizer(extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                     "image_token": "<image_soft_token>"})
    images = transformers.Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    processor = transformers.Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=4)
    text = dict(GEMMA_VL_TEXT, vocab_size=len(tokenizer), sliding_window=3,
                layer_types=["sliding_attention", "full_attention"])
    config = transformers.Gemma3Config(vision_config=dict(SIGLIP_VL_VISION, patch_size=7), text_config=text,
                                       image_token_index=tokenizer.image_token_id, boi_token_index=tokenizer.boi_token_id,
                                       eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
                                       mm_tokens_per_image=4)
    model = randomize_gemma_vl(transformers.Gemma3ForConditionalGeneration(config))
    prompts = ["w1 <start_of_image> w2 w3 <start_of_image> w4", "w5 <start_of_image> w6"]
    inputs = processor(images=[[random_image(30, 30), random_image(33, 28)], [random_image(28, 40)]], text=prompts,
                       padding=True, return_tensors="pt")
    assert inputs["pixel_values"].shape[0] == 3 and (inputs["attention_mask"] == 0).any()
    result = lrp_triton.attribute(model, **inputs, position=-1, backend="torch")
    assert result.image_rows == [0, 0, 1] and [m.shape for m in result.image_token_relevance] == [(2, 2)] * 3
    err = check_against_reference(model, dict(inputs), result)
    print(f"\n[gemma3 processor, 2 + 1 images, padding] max rel err {err:.1e}; "
          f"image share {result.image_share.tolist()}")


def test_paligemma2_gemma2_decoder_matches_the_reference():
    """Gemma 2's soft-caps (attention and final logits: identity rule) and a sliding layer (window 10: longer than
    the prefix of 9, so transformers' OR of the prefix over the window and the reference's extent agree)."""
    config = paligemma_config(text={"model_type": "gemma2", "sliding_window": 10, "attn_logit_softcapping": 2.0,
                                    "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 16})
    model = randomize_gemma_vl(transformers.PaliGemmaForConditionalGeneration(config)).double()  # (float64 as the
    # PaliGemma processor test; the Gemma 2 decoder in float32: the zoo's gemma2 entry)
    ids, types = paligemma_row(11, 1, n_suffix=6)  # 4 image tokens, <bos> and 4 prompt tokens, a suffix of 6
    inputs = {"input_ids": ids[None], "token_type_ids": types[None], "pixel_values": torch.randn(1, 3, 28, 28).double(),
              "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    result = lrp_triton.attribute(model, **inputs)
    logits = model(**inputs).logits[:, -1]
    assert logits.abs().max() <= 3.0  # the final soft-cap is on
    # (transformers' Gemma 2 RMSNorm computes in float32 even for float64 inputs)
    torch.testing.assert_close(result.logit, logits.gather(-1, result.target[:, None])[:, 0], atol=1e-5, rtol=1e-5)
    err = check_against_reference(model, inputs, result, tol=1e-12)
    print(f"\n[paligemma 2] max rel err {err:.1e}; image share {result.image_share.tolist()}")


@pytest.mark.parametrize("name", ["paligemma", "gemma3"])
def test_float64_maps_match_the_reference(name, monkeypatch):
    """Float64 throughout: every field, the pixel, patch and token maps included, to float64 rounding (two images
    in the first prompt, padding at the end of the second). The decoder's block masks reach the attention op as
    per-row causal extents (lrp_triton.mask_extent), never as an N x N bias."""
    import lrp_triton.attention_interface as interface

    entry = BY_NAME[name]
    model = entry.build().double()
    inputs = entry.inputs(batch=2, pad=3)
    inputs["pixel_values"] = inputs["pixel_values"].double()
    calls, op = [], interface.lrp_attention
    monkeypatch.setattr(interface, "lrp_attention", lambda *a, **kw: calls.append(kw) or op(*a, **kw))
    result = lrp_triton.attribute(model, **inputs)
    decoder = [kw for kw in calls if kw.get("causal_extent") is not None]
    assert decoder and all(kw["bias"] is None and kw["causal"] for kw in decoder)
    assert len(decoder) == model.config.text_config.num_hidden_layers  # every decoder layer
    assert not any(kw["bias"] is not None for kw in calls)
    err = check_against_reference(model, inputs, result, tol=1e-12)
    print(f"\n[{name} float64] max rel err {err:.1e}; image share {result.image_share.tolist()}, "
          f"text share {result.text_share.tolist()}")


def test_without_token_type_ids_the_decoder_is_causal_as_in_the_model():
    entry = BY_NAME["gemma3"]
    model = entry.build()
    inputs = entry.inputs(batch=1)
    causal = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    with_types, without = (lrp_triton.attribute(model, **x, backend="torch") for x in (inputs, causal))
    torch.testing.assert_close(without.logit, model(**causal).logits[:, -1].gather(-1, without.target[:, None])[:, 0])
    assert not torch.allclose(with_types.logit, without.logit)  # the blocks change the model's output
    check_against_reference(model, causal, without)


def test_without_token_type_ids_paligemma_is_bidirectional_as_in_the_model():
    """HF's PaliGemma text config has use_bidirectional_attention: without token types every token sees
    every other, so a token after the explained one gets relevance, and the logit is the model's."""
    entry = BY_NAME["paligemma"]
    model = entry.build()
    inputs = {k: v for k, v in entry.inputs(batch=1).items() if k != "token_type_ids"}
    result = lrp_triton.attribute(model, **inputs, position=-2, backend="torch")
    with torch.no_grad():
        logits = model(**inputs).logits[:, -2]
    torch.testing.assert_close(result.logit, logits.gather(-1, result.target[:, None])[:, 0])
    assert result.relevance[0, -1].abs() > 1e-6 * result.relevance.abs().max()  # the later token is seen


def test_bad_inputs_are_clear_errors():
    entry = BY_NAME["paligemma"]
    model = entry.build()
    inputs = entry.inputs(batch=1)
    with pytest.raises(ValueError, match=r"token_type_ids shape \(1, 5\) does not match"):
        lrp_triton.attribute(model, **dict(inputs, token_type_ids=inputs["token_type_ids"][:, :5]))
    with pytest.raises(ValueError, match="token_type_ids must"):
        lrp_triton.attribute(model, **dict(inputs, token_type_ids=inputs["token_type_ids"].float()))
    llava = BY_NAME["llava"]
    llava_inputs = llava.inputs(batch=1)  # (all-0 segment ids are accepted and ignored there, tested elsewhere)
    with pytest.raises(ValueError, match="token_type_ids must be all 0 for llava"):
        lrp_triton.attribute(llava.build(), **llava_inputs, token_type_ids=torch.ones_like(llava_inputs["input_ids"]))
    with pytest.raises(ValueError, match="labels does not apply"):
        lrp_triton.attribute(BY_NAME["gemma"].build(), torch.randint(0, 50, (1, 6)), labels=torch.zeros(1, 6))


def test_explain_image_generates_with_paligemma(tmp_path, capsys):
    """`lrp-triton explain --image --generate 2` on a saved PaliGemma and its processor: the generated tokens are
    the causal suffix (token type 1, as the model's generate), explained as `attribute` explains them."""
    import json

    from lrp_triton import cli

    processor, config = paligemma_processor_and_config()
    model = randomize_gemma_vl(transformers.PaliGemmaForConditionalGeneration(config))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    random_image(30, 40).save(tmp_path / "picture.png")
    out = tmp_path / "pg.json"
    code = cli.main(["explain", "--model", str(tmp_path), "--image", str(tmp_path / "picture.png"), "--prompt",
                     "w1 w2 w3", "--generate", "2", "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    inputs = processor(images=[Image.open(tmp_path / "picture.png").convert("RGB")], text=["w1 w2 w3"],
                       return_tensors="pt")
    ids, n = inputs["input_ids"], inputs["input_ids"].shape[1]
    generated = [row["target"] for row in doc["rows"]]
    full = torch.cat([ids, torch.tensor([generated[:1]])], 1)
    types = torch.cat([inputs["token_type_ids"], torch.ones(1, 1, dtype=torch.long)], 1)
    expected = lrp_triton.attribute(model, full, pixel_values=inputs["pixel_values"], token_type_ids=types,
                                    position=[n - 1, n], target=generated)
    for j, row in enumerate(doc["rows"]):
        torch.testing.assert_close(torch.tensor(row["relevance"]), expected.relevance[0, j, :n + j],
                                   atol=1e-5, rtol=1e-4)
