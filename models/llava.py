"""LLaVA adapter (LlavaForConditionalGeneration): a CLIP vision tower, a multi-modal projector, and a
Llama or Mistral decoder.

Vision tower: CLIP's (models.clip.VISION's layers and rules: bias-free patch convolution, the class
embedding and learned positions, pre-norm layers with LayerNorm (std held constant), QuickGELU MLP
(identity rule), non-causal attention). LLaVA reads the hidden state at `vision_feature_layer`
(the input of that encoder layer; a list: those states concatenated over the hidden axis), without
the CLS token for vision_feature_select_strategy "default", with it for "full".
Projector: linear_2(act(linear_1(x))): epsilon rule on the linears, identity rule on the activation.
Decoder: Llama / Mistral (RMSNorm identity, gated MLP identity + uniform, causal attention), with
1-D positions over each row's real tokens, as for the text decoders.

Images: pixel_values [n_images, C, H, W] at the tower's image size; each image gives
(H / patch) x (W / patch) image tokens (+ 1, its CLS, for "full"), expanded in input_ids by the
processor (`image_token_id`). Maps: pixels [H, W] (summed over channels), patches and tokens over
the patch grid [H / patch, W / patch] (the CLS token of "full" is in `relevance` and the image
total, not in the token map).
"""

from __future__ import annotations

import torch

from lrp_triton.models.base import Adapter, VisionLanguageParts, plain_mlp_named, positions_from_zero
from lrp_triton.models.clip import REPLACEMENTS as CLIP_REPLACEMENTS
from lrp_triton.models.llama import ADAPTER as LLAMA
from lrp_triton.models.mistral import ADAPTER as MISTRAL
from lrp_triton.models.qwen2_vl import text_max_length


def fixed_grid(pixel_values: torch.Tensor, vision_config, image_sizes=None, family="llava") -> torch.Tensor:
    """[n_images, 3] = (1, H / patch, W / patch) per image, after checking pixel_values is float
    [n_images, C, H, W] at the tower's channels and image size (a ValueError naming the shape) and that
    no image_sizes came (LLaVA-NeXT's: every LLaVA image is one tile at the tower's size)."""
    if image_sizes is not None:
        raise ValueError(f"attribute: image_sizes does not apply to {family} models: each image is pixel_values "
                         "[channels, height, width] at the vision tower's image size (LLaVA-NeXT takes image_sizes)")
    size, patch = vision_config.image_size, vision_config.patch_size
    channels = getattr(vision_config, "num_channels", 3)
    expected = f"[n_images, {channels}, {size}, {size}]"
    if pixel_values.dim() == 3:
        raise ValueError(f"attribute: pixel_values must be {expected} (a batch of images, as the processor "
                         f"returns them), got {tuple(pixel_values.shape)}; add the image axis")
    if (pixel_values.dim() != 4 or not pixel_values.is_floating_point() or pixel_values.shape[0] == 0
            or tuple(pixel_values.shape[1:]) != (channels, size, size)):
        raise ValueError(f"attribute: pixel_values must be float {expected} (the vision tower's image size), got "
                         f"{tuple(pixel_values.shape)} {pixel_values.dtype}")
    row = torch.tensor([1, size // patch, size // patch], device=pixel_values.device)
    return row.expand(pixel_values.shape[0], 3).clone()


def image_maps(values: torch.Tensor, grid: torch.Tensor, level: str, with_cls: bool) -> list[torch.Tensor]:
    """Per image: "pixel" [..., n_images, C, H, W] -> [..., H, W] (summed over channels); "patch"
    [..., n_patches] and "token" [..., n_tokens] -> [..., h, w] (a "full" image's CLS token dropped)."""
    if level == "pixel":
        return list(values.sum(-3).unbind(-3))
    sizes = [int(h) * int(w) + (level == "token" and with_cls) for _, h, w in grid.tolist()]
    out = []
    for chunk, (_, h, w) in zip(values.split(sizes, dim=-1), grid.tolist()):
        out.append(chunk[..., int(with_cls and level == "token"):].reshape(*chunk.shape[:-1], h, w))
    return out


def patch_rows(conv_output: torch.Tensor) -> torch.Tensor:
    """The patch convolution's output [n_images, hidden, h, w] as rows [n_images * h * w, hidden]."""
    return conv_output.flatten(2).transpose(1, 2).flatten(0, 1)


def vision_language(model) -> VisionLanguageParts:
    config = model.config
    inner = model.model
    with_cls = config.vision_feature_select_strategy == "full"
    if config.vision_feature_select_strategy not in ("default", "full"):
        raise NotImplementedError(f"LLaVA adapter: vision_feature_select_strategy "
                                  f"{config.vision_feature_select_strategy!r} (known: 'default', 'full')")

    def image_features(pixel_values, grid):
        return torch.cat(list(inner.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output))

    return VisionLanguageParts(
        text_model=inner.language_model, patch_embedding=inner.vision_tower.embeddings.patch_embedding,
        image_token_id=config.image_token_id, image_features=image_features,
        position_ids=lambda ids, types, grid, mask: positions_from_zero(config, mask),
        image_maps=lambda values, grid, level: image_maps(values, grid, level, with_cls),
        tokens_per_image=lambda grid: [int(h) * int(w) + with_cls for _, h, w in grid.tolist()],
        patch_dim=config.vision_config.patch_size ** 2 * getattr(config.vision_config, "num_channels", 3),
        image_grid=lambda pixels, image_sizes: fixed_grid(pixels, config.vision_config, image_sizes),
        patch_rows=patch_rows, pixel_layout=lambda pixels, grid: list(pixels.unbind(0)))


ADAPTER = Adapter(
    family="LLaVA",
    model_types=("llava",),
    replacements={**CLIP_REPLACEMENTS, **LLAMA.replacements, **MISTRAL.replacements,
                  "LlavaMultiModalProjector": plain_mlp_named("linear_1", "act", "linear_2")},
    kind="vision_language",
    layers_attrs=("language_model.layers",),
    max_length=text_max_length,
    vision_language_of=vision_language,
)
