"""Input checking for the attribution drivers: one clear error per bad input, naming the fix.

Token ids and masks become [B, N] tensors on the model's device (a 1-D input is one row); masks
are bool, all ones when not given. Token ids (input_ids, decoder_input_ids, token_type_ids) may be of
any integer dtype (int8 to int64, uint8 to uint64): int32 and int64 are kept, narrower or unsigned
ones widened to int64 (values are kept exactly; the vocabulary check runs after); bool and float
tensors are refused. A batch of 0 rows or rows of 0 tokens is refused. Float inputs
(inputs_embeds, pixel_values) must be finite: NaN or inf is refused at the entry, naming the rows,
since every relevance it reaches would be NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lrp_triton.attribution.devices import execution_device


def model_device(model) -> torch.device:
    """Where the inputs go: the execution device of a dispatched model (`devices.execution_device`)."""
    return execution_device(model)


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """An integer dtype (signed or unsigned), not bool."""
    return dtype != torch.bool and not dtype.is_floating_point and not dtype.is_complex


def integer_ids(ids: torch.Tensor, name: str, expected: str) -> torch.Tensor:
    """`ids` of an integer dtype: int32 / int64 as they are, other integer dtypes widened to int64.
    Bool and float tensors are refused (a bool tensor is a mask, not ids)."""
    if not is_integer_dtype(ids.dtype):
        hint = " (a bool tensor is a mask, not ids)" if ids.dtype == torch.bool else ""
        raise ValueError(f"attribute: {name} must be integer token ids {expected}, got {tuple(ids.shape)} "
                         f"{ids.dtype}{hint}")
    return ids if ids.dtype in (torch.int64, torch.int32) else ids.to(torch.int64)


def check_not_empty(shape, name: str) -> None:
    """A [B, N, ...] input has at least one row and one token per row."""
    if shape[0] == 0:
        raise ValueError(f"attribute: {name} has a batch of 0 rows {tuple(shape)}; pass at least one row")
    if shape[1] == 0:
        raise ValueError(f"attribute: {name} is empty: its rows have 0 tokens {tuple(shape)}; pass at least "
                         "one token per row")


def check_finite(x: torch.Tensor, name: str, converted: torch.dtype | None = None) -> None:
    """No NaN or inf in `x` (rows named): every relevance it reaches would be NaN."""
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = bad.reshape(bad.shape[0], -1).any(-1).nonzero().flatten().tolist()
        how = f" after conversion to the model's dtype {converted} (out of its range)" if converted else ""
        raise ValueError(f"attribute: {name} contains NaN or inf{how} in row(s) {rows}; relevance would be NaN "
                         "there, so nothing is explained: pass finite values")


def as_token_batch(ids, name: str, device, vocab: int | None = None) -> torch.Tensor:
    """Integer ids as [B, N] on `device` (see the module docstring for the dtypes taken), with at least
    one row and one token, inside [0, vocab) when vocab is given."""
    ids = torch.as_tensor(ids, device=device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"attribute: {name} must be integer token ids [batch, seq] (or [seq]), got "
                         f"{tuple(ids.shape)} {ids.dtype}")
    ids = integer_ids(ids, name, "[batch, seq]")
    check_not_empty(ids.shape, name)
    if vocab is not None and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"attribute: {name} outside the vocabulary [0, {vocab}): values from "
                         f"{ids.min().item()} to {ids.max().item()}")
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
    if mask.is_complex() or (mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"attribute: {name} must hold only 0/1 or True/False (1 = real token), got other "
                         "values (an additive mask of 0 / -inf? pass 1 for real tokens, 0 for padding)")
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
        inputs_embeds = check_embeds(model, inputs_embeds)
        batch, seq = inputs_embeds.shape[:2]
    attention_mask = as_mask(attention_mask, (batch, seq), "attention_mask", device)
    if max_length is not None and seq > max_length:
        table = getattr(model.config, "max_position_embeddings", None)
        raise ValueError(f"attribute: sequence length {seq} exceeds the {max_length} tokens this model takes "
                         f"(its max_position_embeddings is {table}); shorten the input")
    return TextInputs(input_ids, inputs_embeds, attention_mask)


def check_embeds(model, inputs_embeds) -> torch.Tensor:
    """Float embeddings [B, N, hidden] (a 2-D input is one row), hidden the size of the model's input
    embeddings, at least one row and token, finite in the model's dtype; on the model's device."""
    inputs_embeds = torch.as_tensor(inputs_embeds)
    if inputs_embeds.dim() == 2:
        inputs_embeds = inputs_embeds[None]
    hidden = model.get_input_embeddings().weight.shape[-1]
    if inputs_embeds.dim() != 3:
        raise ValueError(f"attribute: inputs_embeds must be [batch, seq, hidden={hidden}], got "
                         f"{tuple(inputs_embeds.shape)}")
    if not inputs_embeds.is_floating_point():
        raise ValueError(f"attribute: inputs_embeds must be a floating-point tensor, got {inputs_embeds.dtype} "
                         "(token ids go in input_ids)")
    if inputs_embeds.shape[-1] != hidden:
        raise ValueError(f"attribute: inputs_embeds has hidden size {inputs_embeds.shape[-1]} but this model's "
                         f"input embeddings have {hidden} (shape {tuple(inputs_embeds.shape)})")
    check_not_empty(inputs_embeds.shape, "inputs_embeds")
    dtype = model_dtype(model)
    check_finite(inputs_embeds, "inputs_embeds")
    inputs_embeds = inputs_embeds.to(device=model_device(model), dtype=dtype)
    check_finite(inputs_embeds, "inputs_embeds", converted=dtype)
    return inputs_embeds


def check_token_type_ids(model, token_type_ids, shape) -> torch.Tensor | None:
    """Token-type ids [B, N] inside [0, type_vocab_size), or None."""
    if token_type_ids is None:
        return None
    token_type_ids = torch.as_tensor(token_type_ids, device=model_device(model))
    if token_type_ids.dim() == 1:
        token_type_ids = token_type_ids[None]
    if tuple(token_type_ids.shape) != tuple(shape):
        raise ValueError(f"attribute: token_type_ids must be integer {tuple(shape)} like the input, got "
                         f"{tuple(token_type_ids.shape)} {token_type_ids.dtype}")
    token_type_ids = integer_ids(token_type_ids, "token_type_ids", str(tuple(shape)))
    types = getattr(model.config, "type_vocab_size", None)
    if types is not None and (token_type_ids.min() < 0 or token_type_ids.max() >= types):
        raise ValueError(f"attribute: token_type_ids outside [0, {types})")
    return token_type_ids.long()


def _pair(size) -> tuple[int, int] | None:
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)


def check_pixels(model, pixel_values) -> torch.Tensor:
    """Float pixel values [B, C, H, W] (a 3-D input is one image) in the model's dtype and device:
    at least one image, C = config.num_channels, H x W = config.image_size (of config.vision_config
    for a model with several towers), finite."""
    config = getattr(model.config, "vision_config", None) or model.config
    if pixel_values is None:
        raise ValueError("attribute: a vision model needs pixel_values [B, C, H, W]")
    pixel_values = torch.as_tensor(pixel_values, device=model_device(model))
    if pixel_values.dim() == 3:
        pixel_values = pixel_values[None]
    if pixel_values.dim() != 4 or not pixel_values.is_floating_point():
        raise ValueError(f"attribute: pixel_values must be float [batch, channels, height, width], got "
                         f"{tuple(pixel_values.shape)} {pixel_values.dtype}")
    shape = tuple(pixel_values.shape)
    if shape[0] == 0:
        raise ValueError(f"attribute: pixel_values has a batch of 0 images {shape}; pass at least one image")
    if 0 in shape[1:]:
        raise ValueError(f"attribute: pixel_values is empty {shape}: an image needs channels, height and width")
    channels = getattr(config, "num_channels", None)
    if channels is not None and shape[1] != channels:
        raise ValueError(f"attribute: pixel_values has {shape[1]} channels but the model takes {channels} "
                         f"(config.num_channels); pixel_values is [batch, channels, height, width], got {shape}")
    size = _pair(getattr(config, "image_size", None))
    if size is not None and shape[2:] != size:
        raise ValueError(f"attribute: pixel_values images are {shape[2]} x {shape[3]} but the model takes "
                         f"{size[0]} x {size[1]} (config.image_size); resize the images (e.g. with the "
                         "model's image processor)")
    dtype = model_dtype(model)
    check_finite(pixel_values, "pixel_values")
    pixel_values = pixel_values.to(dtype)
    check_finite(pixel_values, "pixel_values", converted=dtype)
    return pixel_values
