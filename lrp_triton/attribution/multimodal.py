"""Attribution of a vision-language model's logits (adapter kind "vision_language": Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, LLaVA, LLaVA-NeXT, Idefics3, SmolVLM, PaliGemma, Gemma 3).

One forward pass: the word embeddings (a relevance leaf), the vision tower on the pixel values (a
leaf) and its merger (`VisionLanguageParts.image_features`), the image embeddings put at the image
tokens (`masked_scatter`, as the model does: a copy, so each position's relevance goes to exactly
one of the two), the decoder on the merged sequence with the model's own position ids (3-D
multimodal rotary ids; Qwen3-VL: its DeepStack features added at the image tokens after the first
layers, their relevance counted at those tokens) and mask (PaliGemma's bidirectional prefix and
Gemma 3's bidirectional image blocks, from token_type_ids: `VisionLanguageParts.text_masks`), and
the language-model head at the explained positions. Then the backward of the explained scores,
several positions in one batched pass, as for text decoders (`core.one_backward_per_score`).

Read after each backward: token relevance of the merged sequence (`relevance`), of the word
embeddings (`text_relevance`), the pixel values * grad (summed over channels into one map per
image; LLaVA-NeXT: one over its high-resolution canvas, one over its base tile), and the patch
embeddings' relevance; see `VisionLanguageAttribution`.
"""

from __future__ import annotations

import torch

from lrp_triton.attribution.core import (OutputTap, applied_for_call, checkpointed, display_extras, frozen_eval, leaf,
                                         one_backward_per_score, output_size, per_score, stack_scores,
                                         token_names, token_relevance)
from lrp_triton.attribution.decoder import explained_scores
from lrp_triton.attribution.inputs import check_finite, check_text_inputs, integer_ids, model_device, model_dtype
from lrp_triton.attribution.result import VisionLanguageAttribution
from lrp_triton.attribution.targets import explained_positions, ids_per_position
from lrp_triton.backend import upcast


def check_images(model, parts, input_ids, pixel_values, image_grid_thw, mm_token_type_ids, image_sizes=None,
                 image_inputs=None):
    """(pixel_values in the model's dtype or None, image_grid_thw [n_images, 3] or None,
    mm_token_type_ids [B, N], the image rows): what the processor returns, checked against the image
    tokens of input_ids (one ValueError per mismatch, naming the fix). pixel_values: Qwen2-VL's
    flattened patches [n_patches, patch_dim] with image_grid_thw; a fixed-size tower's images
    [n_images, C, H, W] alone, LLaVA-NeXT's tiles [n_images, n_tiles, C, S, S] with image_sizes
    (`VisionLanguageParts.image_grid`, which returns the grid the other parts read); Idefics3's sub-images
    [batch, n_sub_images, C, H, W] with the other processor keys of `image_inputs` (pixel_attention_mask)."""
    device = model_device(model)
    image_inputs = {k: v for k, v in (image_inputs or {}).items() if v is not None}
    for name in image_inputs:
        if name not in parts.image_inputs:
            raise ValueError(f"attribute: {name} does not apply to {model.config.model_type} models")
    is_image = input_ids == parts.image_token_id
    if mm_token_type_ids is None:
        mm_token_type_ids = is_image.to(torch.long) * parts.mm_token_types["image"]
    else:
        mm_token_type_ids = torch.as_tensor(mm_token_type_ids, device=device)
        mm_token_type_ids = mm_token_type_ids[None] if mm_token_type_ids.dim() == 1 else mm_token_type_ids
        if tuple(mm_token_type_ids.shape) != tuple(input_ids.shape):
            raise ValueError(f"attribute: mm_token_type_ids shape {tuple(mm_token_type_ids.shape)} does not match "
                             f"input_ids {tuple(input_ids.shape)}")
        mm_token_type_ids = integer_ids(mm_token_type_ids, "mm_token_type_ids", str(tuple(input_ids.shape)))
        if not torch.equal(mm_token_type_ids == parts.mm_token_types["image"], is_image):
            raise ValueError("attribute: mm_token_type_ids must mark exactly the image tokens of input_ids "
                             f"(id {parts.image_token_id}) as images; videos are not supported")
    if parts.image_grid is not None:
        pixels, grid = fixed_size_images(model, parts, pixel_values, image_grid_thw, image_sizes, is_image,
                                         image_inputs)
    else:
        if image_sizes is not None:
            raise ValueError(f"attribute: image_sizes does not apply to {model.config.model_type} models (their "
                             "images are described by image_grid_thw)")
        pixels, grid = flattened_patches(parts, pixel_values, image_grid_thw, is_image, device)
    if pixels is None:
        return None, None, mm_token_type_ids, []
    per_image = parts.tokens_per_image(grid)
    per_row = is_image.sum(-1).tolist()
    if sum(per_image) != sum(per_row):
        given = (f"pixel_values' {len(per_image)} images give" if parts.image_grid is not None
                 else f"image_grid_thw {grid.tolist()} gives")
        raise ValueError(f"attribute: input_ids hold {sum(per_row)} image tokens but {given} {sum(per_image)}; "
                         f"pass the processor's input_ids with its images")
    rows, row, seen = [], 0, 0
    for n in per_image:  # images in order, row after row
        while per_row[row] == seen:
            row, seen = row + 1, 0
        if seen + n > per_row[row]:
            raise ValueError(f"attribute: an image's {n} tokens straddle rows {row} and {row + 1} of input_ids")
        rows.append(row)
        seen += n
    dtype = model_dtype(model)
    check_finite(pixels, "pixel_values")
    pixels = pixels.to(dtype)
    check_finite(pixels, "pixel_values", converted=dtype)
    return pixels, grid, mm_token_type_ids, rows


def flattened_patches(parts, pixel_values, image_grid_thw, is_image, device):
    """Qwen2-VL's images: (pixel_values [n_patches, patch_dim], image_grid_thw [n_images, 3]), or (None, None)."""
    if pixel_values is None or image_grid_thw is None:
        if pixel_values is not None or image_grid_thw is not None or is_image.any():
            raise ValueError("attribute: image tokens need both pixel_values and image_grid_thw (as the processor "
                             "returns them), and pixel_values / image_grid_thw need image tokens in input_ids")
        return None, None
    grid = torch.as_tensor(image_grid_thw, device=device)
    if grid.dim() != 2 or grid.shape[-1] != 3 or grid.shape[0] == 0 or grid.is_floating_point() or (grid <= 0).any():
        raise ValueError(f"attribute: image_grid_thw must be positive integers [n_images, 3] (t, h, w patches per "
                         f"image), got {tuple(grid.shape)} {grid.dtype}")
    pixels = torch.as_tensor(pixel_values, device=device)
    n_patches = int(grid.prod(-1).sum())
    if pixels.dim() != 2 or not pixels.is_floating_point() or tuple(pixels.shape) != (n_patches, parts.patch_dim):
        raise ValueError(f"attribute: pixel_values must be float [n_patches, patch_dim] = ({n_patches}, "
                         f"{parts.patch_dim}) for image_grid_thw {grid.tolist()} (the image processor's flattened "
                         f"patches), got {tuple(pixels.shape)} {pixels.dtype}")
    try:  # each image's patches must fill whole merge blocks
        parts.image_maps(torch.zeros(n_patches, device=device), grid, "patch")
    except RuntimeError as error:
        raise ValueError(f"attribute: image_grid_thw {grid.tolist()} does not fit the model's patch merging "
                         f"({error})") from None
    return pixels, grid


def fixed_size_images(model, parts, pixel_values, image_grid_thw, image_sizes, is_image, image_inputs):
    """A fixed-size tower's images: (pixel_values [n_images, C, H, W] or LLaVA-NeXT's tiles, their grid),
    or (None, None)."""
    if image_grid_thw is not None:
        raise ValueError(f"attribute: image_grid_thw does not apply to {model.config.model_type} models: their "
                         "images are pixel_values [n_images, channels, height, width]")
    if pixel_values is None:
        if is_image.any():
            raise ValueError(f"attribute: input_ids hold image tokens (id {parts.image_token_id}) but no "
                             "pixel_values were given")
        return None, None
    pixels = torch.as_tensor(pixel_values, device=model_device(model))
    if not is_image.any():
        raise ValueError("attribute: pixel_values need image tokens in input_ids (the processor's input_ids)")
    return pixels, parts.image_grid(pixels, image_sizes, **image_inputs)


def check_token_types(model, parts, token_type_ids, ids):
    """token_type_ids [B, N] (integers) for a model whose decoder mask reads them (`parts.text_masks`); None
    for the others, which accept only all-0 segment ids (a tokenizer's), or when absent."""
    if token_type_ids is None:
        return None
    types = torch.as_tensor(token_type_ids, device=ids.device)
    types = types[None] if types.dim() == 1 else types
    if tuple(types.shape) != tuple(ids.shape):
        raise ValueError(f"attribute: token_type_ids shape {tuple(types.shape)} does not match input_ids "
                         f"{tuple(ids.shape)}")
    types = integer_ids(types, "token_type_ids", str(tuple(ids.shape)))
    if parts.text_masks is not None:
        return types
    if bool(types.ne(0).any()):  # a tokenizer's single segment, as a processor may return it: ignored
        raise ValueError(f"attribute: token_type_ids must be all 0 for {model.config.model_type} models (a "
                         "tokenizer's single segment, ignored: the decoder has no token-type embedding); image "
                         "tokens are marked by the image token id (Qwen2-VL: mm_token_type_ids)")
    return None


def explain_vision_language(model, adapter, options, *, input_ids, attention_mask, pixel_values, image_grid_thw,
                            mm_token_type_ids, target, position, contrast, checkpoint, tokenizer,
                            progress, image_sizes=None, pixel_attention_mask=None,
                            token_type_ids=None) -> VisionLanguageAttribution:
    """See `lrp_triton.attribute` for the arguments; `position` defaults to the last token there."""
    parts = adapter.vision_language_of(model)
    head = adapter.head(model)
    inputs = check_text_inputs(model, input_ids, None, attention_mask, adapter.max_length(model.config))
    ids, mask = inputs.input_ids, inputs.attention_mask
    token_types = check_token_types(model, parts, token_type_ids, ids)
    pixels, grid, mm_types, image_rows = check_images(model, parts, ids, pixel_values, image_grid_thw,
                                                      mm_token_type_ids, image_sizes,
                                                      {"pixel_attention_mask": pixel_attention_mask})
    is_image = ids == parts.image_token_id
    positions, several = explained_positions(position, mask)
    vocab = output_size(head)
    targets = ids_per_position(target, "target", positions, several, vocab)
    contrasts = ids_per_position(contrast, "contrast", positions, several, vocab, complete=True)
    layers = adapter.layers(model)

    with frozen_eval(model), applied_for_call(model, options), checkpointed(layers, checkpoint), \
            OutputTap(parts.patch_embedding if pixels is not None else None, as_leaf=False) as patches:
        embeds = leaf(adapter.embeddings(model).word(ids))
        pixel_leaf = None if pixels is None else leaf(pixels)
        with torch.enable_grad():
            merged, deepstack, extra = embeds, [], {}
            if pixel_leaf is not None:
                image_embeds = parts.image_features(pixel_leaf, grid)
                if parts.deepstack:
                    image_embeds, deepstack = image_embeds[0], [d.to(embeds.dtype) for d in image_embeds[1]]
                    extra = {"visual_pos_masks": is_image, "deepstack_visual_embeds": deepstack}
                merged = embeds.masked_scatter(is_image[..., None], image_embeds.to(embeds.dtype))
            position_ids = parts.position_ids(ids, mm_types, grid, mask)
            text_mask = mask if parts.text_masks is None else parts.text_masks(merged, mask, position_ids,
                                                                               token_types)
            hidden = parts.text_model(inputs_embeds=merged, attention_mask=text_mask, position_ids=position_ids,
                                      use_cache=False, **extra)[0]
            scores, targets = explained_scores(model, adapter, options, head, hidden, positions, targets, contrasts)

        def read():
            out = {"relevance": token_relevance(merged), "text_relevance": token_relevance(embeds)}
            for features in deepstack:  # DeepStack: relevance entering the vision tower at the image tokens
                out["relevance"][is_image] += token_relevance(features)
            if pixel_leaf is not None:
                grad = pixel_leaf.grad if pixel_leaf.grad is not None else torch.zeros_like(pixel_leaf)
                out["pixels"] = upcast(pixel_leaf) * upcast(grad)
                first = patches.first
                out["patches"] = token_relevance(parts.patch_rows(first),
                                                 None if first.grad is None else parts.patch_rows(first.grad))
            return out

        leaves = [embeds] if pixel_leaf is None else [embeds, pixel_leaf]
        results = one_backward_per_score(scores, leaves, read, progress,
                                         watched=[merged, *deepstack, *patches.tensors])
    maps = image_fields(parts, grid, [{k: r.pop(k) for k in ("pixels", "patches") if k in r} for r in results],
                        several)
    fields = stack_scores(results, several)
    relevance = fields["relevance"]
    image = is_image[:, None] if several else is_image
    if pixels is not None:
        tokens = relevance.movedim(-1, 1)[is_image].movedim(0, -1)  # [(P,) n_image_tokens], images in order
        maps["image_token_relevance"] = parts.image_maps(tokens, grid, "token")
        if parts.base_maps is not None:
            maps["image_base_token_relevance"] = parts.base_maps(tokens, grid, "token")
    return VisionLanguageAttribution(
        **fields, **maps, image_mask=is_image, image_rows=image_rows,
        image_total=(relevance * image).sum(-1), text_total=(relevance * ~image).sum(-1),
        target=per_score(targets, several), logit=per_score(upcast(scores.detach()), several),
        position=per_score(positions, several), contrast=per_score(contrasts, several), input_ids=ids,
        attention_mask=mask, mode=options.mode, model_type=model.config.model_type,
        model_name=str(getattr(model, "name_or_path", "") or ""), extras=display_extras(tokenizer),
        **token_names(tokenizer, ids, per_score(targets, several), per_score(contrasts, several)))


def image_fields(parts, grid, per_score_maps: list[dict], several: bool) -> dict:
    """The per-image pixel and patch maps ([P, ...] first when several scores) from each score's pixel
    relevance (the pixel values' shape) and patch relevance [n_patches]."""
    if grid is None:
        return {}
    out = {}
    for key, level, name in (("pixels", "pixel", "pixel_relevance"), ("patches", "patch", "patch_relevance")):
        flat = [m[key].detach() for m in per_score_maps]
        values = torch.stack(flat) if several else flat[0]
        out[f"image_{name}"] = parts.image_maps(values, grid, level)
        if parts.base_maps is not None:  # LLaVA-NeXT: the base tiles' maps beside the canvases'
            out[f"image_base_{name}"] = parts.base_maps(values, grid, level)
    return out
