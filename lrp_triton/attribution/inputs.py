"""Input checking for the attribution drivers: one clear error per bad input, naming the fix.

Token ids and masks become [B, N] tensors on the model's device (a 1-D input is one row); masks
are bool, all ones when not given.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def as_token_batch(ids, name: str, device, vocab: int | None = None) -> torch.Tensor:
    """Integer ids as [B, N] on `device`, inside [0, vocab) when vocab is given."""
    ids = torch.as_tensor(ids, device=device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"attribute: {name} must be integer [batch, seq], got {tuple(ids.shape)} {ids.dtype}")
    if vocab is not None and ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"attribute: {name} outside the vocabulary [0, {vocab})")
    return ids


def as_mask(mask, shape, name: str, device) -> torch.Tensor:
    """A bool mask of `shape` (1/True = real token); all ones when `mask` is None."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    mask = torch.as_tensor(mask, device=device)
    if mask.dim() == 1:
        mask = mask[None]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"attribute: {name} shape {tuple(mask.shape)} does not match the input's "
                         f"[batch, seq] = {tuple(shape)}")
    mask = mask.to(torch.bool)
    if not mask.any(-1).all():
        raise ValueError(f"attribute: a row of {name} has no token to attend to")
    return mask


class TextInputs(NamedTuple):
    input_ids: torch.Tensor | None  # [B, N], or None for embeddings input
    inputs_embeds: torch.Tensor | None  # [B, N, hidden] in the model's dtype, or None
    attention_mask: torch.Tensor  # bool [B, N]

    @property
    def shape(self) -> tuple[int, int]:
        source = self.input_ids if self.input_ids is not None else self.inputs_embeds
        return tuple(source.shape[:2])


def check_text_inputs(model, input_ids, inputs_embeds, attention_mask, max_length: int | None) -> TextInputs:
    """Exactly one of input_ids / inputs_embeds, a matching mask, at most `max_length` tokens."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("attribute: pass exactly one of input_ids and inputs_embeds")
    device = model_device(model)
    if input_ids is not None:
        input_ids = as_token_batch(input_ids, "input_ids", device, model.get_input_embeddings().num_embeddings)
        batch, seq = input_ids.shape
    else:
        inputs_embeds = torch.as_tensor(inputs_embeds)
        if inputs_embeds.dim() == 2:
            inputs_embeds = inputs_embeds[None]
        if inputs_embeds.dim() != 3:
            raise ValueError(f"attribute: inputs_embeds must be [batch, seq, hidden], got {tuple(inputs_embeds.shape)}")
        inputs_embeds = inputs_embeds.to(device=device, dtype=model_dtype(model))
        batch, seq = inputs_embeds.shape[:2]
    if seq == 0:
        raise ValueError("attribute: empty input sequence")
    attention_mask = as_mask(attention_mask, (batch, seq), "attention_mask", device)
    if max_length is not None and seq > max_length:
        table = getattr(model.config, "max_position_embeddings", None)
        raise ValueError(f"attribute: sequence length {seq} exceeds the {max_length} tokens this model takes "
                         f"(its max_position_embeddings is {table}); shorten the input")
    return TextInputs(input_ids, inputs_embeds, attention_mask)


def check_token_type_ids(model, token_type_ids, shape) -> torch.Tensor | None:
    """Token-type ids [B, N] inside [0, type_vocab_size), or None."""
    if token_type_ids is None:
        return None
    token_type_ids = torch.as_tensor(token_type_ids, device=model_device(model))
    if token_type_ids.dim() == 1:
        token_type_ids = token_type_ids[None]
    if tuple(token_type_ids.shape) != tuple(shape) or token_type_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"attribute: token_type_ids must be integer {tuple(shape)}, got "
                         f"{tuple(token_type_ids.shape)} {token_type_ids.dtype}")
    types = getattr(model.config, "type_vocab_size", None)
    if types is not None and (token_type_ids.min() < 0 or token_type_ids.max() >= types):
        raise ValueError(f"attribute: token_type_ids outside [0, {types})")
    return token_type_ids.long()


def check_pixels(model, pixel_values) -> torch.Tensor:
    """Float pixel values [B, C, H, W] (a 3-D input is one image) in the model's dtype and device."""
    if pixel_values is None:
        raise ValueError("attribute: a vision model needs pixel_values [B, C, H, W]")
    pixel_values = torch.as_tensor(pixel_values, device=model_device(model))
    if pixel_values.dim() == 3:
        pixel_values = pixel_values[None]
    if pixel_values.dim() != 4 or not pixel_values.is_floating_point():
        raise ValueError(f"attribute: pixel_values must be float [batch, channels, height, width], got "
                         f"{tuple(pixel_values.shape)} {pixel_values.dtype}")
    return pixel_values.to(model_dtype(model))
