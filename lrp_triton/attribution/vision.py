"""Attribution of a vision transformer (adapter kind "vision": ViT, DeiT, DINOv2, CLIP / SigLIP vision towers).

One forward pass of the whole model, one backward pass per explained score (a class logit, or a
callable target's scores). `relevance` = `pixel_relevance` [B, H, W]: pixel_values * grad, summed
over channels. The embedding sum `cat(prefix tokens, patches) + position` is split by the epsilon
rule (each summand times the shared gradient, summed over the hidden dimension) into
`cls_relevance` [B, n_prefix] (CLS; DeiT: CLS, distillation), `patch_relevance` [B, num_patches]
(the patch-embedding output; the convolution's bias keeps its share) and `position_relevance`
[B, n_prefix + num_patches]. DINOv2's register tokens, inserted after the CLS token once the positions
are added (`cat(cls + pos_0, registers, patches + pos)`), are prepended tokens with no position:
`cls_relevance` is [B, 1 + R] there (CLS, then the registers).
The embeddings' tensors of a model offloaded by accelerate are loaded for that split by their own
hooks (`loaded_embedding_shares`).
"""

from __future__ import annotations

import torch

from lrp_triton.accelerate_hooks import weights_loaded
from lrp_triton.attribution.core import (OutputTap, applied_for_call, frozen_eval, leaf, one_backward_per_score,
                                         per_score, stack_scores)
from lrp_triton.attribution.encoder import label_names, rule_extras
from lrp_triton.attribution.inputs import check_pixels
from lrp_triton.attribution.latent import recording, stack_latent
from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.targets import output_scores
from lrp_triton.backend import upcast


def embedding_shares(embeddings, patch_out: torch.Tensor, summed: torch.Tensor) -> dict:
    """Epsilon-rule split of summed = cat(prefix tokens, patches) + position embeddings (module docstring)."""
    g = upcast(summed.grad if summed.grad is not None else summed.detach().new_zeros(summed.shape))
    if patch_out.dim() == 4:  # a bare convolution's output [B, hidden, h, w] (CLIP, SigLIP): as tokens
        patch_out = patch_out.flatten(2).transpose(1, 2)
    prefix = list(embeddings.prefix)
    g_pos = g
    if embeddings.registers is not None:  # cat(prefix + pos, registers, patches + pos): no position at registers
        n, r = len(prefix), embeddings.registers.shape[1]
        g_pos = torch.cat([g[:, :n], g[:, n + r:]], dim=1)
        prefix.append(embeddings.registers)
    n_prefix = summed.shape[1] - patch_out.shape[1]
    prefix = prefix[:n_prefix]
    prefix = upcast(torch.cat(prefix, dim=1)) if prefix else g.new_zeros(1, 0, g.shape[-1])
    if embeddings.position.shape[1] != g_pos.shape[1]:
        raise NotImplementedError("attribute: interpolated position embeddings are not supported")
    return {"position_relevance": (upcast(embeddings.position) * g_pos).sum(-1),
            "patch_relevance": (upcast(patch_out.detach()) * g[:, n_prefix:]).sum(-1),
            "cls_relevance": (prefix * g[:, :n_prefix]).sum(-1)}


def loaded_embedding_shares(model, adapter, patch_out: torch.Tensor, summed: torch.Tensor) -> dict:
    """`embedding_shares`, with the embeddings' tensors read where accelerate offloaded them (to the CPU
    or disk; on the meta device outside the forward): loaded by the embeddings' own hooks for the read
    (`weights_loaded`), as for their forward, so the split uses the values the forward used."""
    with weights_loaded(model, adapter.embeddings(model).summed):
        return embedding_shares(adapter.embeddings(model), patch_out, summed)


def explain_vision(model, adapter, options, *, pixel_values, target, latent, progress) -> Attribution:
    """See `lrp_triton.attribute` for the arguments."""
    pixels = leaf(check_pixels(model, pixel_values))
    embeddings = adapter.embeddings(model)
    with frozen_eval(model), applied_for_call(model, options) as handle, \
            OutputTap(embeddings.patches, as_leaf=False, retain=False) as patches, \
            OutputTap(embeddings.summed, as_leaf=False) as summed, \
            recording(latent, handle, adapter.layers(model)) as recorder:
        with torch.enable_grad():
            head = output_scores(model(pixel_values=pixels), target, None, None, type(model).__name__,
                                 adapter.vector_outputs)

        def read():
            return {"relevance": (upcast(pixels) * upcast(pixels.grad if pixels.grad is not None
                                                          else torch.zeros_like(pixels))).sum(1),
                    **loaded_embedding_shares(model, adapter, patches.first, summed.first),
                    "latent": recorder.read() if recorder is not None else None}

        results = one_backward_per_score(head.scores, [pixels, *summed.tensors], read, progress,
                                         watched=recorder.tensors() if recorder is not None else ())
    latents = [r.pop("latent") for r in results]
    fields = stack_scores(results, head.several)
    targets = per_score(head.targets, head.several)
    return Attribution(
        **fields, pixel_relevance=fields["relevance"], target=targets,
        logit=per_score(upcast(head.scores.detach()), head.several), position=None,
        latent=stack_latent(latents, head.several) if latent else None, mode=options.mode,
        model_type=model.config.model_type, extras=rule_extras(options),
        **({} if targets is None else {"target_tokens": label_names(model, targets, head.vector)}))
