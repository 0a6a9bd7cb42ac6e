"""Idefics3 and SmolVLM adapters (Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration): a
SigLIP-like vision transformer, a pixel-shuffle connector, and a Llama decoder. SmolVLM is Idefics3 with its
own class names (and processor): one adapter each, the same parts.

Vision transformer (Idefics3VisionTransformer): the patch convolution (with bias; epsilon rule: the exact
gradient), learned position embeddings added (epsilon rule; a sub-image of another size than the tower's
image_size, or one padded under `pixel_attention_mask`, reads them at bucketed fractional coordinates:
index arithmetic, no rule), pre-norm layers as SigLIP's (LayerNorm: std held constant; fc2(act(fc1(x)))
with GELU-tanh: identity rule; non-causal attention, the padded patches of `pixel_attention_mask` masked
as keys), post_layernorm.
Connector: pixel shuffle, each s x s block of patches (s = scale_factor) concatenated into one vector, a
permutation of the values (relevance moves with them: nothing to replace), then the bias-free linear
`modality_projection.proj` (epsilon rule).
Decoder: Llama (RMSNorm identity, gated MLP identity + uniform, causal attention), with 1-D positions
over each row's real tokens, as for the text decoders.

Images: pixel_values [batch, n_sub_images, C, H, W] as the processor returns them: each image split into
rows x cols tiles plus a downscaled global view (or the global view alone), every sub-image square at
max_image_size, zero-filled slots padding rows with fewer sub-images (dropped, as the model drops them:
a sub-image whose values are all 0). `pixel_attention_mask` [batch, n_sub_images, H, W] (1 = a real
pixel) is taken as the processor returns it. Each real sub-image gives (H / p / s) x (W / p / s) image
tokens, sub-images in order (row after row of the batch, then slot after slot).
Maps: one per sub-image (the tower's inputs: an image's tiles row-major, then its global view): pixels
[H, W] (summed over channels), patches [H / p, W / p], tokens [H / p / s, W / p / s] (blocks row-major).
An image's relevance is the sum over its sub-images (`image_total`: over all image tokens of the row);
`tile_canvas` stitches one image's tile maps into its canvas [rows * H, cols * W].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lrp_triton.models.base import Adapter, VisionLanguageParts, layer_norm, plain_mlp_named, positions_from_zero
from lrp_triton.models.llama import ADAPTER as LLAMA
from lrp_triton.models.llava import patch_rows
from lrp_triton.models.qwen2_vl import text_max_length


class LRPModalityProjection(nn.Module):
    """The connector's `Idefics3SimpleMLP`: one bias-free linear layer `proj(x)` (epsilon rule: the exact
    gradient). A layer of its own only because its class name asks for a rule; it computes the same."""

    def __init__(self, proj: nn.Linear):
        super().__init__()
        self.proj = proj

    @classmethod
    def from_hf(cls, module, options):
        return cls(module.proj)

    def forward(self, x):
        return self.proj(x)


@dataclass(frozen=True)
class SubImages:
    """The driver's image grid for Idefics3 / SmolVLM (see the module docstring): the slots [batch, n] of
    pixel_values, the flat indices of the real (not all-zero) sub-images, their patch grid (h, w), the
    scale factor s, and the pixel_attention_mask as given (or None)."""

    slots: tuple[int, int]
    real: torch.Tensor
    patches: tuple[int, int]
    scale: int
    pixel_attention_mask: torch.Tensor | None


def sub_images(pixel_values: torch.Tensor, image_sizes, pixel_attention_mask, config) -> SubImages:
    """Checks pixel_values (and pixel_attention_mask) against the model (a ValueError naming the shape and
    the fix) and returns their SubImages."""
    if image_sizes is not None:
        raise ValueError(f"attribute: image_sizes does not apply to {config.model_type} models: their images are "
                         "pixel_values [batch, n_sub_images, C, H, W] with pixel_attention_mask")
    vision = config.vision_config
    p, s, channels = vision.patch_size, config.scale_factor, vision.num_channels
    expected = f"[batch, n_sub_images, {channels}, H, W] (H = W, a multiple of patch_size x scale_factor = {p * s})"
    if pixel_values.dim() == 4:
        raise ValueError(f"attribute: pixel_values must be {expected}, as the processor returns them; got "
                         f"{tuple(pixel_values.shape)}: add the sub-image axis (pixel_values[:, None])")
    shape = tuple(pixel_values.shape)
    if (pixel_values.dim() != 5 or not pixel_values.is_floating_point() or 0 in shape or shape[2] != channels
            or shape[3] != shape[4] or shape[3] % (p * s)):
        raise ValueError(f"attribute: pixel_values must be float {expected}, got {shape} {pixel_values.dtype}")
    real = (pixel_values != 0).flatten(2).any(-1).flatten().nonzero().flatten()
    if len(real) == 0:
        raise ValueError("attribute: pixel_values hold no image: every sub-image is all zeros (padding)")
    if pixel_attention_mask is not None:
        mask = torch.as_tensor(pixel_attention_mask, device=pixel_values.device)
        if tuple(mask.shape) != (*shape[:2], *shape[3:]) or mask.is_floating_point() or \
                not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"attribute: pixel_attention_mask must be 0 / 1 [batch, n_sub_images, H, W] = "
                             f"{[*shape[:2], *shape[3:]]} (1 = a real pixel), got {tuple(mask.shape)} {mask.dtype}")
        if not mask.flatten(0, 1)[real].flatten(1).any(-1).all():
            raise ValueError("attribute: pixel_attention_mask masks every pixel of a sub-image that has pixel "
                             "values; a padding sub-image must be all zeros")
        pixel_attention_mask = mask
    h = shape[3] // p
    return SubImages(slots=shape[:2], real=real, patches=(h, h), scale=s, pixel_attention_mask=pixel_attention_mask)


def image_maps(values: torch.Tensor, grid: SubImages, level: str) -> list[torch.Tensor]:
    """Per real sub-image: "pixel" [..., batch, n, C, H, W] -> [..., H, W] (summed over channels); "patch"
    [..., n_patches] -> [..., h, w]; "token" [..., n_tokens] -> [..., h / s, w / s]."""
    if level == "pixel":
        return list(values.flatten(-5, -4).index_select(-4, grid.real).sum(-3).unbind(-3))
    h, w = grid.patches
    if level == "token":
        h, w = h // grid.scale, w // grid.scale
    return [chunk.reshape(*chunk.shape[:-1], h, w) for chunk in values.split(h * w, dim=-1)]


def tile_canvas(maps, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's sub-image maps (its rows x cols tiles row-major, then its global view; [..., H, W] each)
    -> (the tiles stitched into the resized image's canvas [..., rows * H, cols * W], the global view's map).
    An image shown unsplit (rows = cols = 0) has only its global view: the canvas is that map."""
    if len(maps) != rows * cols + 1:
        raise ValueError(f"tile_canvas: {rows} x {cols} tiles and a global view are {rows * cols + 1} maps, "
                         f"got {len(maps)}")
    if rows * cols == 0:
        return maps[0], maps[0]
    tiles = torch.stack(list(maps[:-1]), -3).unflatten(-3, (rows, cols))  # [..., rows, cols, H, W]
    canvas = tiles.movedim(-3, -2).flatten(-4, -3).flatten(-2, -1)  # [..., rows, H, cols, W] -> canvas
    return canvas, maps[-1]


def vision_language(model) -> VisionLanguageParts:
    config = model.config
    inner = model.model
    s = config.scale_factor

    def image_features(pixel_values, grid):
        out = inner.get_image_features(pixel_values=pixel_values, pixel_attention_mask=grid.pixel_attention_mask,
                                       return_dict=True)
        return torch.cat(list(out.pooler_output))

    vision = config.vision_config
    return VisionLanguageParts(
        text_model=inner.text_model, patch_embedding=inner.vision_model.embeddings.patch_embedding,
        image_token_id=config.image_token_id, image_features=image_features,
        position_ids=lambda ids, types, grid, mask: positions_from_zero(config, mask), image_maps=image_maps,
        tokens_per_image=lambda grid: [grid.patches[0] * grid.patches[1] // (s * s)] * len(grid.real),
        patch_dim=vision.patch_size ** 2 * vision.num_channels,
        image_grid=lambda pixels, image_sizes, pixel_attention_mask=None: sub_images(pixels, image_sizes,
                                                                                    pixel_attention_mask, config),
        patch_rows=patch_rows, image_inputs=("pixel_attention_mask",),
        pixel_layout=lambda pixels, grid: list(pixels.flatten(0, 1).index_select(0, grid.real.to(pixels.device))))


def idefics3_adapter(family: str, model_type: str, prefix: str) -> Adapter:
    return Adapter(
        family=family,
        model_types=(model_type,),
        replacements={"LayerNorm": layer_norm, f"{prefix}VisionMLP": plain_mlp_named("fc1", "activation_fn", "fc2"),
                      f"{prefix}SimpleMLP": LRPModalityProjection.from_hf, **LLAMA.replacements},
        kind="vision_language",
        layers_attrs=("text_model.layers",),
        max_length=text_max_length,
        vision_language_of=vision_language,
    )


ADAPTER = idefics3_adapter("Idefics3", "idefics3", "Idefics3")
SMOLVLM = idefics3_adapter("SmolVLM", "smolvlm", "SmolVLM")
ADAPTERS = (ADAPTER, SMOLVLM)
