"""The attention function lrp_triton registers with transformers, under the name "lrp_triton".

transformers looks attention up by `config._attn_implementation`; only models whose config says
"lrp_triton" (set per instance by `lrp_triton.apply`) reach this function, so registering it
changes nothing for any other model. Its mask function hands over the 2-D padding mask only:
causality, sliding windows and soft-capping come from the attention module's own arguments and are
applied inside the kernel (never as an N x M mask tensor).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from lrp_triton.ops.attention import lrp_attention

NAME = "lrp_triton"


@dataclass
class AttentionOptions:
    """What one attention module of an applied model runs with."""

    mode: str = "attnlrp"
    backend: str = "auto"
    recorder: list | None = field(default=None, repr=False)  # head outputs, for latent relevance


# attention module -> its options; weak, so a discarded model leaves nothing behind
OPTIONS: "weakref.WeakKeyDictionary[torch.nn.Module, AttentionOptions]" = weakref.WeakKeyDictionary()
_DEFAULT = AttentionOptions()


def lrp_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          sliding_window=None, softcap=None, is_causal=None, **kwargs):
    """transformers attention-interface signature: [B, H, S, D] in, ([B, S, H, D], None) out."""
    if dropout:
        raise RuntimeError("lrp_triton attention does not apply attention dropout: put the model in eval "
                           "mode (lrp_triton.attribute does this for its call)")
    for name in ("s_aux", "position_bias"):  # terms the kernel does not take: refuse, never drop them
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"lrp_triton attention does not support `{name}` "
                                      f"({type(module).__name__}); this model family is not supported")
    options = OPTIONS.get(module, _DEFAULT)
    if is_causal is None and not hasattr(module, "is_causal"):
        raise NotImplementedError(f"{type(module).__name__} does not say whether it is causal (no `is_causal`); "
                                  "lrp_triton will not guess")
    causal = bool(is_causal if is_causal is not None else module.is_causal)
    key_padding_mask, bias = None, None
    if attention_mask is not None:
        if attention_mask.dim() == 2:  # from our mask function: True = attend
            key_padding_mask = attention_mask[:, -key.shape[2]:].to(torch.bool)
        else:  # a 4-D mask prepared by the caller already holds causality and padding
            causal = False
            bias = attention_mask
            if bias.dtype == torch.bool:
                bias = torch.zeros(bias.shape, dtype=query.dtype, device=bias.device).masked_fill(~bias, float("-inf"))
    out = lrp_attention(query, key, value, causal=causal, scale=scaling, mode=options.mode,
                        key_padding_mask=key_padding_mask, sliding_window=sliding_window, softcap=softcap,
                        bias=bias, backend=options.backend)
    out = out.transpose(1, 2)
    if options.recorder is not None and out.requires_grad:
        out.retain_grad()
        options.recorder.append(out)
    return out, None


def lrp_attention_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                       attention_mask=None, **kwargs):
    """The padding mask as bool [B, kv_length] (True = attend), or None when nothing is padded."""
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:].to(torch.bool)
    return None if bool(attention_mask.all()) else attention_mask


_registered = False


def register() -> None:
    """Registers the attention and mask functions with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, lrp_attention_forward)
    AttentionMaskInterface.register(NAME, lrp_attention_mask)
    _registered = True
