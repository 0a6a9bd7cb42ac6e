"""`lrp-triton explain` for a vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA, LLaVA-NeXT):
`--image FILE` (PNG / JPEG, read with Pillow: the optional `vision` extra), the prompt, and the model's
processor.

    lrp-triton explain --model ./qwen2-vl --image cat.png --prompt "What animal is this?" --out cat.html

The inputs are what the model's processor returns (`AutoProcessor` from the model directory): each
image placeholder of the prompt (the processor's image token; without any, one per image is put
before the prompt, between the model's vision start / end tokens) becomes as many image tokens as the
image gives. The processor is used whenever `AutoProcessor` can build it (LLaVA's and LLaVA-NeXT's
can, with Pillow's image processors, when the model directory holds their files). When it cannot
(Qwen2-VL's and Qwen3-VL's need torchvision for their video processors), the image processor and the
tokenizer build the same inputs: each placeholder repeated `tokens_per_image` times (the adapter's
count for the image's grid), the image tokens marked in `mm_token_type_ids` (Qwen's).

The heatmaps draw each image as the model saw it where the adapter lays its pixel values out as the
map (`VisionLanguageParts.pixel_layout`: LLaVA's resized and centre-cropped image, LLaVA-NeXT's
high-resolution canvas, resized and padded, Idefics3's sub-images), the processor's normalisation undone; Qwen's
flattened patches are drawn on the image as read (their processors resize the whole image).
`--generate N` generates greedily, then explains every generated token in one forward pass and one
backward pass per token (`attribute` with several positions), as for text models. The heatmaps
(`--out` .html / .png) show each image with its relevance overlaid above the text (Idefics3, which
splits an image into sub-images: each sub-image as the model saw it, with its own map).
"""

from __future__ import annotations

import dataclasses
import sys

from lrp_triton.cli import CLIError, report, token_id
from lrp_triton.cli_placement import device_map_kwargs, placed


def read_images(paths) -> list:
    """The --image files as RGB PIL images (a CLIError naming the fix for a missing, unreadable or non-image file)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise CLIError("--image needs Pillow to read images; install it with `pip install Pillow` "
                       "(or `pip install 'lrp_triton[vision]'`)") from None
    images = []
    for path in paths:
        try:
            with Image.open(path.expanduser()) as image:
                images.append(image.convert("RGB"))
        except FileNotFoundError:
            raise CLIError(f"--image {path}: no such file; pass a PNG or JPEG file") from None
        except UnidentifiedImageError:
            raise CLIError(f"--image {path}: not an image Pillow can read; pass a PNG or JPEG file") from None
        except OSError as exc:
            raise CLIError(f"--image {path}: cannot read it ({exc.strerror or exc}); pass a readable image") from None
    return images


def load_processor(source):
    """(processor or None, image processor or None, tokenizer) from the model directory / id."""
    import transformers

    try:
        processor = transformers.AutoProcessor.from_pretrained(source.path, local_files_only=source.offline is not None)
    except (OSError, ValueError, TypeError, AttributeError, ImportError):  # e.g. no torchvision for a video processor
        processor = None
    if processor is not None and hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
        return processor, processor.image_processor, processor.tokenizer
    fix = "the model directory needs its processor files (processor.save_pretrained(dir))"
    tokenizer = source.load(transformers.AutoTokenizer.from_pretrained, "tokenizer", fix,
                            errors=(OSError, ValueError, TypeError))
    try:
        image_processor = transformers.AutoImageProcessor.from_pretrained(
            source.path, local_files_only=source.offline is not None)
    except (OSError, ValueError, TypeError, ImportError):
        image_processor = None
    return None, image_processor, tokenizer


def prompt_text(prompt: str, config, tokenizer, image_token: str, n_images: int) -> str:
    """The prompt with one image placeholder per image (put first, between the vision start / end tokens,
    when the prompt has none)."""
    found = prompt.count(image_token)
    if found == n_images:
        return prompt
    if found:
        raise CLIError(f"the prompt holds {found} image placeholder(s) {image_token!r} but {n_images} --image "
                       f"file(s) were given; pass one placeholder per image, or none (then each image goes first)")
    marks = [getattr(config, f"vision_{end}_token_id", None) for end in ("start", "end")]
    start, end = ("" if i is None else tokenizer.convert_ids_to_tokens(int(i)) for i in marks)
    return "".join(start + image_token + end for _ in range(n_images)) + prompt


def build_inputs(processor, image_processor, tokenizer, parts, config, images, prompt: str) -> dict:
    """The model's inputs for `images` and `prompt`, as the processor returns them (see the module docstring)."""
    image_token = getattr(processor, "image_token", None) or tokenizer.convert_ids_to_tokens(int(parts.image_token_id))
    text = prompt_text(prompt, config, tokenizer, image_token, len(images))
    if processor is not None:
        return dict(processor(images=images or None, text=[text], return_tensors="pt"))
    out = {}
    if images:
        if image_processor is None:
            raise CLIError("could not load the model's processor or its image processor; save them in the model "
                           "directory (processor.save_pretrained(dir)), and install torchvision if the processor "
                           "needs it")
        out = dict(image_processor(images=images, return_tensors="pt"))
        grid = out.get("image_grid_thw")
        if grid is None:  # a fixed-size tower's images (LLaVA; LLaVA-NeXT's tiles with their image_sizes)
            grid = parts.image_grid(out["pixel_values"], out.get("image_sizes"))
        counts = iter(parts.tokens_per_image(grid))
        pieces = text.split(image_token)
        text = pieces[0] + "".join(image_token * next(counts) + piece for piece in pieces[1:])
    encoded = tokenizer(text, return_tensors="pt")
    ids = encoded["input_ids"]
    out.update(input_ids=ids, attention_mask=encoded["attention_mask"])
    if "image_grid_thw" in out or not images:  # Qwen2-VL's token types, as its processor marks them
        out["mm_token_type_ids"] = (ids == parts.image_token_id).long() * parts.mm_token_types["image"]
    return out


def seen_images(parts, image_processor, inputs: dict, images: list) -> list:
    """The images to draw the maps on: as the model saw them, [C, H, W] in the maps' layout with the
    image processor's normalisation undone, where the adapter lays its pixel values out
    (`pixel_layout`); else `images` as read."""
    import torch

    if not images or parts.pixel_layout is None:
        return images
    pixels = inputs["pixel_values"].detach().float().cpu()
    grid = inputs.get("image_grid_thw")
    if grid is None:
        grid = parts.image_grid(pixels, inputs.get("image_sizes"))
    out = []
    for image in parts.pixel_layout(pixels, grid):
        if getattr(image_processor, "do_normalize", False):
            mean, std = (torch.as_tensor(getattr(image_processor, k), dtype=image.dtype).reshape(-1, 1, 1)
                         for k in ("image_mean", "image_std"))
            image = image * std + mean  # the rescaled image ([0, 1] for 8-bit images): the overlay scales it
        out.append(image)
    return out


def generate(model, inputs: dict, n: int, tokenizer):
    """Greedy generation of up to n tokens; returns the full sequence [1, L]."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False, pad_token_id=pad)


def explain_vision(args, source, config, adapter, device, dtype, prompt, status) -> int:
    """`lrp-triton explain` on a vision-language model (see the module docstring); 0."""
    import torch
    import transformers

    from lrp_triton import attribute
    from lrp_triton.console import ProgressBar
    from lrp_triton.models import supported_model_types

    status.clear()
    if adapter.kind != "vision_language":
        raise CLIError(f"--image needs a vision-language model (model type "
                       f"{', '.join(supported_model_types('vision_language'))}); --model {source.shown} is of type "
                       f"{config.model_type!r}, a text model: drop --image")
    images = read_images(args.image)
    placement = device_map_kwargs(args)  # {} or from_pretrained's device_map=... (lrp_triton.cli_placement)
    status.set(f"Loading {source.shown}: processor and weights, on {args.device_map or device} ...")
    try:
        processor, image_processor, tokenizer = load_processor(source)
        model = source.load(transformers.AutoModelForImageTextToText.from_pretrained, "weights",
                            "the model directory needs its weights (model.save_pretrained(dir))", dtype=dtype,
                            **placement)
    finally:
        status.clear()
    model = placed(model, device, placement)
    parts = adapter.vision_language_of(model)
    built = build_inputs(processor, image_processor, tokenizer, parts, config, images, prompt)
    shown = seen_images(parts, image_processor, built, images)
    inputs = {k: v.to(device) for k, v in built.items() if k != "labels"}  # (PaliGemma's labels: for training)
    n_prompt = inputs["input_ids"].shape[1]
    limit = adapter.max_length(config)
    if limit is not None and n_prompt + (args.generate or 0) > limit:
        raise CLIError(f"the prompt and its images are {n_prompt} tokens (+ {args.generate or 0} to generate), but "
                       f"{source.shown} takes at most {limit}; shorten the prompt or pass smaller images")
    if not -n_prompt <= args.position < n_prompt:
        raise CLIError(f"--position {args.position} is outside the prompt, which has {n_prompt} tokens; use "
                       f"-{n_prompt} to {n_prompt - 1}")
    vocab = config.get_text_config().vocab_size
    target = None if args.target is None else token_id(tokenizer, args.target, "--target", vocab)
    contrast = None if args.contrast is None else token_id(tokenizer, args.contrast, "--contrast", vocab)
    common = dict(mode=args.mode, checkpoint=args.checkpoint, backend=args.backend, tokenizer=tokenizer)
    if args.generate:
        full = generate(model, inputs, args.generate, tokenizer)
        generated = full[0, n_prompt:].tolist()
        positions = list(range(n_prompt - 1, n_prompt - 1 + len(generated)))
        explained = dict(inputs, input_ids=full[:, :-1], attention_mask=torch.ones_like(full[:, :-1]))
        if "mm_token_type_ids" in inputs:  # the generated tokens are text
            types = inputs["mm_token_type_ids"]
            explained["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, len(generated) - 1)], 1)
        if "token_type_ids" in inputs:  # PaliGemma / Gemma 3: the generated tokens' type, as the model's generate
            types = inputs["token_type_ids"]
            explained["token_type_ids"] = torch.cat(
                [types, types.new_full((1, len(generated) - 1), parts.generated_token_type)], 1)
        bar = ProgressBar(len(positions), "explaining")
        result = attribute(model, **explained, position=positions, target=generated,
                           contrast=None if contrast is None else [contrast] * len(positions),
                           progress=lambda done, total: bar.update(done), **common)
        bar.close()
        print(f"generated: {tokenizer.decode(generated)!r}")
    else:
        status.set(f"Explaining with {args.mode} ...")
        result = attribute(model, **inputs, position=args.position, target=target, contrast=contrast, **common)
        status.clear()
    shares = ", ".join(f"{share:.0%}" for share in result.image_share.flatten().tolist())
    print(f"image share of the relevance: {shares}", file=sys.stderr)
    return report(dataclasses.replace(result, model_name=source.shown, images=shown or None), args)
