"""The attention function lrp_triton registers with transformers, under the name "lrp_triton".

transformers looks attention up by `config._attn_implementation`; only models whose config says
"lrp_triton" (set per instance by `lrp_triton.apply`, on a private copy of the config) reach this
function, so registering it changes nothing for any other model. The mode and backend come from
the options `apply` left on the attention module (`module.lrp_options`, see `lrp_triton.options`):
a module reached without them is an error. Its mask function hands over the 2-D padding mask
wherever the model's mask is the plain causal / sliding / bidirectional one: causality, sliding
windows and soft-capping come from the attention module's own arguments and are applied inside
the kernel (never as an N x M mask tensor). A mask that deviates from those (transformers'
`or_mask_function` / `and_mask_function` / `block_sequence_ids` overlays: PaliGemma's bidirectional
prefix, Gemma 3's bidirectional image blocks) is evaluated as transformers' own `sdpa_mask` does,
into the complete 4-D bool mask. Where that mask is "causal OR blocks" (AND Gemma 3's one-sided
window), checked exactly once per forward (`lrp_triton.mask_extent`), it reaches the kernel as the
padding mask and per-row causal extents (`causal_extent`: O(N), the Triton kernels skip the tiles
no query sees); any other complete mask reaches it as an additive bias (0 / -inf, N x M memory per
row). Neither receives gradient or relevance (a bias's 0 entries take no share). gpt-oss's
attention sinks arrive as `s_aux` ([H], one logit per head) and are handed to the kernel as `sinks`.

`sdpa_attention_interface` is the same glue around `lrp_sdpa_attention` (the rule through torch's
SDPA: lxt's method, the benchmarks' reference), for registering under a name of one's own.
"""

from __future__ import annotations

import torch

from lrp_triton.mask_extent import extent_form
from lrp_triton.ops.attention import lrp_attention
from lrp_triton.ops.sdpa_attention import lrp_sdpa_attention
from lrp_triton.options import LRPOptions

NAME = "lrp_triton"


def module_options(module) -> LRPOptions:
    """The options `lrp_triton.apply` left on the attention module, or a clear error."""
    options = getattr(module, "lrp_options", None)
    if not isinstance(options, LRPOptions):
        raise RuntimeError(f"{type(module).__name__} reached lrp_triton's attention without lrp_triton options "
                           "(it was not prepared by lrp_triton.apply); apply the model with "
                           "lrp_triton.apply(model) instead of setting attn_implementation='lrp_triton' by hand")
    return options


def mask_terms(attention_mask, kv_length: int, dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(key_padding_mask, bias) from the mask transformers hands an attention function.

    A 2-D mask (from `lrp_attention_mask`) is the bool padding mask [B, kv_length] (True = attend);
    a 4-D mask prepared by the caller becomes an additive bias (bool: 0 where True, -inf elsewhere).
    """
    if attention_mask is None:
        return None, None
    if attention_mask.dim() == 2:
        return attention_mask[:, -kv_length:].to(torch.bool), None
    if attention_mask.dtype == torch.bool:
        return None, torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device).masked_fill(
            ~attention_mask, float("-inf"))
    return None, attention_mask


def lrp_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          sliding_window=None, softcap=None, is_causal=None, **kwargs):
    """transformers attention-interface signature: [B, H, S, D] in, ([B, S, H, D], None) out."""
    if dropout:
        raise RuntimeError("lrp_triton attention does not apply attention dropout: put the model in eval "
                           "mode (lrp_triton.attribute does this for its call)")
    if kwargs.get("position_bias") is not None:  # a term the kernel does not take: refuse, never drop it
        raise NotImplementedError(f"lrp_triton attention does not support `position_bias` "
                                  f"({type(module).__name__}); this model family is not supported")
    options = module_options(module)
    if is_causal is None and not hasattr(module, "is_causal"):
        raise NotImplementedError(f"{type(module).__name__} does not say whether it is causal (no `is_causal`); "
                                  "lrp_triton will not guess")
    causal = bool(is_causal if is_causal is not None else module.is_causal)
    found = None  # a complete 4-D mask of the form causal OR blocks (AND the window): per-row extents (it holds
    if attention_mask is not None and attention_mask.dim() == 4 and tuple(attention_mask.shape[2:]) == (
            query.shape[2], key.shape[2]):  # the causality: PaliGemma's decoder layers say is_causal=False)
        found = extent_form(attention_mask, sliding_window)
    if found is not None:
        (key_padding_mask, extent), bias, causal = found, None, True
    else:
        extent = None
        key_padding_mask, bias = mask_terms(attention_mask, key.shape[2], query.dtype)
    if bias is not None:  # a 4-D mask is complete, as in transformers' eager / SDPA attention: it holds
        causal, sliding_window = False, None  # the causality and the window (Gemma 3: one-sided, past the block)
    out = lrp_attention(query, key, value, causal=causal, scale=scaling, mode=options.mode,
                        key_padding_mask=key_padding_mask, sliding_window=sliding_window, softcap=softcap,
                        bias=bias, sinks=kwargs.get("s_aux"), backend=options.backend, causal_extent=extent)
    out = out.transpose(1, 2)
    options.taps.heads(out)
    return out, None


def sdpa_attention_interface(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             is_causal=None, sliding_window=None, softcap=None, position_bias=None, mode="attnlrp",
                             **kwargs):
    """transformers attention-interface signature around `lrp_sdpa_attention`: [B, H, S, D] in,
    ([B, S, H, D], None) out.

    Register it with `AttentionInterface.register(name, fn)` (partial(fn, mode=...) for another rule)
    and `lrp_attention_mask` as its mask function (the benchmarks' reference method does): the mask then
    arrives as the bool padding mask [B, M] (or None), and causality comes from `is_causal` or the
    module. A 4-D mask prepared by the caller is taken as complete (no causal flag added): bool =
    attend, float = additive. T5's materialised `position_bias` [1 or B, H, N, M] is the additive bias.
    """
    if dropout:
        raise RuntimeError("sdpa_attention_interface: attention dropout is not an LRP rule; put the model in eval mode")
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    key_padding_mask, bias = mask_terms(attention_mask, key.shape[2], query.dtype)
    causal = causal and bias is None  # a 4-D mask prepared by the caller already holds causality
    if position_bias is not None:
        bias = position_bias if bias is None else position_bias + bias
    out = lrp_sdpa_attention(query, key, value, causal=causal, scale=scaling, mode=mode,
                             key_padding_mask=key_padding_mask, sliding_window=sliding_window, bias=bias,
                             softcap=softcap, sinks=kwargs.get("s_aux"))
    return out.transpose(1, 2), None


def lrp_attention_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                       attention_mask=None, allow_is_causal_skip=True, allow_is_bidirectional_skip=False, **kwargs):
    """The padding mask as bool [B, kv_length] (True = attend), or None when nothing is padded, for
    the plain causal / sliding / bidirectional masks (transformers allows them to be skipped: the
    kernel applies them from the module's arguments). A mask with overlays (no skip allowed) is
    evaluated with transformers' `sdpa_mask`: the padding mask again if it is the plain causal one,
    else the complete bool mask [B, 1, q_length, kv_length] (module docstring)."""
    padding = None
    if attention_mask is not None:
        padding = attention_mask[:, -kv_length:].to(torch.bool)
        padding = None if bool(padding.all()) else padding
    if allow_is_causal_skip or allow_is_bidirectional_skip or mask_function is None:
        return padding
    from transformers.masking_utils import sdpa_mask

    device = kwargs.get("device", attention_mask.device if attention_mask is not None else "cpu")
    full = sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                     allow_is_causal_skip=False, allow_is_bidirectional_skip=False,
                     use_vmap=kwargs.get("use_vmap", False), device=device)
    q_pos = torch.arange(q_length, device=full.device)[:, None] + q_offset
    causal = torch.arange(kv_length, device=full.device)[None, :] + kv_offset <= q_pos
    plain = causal if padding is None else causal & padding[:, None, None, :]
    return padding if torch.equal(full, plain.expand_as(full)) else full


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
