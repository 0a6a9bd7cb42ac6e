"""LLaVA-NeXT adapter (LlavaNextForConditionalGeneration): LLaVA's CLIP vision tower, projector and
Llama / Mistral decoder (models.llava), on images of any resolution cut into tiles.

Images, as LlavaNextImageProcessor returns them: pixel_values [n_images, n_tiles, C, S, S] (S the
tower's image size; the tiles past an image's own count are the processor's batch padding, unused)
and image_sizes [n_images, 2], each image's (height, width) before processing. Tile 0 of an image is
its base tile, the whole image resized to S x S; the next rows x cols tiles cut, row-major, its
high-resolution canvas: the image resized into the pinpoint of `image_grid_pinpoints` that keeps it
largest, padded to that pinpoint. The tower runs on every used tile (h x w = S / patch features each,
the CLS token dropped), then the projector. The image's tokens: the base tile's h x w features, then
the canvas's features as one [rows h, cols w] grid, unpadded (the rows or columns that cover only
the padding dropped, HF's unpad_image) and with the learned `image_newline` embedding after each of
its rows (R rows of C features and 1 newline: h w + R (C + 1) tokens).

Rules: tower, projector and decoder as in LLaVA. The tiling, the unpadding and the concatenation are
copies: relevance follows each feature to its tile and patch unchanged, and the dropped features get
none. `image_newline` is a parameter: at its positions of the merged sequence it is a constant, like
a bias, which takes the relevance that reaches it (it stays in `relevance` and in the image total)
and passes none to the image.

Maps, per image: `image_pixel_relevance` [rows S, cols S] over the high-resolution canvas (its
padding included: the tower sees those pixels, and attention carries relevance to them), and
`image_base_pixel_relevance` [S, S] over the base tile; the image's pixel relevance is the sum over
both maps. Patches alike ([rows h, cols w] and [h, w]). Tokens: `image_token_relevance` [R, C + 1]
(the unpadded canvas, each row's newline token last) and `image_base_token_relevance` [h, w].
"""

from __future__ import annotations

import torch

from lrp_triton.models.base import Adapter, VisionLanguageParts, positions_from_zero
from lrp_triton.models.llava import ADAPTER as LLAVA, patch_rows
from lrp_triton.models.qwen2_vl import text_max_length


def canvas_layout(config, size) -> tuple[int, int, int, int]:
    """(rows, cols) of canvas tiles and (R, C), the canvas feature grid [rows h, cols w] once unpadded,
    of an image of `size` = (height, width): the model's own functions, run on an index grid (imported
    here: HF's modeling module pulls in torch._dynamo and Triton, which `import lrp_triton` must not)."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    vision = config.vision_config
    rows, cols = get_anyres_image_grid_shape(list(size), config.image_grid_pinpoints, vision.image_size)
    side = vision.image_size // vision.patch_size
    kept = unpad_image(torch.zeros(1, rows * side, cols * side), list(size))
    return rows, cols, kept.shape[1], kept.shape[2]


def check_grid(pixel_values: torch.Tensor, image_sizes, config) -> torch.Tensor:
    """image_sizes as long [n_images, 2] after checking them and pixel_values [n_images, n_tiles, C, S, S]
    against each other and the tower (a ValueError naming the fix)."""
    vision = config.vision_config
    size, channels = vision.image_size, getattr(vision, "num_channels", 3)
    expected = f"float [n_images, n_tiles, {channels}, {size}, {size}] with image_sizes [n_images, 2]"
    if (pixel_values.dim() != 5 or not pixel_values.is_floating_point() or pixel_values.shape[0] == 0
            or tuple(pixel_values.shape[2:]) != (channels, size, size)):
        raise ValueError(f"attribute: LLaVA-NeXT's pixel_values must be {expected} (each image's base tile and "
                         f"high-resolution tiles, as LlavaNextImageProcessor returns them), got "
                         f"{tuple(pixel_values.shape)} {pixel_values.dtype}")
    if image_sizes is None:
        raise ValueError("attribute: LLaVA-NeXT needs image_sizes [n_images, 2] (each image's height and width "
                         "before processing, as the processor returns them) with pixel_values")
    sizes = torch.as_tensor(image_sizes, device=pixel_values.device)
    if (sizes.dim() != 2 or tuple(sizes.shape) != (pixel_values.shape[0], 2) or sizes.is_floating_point()
            or sizes.dtype == torch.bool or (sizes <= 0).any()):
        raise ValueError(f"attribute: image_sizes must be positive integers [n_images, 2] = "
                         f"[{pixel_values.shape[0]}, 2] (height, width of each image of pixel_values), got "
                         f"{tuple(sizes.shape)} {sizes.dtype}")
    for i, hw in enumerate(sizes.tolist()):
        rows, cols, _, _ = canvas_layout(config, hw)
        if 1 + rows * cols > pixel_values.shape[1]:
            raise ValueError(f"attribute: image {i} of size {hw} takes 1 + {rows} x {cols} tiles at "
                             f"image_grid_pinpoints {config.image_grid_pinpoints}, but pixel_values holds "
                             f"{pixel_values.shape[1]} per image; pass the processor's pixel_values and image_sizes")
    return sizes.long()


def image_maps(values: torch.Tensor, sizes: torch.Tensor, level: str, config, base: bool) -> list[torch.Tensor]:
    """Per image, the canvas map (or, `base`, the base tile's) of "pixel" values [..., n_images, n_tiles,
    C, S, S] (summed over channels), "patch" values [..., n_used_tiles * h * w] (the tower's patches, used
    tiles in order) or "token" values [..., n_image_tokens] (see the module docstring)."""
    side = config.vision_config.image_size // config.vision_config.patch_size
    layouts = [canvas_layout(config, hw) for hw in sizes.tolist()]
    lead = values.shape[:-5] if level == "pixel" else values.shape[:-1]
    if level == "pixel":
        out = []
        for i, (rows, cols, _, _) in enumerate(layouts):
            tiles = values[..., i, :1 + rows * cols, :, :, :].sum(-3)  # [..., tiles, S, S]
            if base:
                out.append(tiles[..., 0, :, :])
                continue
            s = tiles.shape[-1]
            canvas = tiles[..., 1:, :, :].reshape(*lead, rows, cols, s, s).transpose(-3, -2)
            out.append(canvas.reshape(*lead, rows * s, cols * s))
        return out
    if level == "patch":
        chunks = values.split([(1 + rows * cols) * side * side for rows, cols, _, _ in layouts], dim=-1)
        out = []
        for chunk, (rows, cols, _, _) in zip(chunks, layouts):
            if base:
                out.append(chunk[..., :side * side].reshape(*lead, side, side))
                continue
            canvas = chunk[..., side * side:].reshape(*lead, rows, cols, side, side).transpose(-3, -2)
            out.append(canvas.reshape(*lead, rows * side, cols * side))
        return out
    chunks = values.split([side * side + r * (c + 1) for _, _, r, c in layouts], dim=-1)
    return [chunk[..., :side * side].reshape(*lead, side, side) if base
            else chunk[..., side * side:].reshape(*lead, r, c + 1) for chunk, (_, _, r, c) in zip(chunks, layouts)]


def tokens_per_image(sizes: torch.Tensor, config) -> list[int]:
    side = config.vision_config.image_size // config.vision_config.patch_size
    return [side * side + r * (c + 1) for _, _, r, c in (canvas_layout(config, hw) for hw in sizes.tolist())]


def pixel_layout(pixels: torch.Tensor, sizes: torch.Tensor, config) -> list[torch.Tensor]:
    """Per image its canvas [C, rows S, cols S] of pixel values: the layout of `image_pixel_relevance`."""
    out = []
    for i, hw in enumerate(sizes.tolist()):
        rows, cols, _, _ = canvas_layout(config, hw)
        tiles = pixels[i, 1:1 + rows * cols]  # [tiles, C, S, S]
        c, s = tiles.shape[1], tiles.shape[-1]
        out.append(tiles.reshape(rows, cols, c, s, s).permute(2, 0, 3, 1, 4).reshape(c, rows * s, cols * s))
    return out


def vision_language(model) -> VisionLanguageParts:
    config = model.config
    inner = model.model
    if config.vision_feature_select_strategy != "default":
        raise NotImplementedError(f"LLaVA-NeXT adapter: vision_feature_select_strategy "
                                  f"{config.vision_feature_select_strategy!r}: only 'default' (the CLS token dropped) "
                                  f"lays out in HF's tile grid; 'full' is not supported")

    def image_features(pixel_values, sizes):
        features = inner.get_image_features(pixel_values=pixel_values, image_sizes=sizes, return_dict=True)
        return torch.cat(list(features.pooler_output))

    return VisionLanguageParts(
        text_model=inner.language_model, patch_embedding=inner.vision_tower.embeddings.patch_embedding,
        image_token_id=config.image_token_id, image_features=image_features,
        position_ids=lambda ids, types, grid, mask: positions_from_zero(config, mask),
        image_maps=lambda values, sizes, level: image_maps(values, sizes, level, config, base=False),
        base_maps=lambda values, sizes, level: image_maps(values, sizes, level, config, base=True),
        tokens_per_image=lambda sizes: tokens_per_image(sizes, config),
        patch_dim=config.vision_config.patch_size ** 2 * getattr(config.vision_config, "num_channels", 3),
        image_grid=lambda pixels, image_sizes: check_grid(pixels, image_sizes, config), patch_rows=patch_rows,
        pixel_layout=lambda pixels, sizes: pixel_layout(pixels, sizes, config))


ADAPTER = Adapter(
    family="LLaVA-NeXT",
    model_types=("llava_next",),
    replacements={**LLAVA.replacements,
                  "LlavaNextMultiModalProjector": LLAVA.replacements["LlavaMultiModalProjector"]},
    kind="vision_language",
    layers_attrs=("language_model.layers",),
    max_length=text_max_length,
    vision_language_of=vision_language,
)
