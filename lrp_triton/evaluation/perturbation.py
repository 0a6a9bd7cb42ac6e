"""Perturbed copies of one input, built as one batch: tokens replaced or deleted, image patches filled.

A perturbation takes one example and a boolean matrix `perturbed` [V, F] (row v: which of the F
input features variant v perturbs) and returns the V variants as one padded batch, so that all of
them are scored by one forward pass per batch (`lrp_triton.evaluation.scoring`).

- Text (features = the example's non-special token positions): `replace` puts one token id (the
  tokenizer's mask, unk or pad token, or any id) at each perturbed position; `delete` removes the
  perturbed tokens, keeps the others in order, and right-pads the shorter rows (mask 0 there).
- Images (features = the model's patches, row-major as the patch embedding numbers them): each
  perturbed patch's pixels are replaced by those of a fill image: `zero` (zeros), `mean` (the
  image's per-channel mean) or `blur` (the image under a box blur of about one patch width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEXT_PERTURBATIONS = ("mask", "unk", "pad", "delete")
IMAGE_PERTURBATIONS = ("zero", "mean", "blur")


def replacement_token(tokenizer, perturbation) -> int | None:
    """The token id `perturbation` puts in place of a token (None for "delete"): "mask", "unk" and
    "pad" are the tokenizer's own tokens (a ValueError when it has none), an int is used as it is."""
    if isinstance(perturbation, int) and not isinstance(perturbation, bool):
        return perturbation
    if perturbation == "delete":
        return None
    if perturbation not in TEXT_PERTURBATIONS:
        raise ValueError(f"evaluate: unknown text perturbation {perturbation!r}; use one of "
                         f"{', '.join(TEXT_PERTURBATIONS)} or a token id")
    token_id = getattr(tokenizer, f"{perturbation}_token_id", None) if tokenizer is not None else None
    if token_id is None:
        raise ValueError(f"evaluate: the tokenizer has no {perturbation} token; pick another perturbation "
                         f"({', '.join(TEXT_PERTURBATIONS)}) or pass a token id")
    return int(token_id)


def perturb_tokens(input_ids: torch.Tensor, features: torch.Tensor, perturbed: torch.Tensor,
                   replacement: int | None, pad_id: int, token_type_ids: torch.Tensor | None = None):
    """V variants of one row `input_ids` [N]: (ids [V, N'], attention mask [V, N'] bool, token types or None).

    `features` [F] are the token positions that may be perturbed, `perturbed` [V, F] which of them
    each variant perturbs. replacement=None deletes them (rows right-padded with `pad_id`)."""
    n, v = input_ids.shape[0], perturbed.shape[0]
    hit = torch.zeros(v, n, dtype=torch.bool, device=input_ids.device)
    hit[:, features] = perturbed.to(input_ids.device)
    types = None if token_type_ids is None else token_type_ids.expand(v, n)
    if replacement is not None:
        ids = torch.where(hit, torch.full_like(input_ids, replacement), input_ids)
        return ids, torch.ones_like(hit), types
    keep = ~hit
    lengths = keep.sum(1)
    if bool((lengths == 0).any()):
        raise ValueError("evaluate: deleting every token leaves an empty input; keep at least one token")
    order = torch.argsort(hit.to(torch.int8), dim=1, stable=True)[:, :int(lengths.max())]  # kept tokens first
    mask = torch.arange(order.shape[1], device=order.device) < lengths[:, None]
    ids = torch.where(mask, input_ids[order], torch.full_like(order, pad_id))
    if types is not None:
        types = torch.where(mask, token_type_ids[order], torch.zeros_like(order))
    return ids, mask, types


def fill_image(pixels: torch.Tensor, perturbation: str, patch: int) -> torch.Tensor:
    """The image [C, H, W] whose pixels replace a perturbed patch's (see the module docstring)."""
    if perturbation == "zero":
        return torch.zeros_like(pixels)
    if perturbation == "mean":
        return pixels.mean(dim=(1, 2), keepdim=True).expand_as(pixels)
    if perturbation == "blur":
        k = 2 * (patch // 2) + 1
        return F.avg_pool2d(pixels[None], k, stride=1, padding=k // 2, count_include_pad=False)[0]
    raise ValueError(f"evaluate: unknown image perturbation {perturbation!r}; use one of "
                     f"{', '.join(IMAGE_PERTURBATIONS)}")


def perturb_patches(pixels: torch.Tensor, fill: torch.Tensor, perturbed: torch.Tensor, patch: int) -> torch.Tensor:
    """V variants of one image [C, H, W]: perturbed [V, F] patches (row-major over the H/patch x W/patch
    grid) take the pixels of `fill`: [V, C, H, W]."""
    c, h, w = pixels.shape
    grid = perturbed.to(pixels.device).view(-1, h // patch, w // patch)
    where = grid.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None]  # [V, 1, H, W]
    return torch.where(where, fill, pixels)


def patch_sums(pixel_map: torch.Tensor, patch: int) -> torch.Tensor:
    """A per-pixel map [H, W] summed over each patch: [F] (row-major over the patch grid)."""
    h, w = pixel_map.shape
    return pixel_map.reshape(h // patch, patch, w // patch, patch).sum(dim=(1, 3)).flatten()
