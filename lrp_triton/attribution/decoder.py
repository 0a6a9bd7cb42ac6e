"""Attribution of a causal language model's logits (adapter kind "causal_lm").

One forward pass through the base model, logits only at the explained positions, then the
backward of the explained scores (target logit, minus the contrast logit), the K positions' scores
together in one batched pass (`core.one_backward_per_score`). Token relevance is `x * x.grad` at the
input embeddings, summed over the hidden dimension; learned position embeddings (GPT-2) are a
leaf of their own (`position_relevance`).
"""

from __future__ import annotations

import torch

from lrp_triton.attribution.core import (OutputTap, applied_for_call, checkpointed, display_extras, frozen_eval, leaf,
                                         one_backward_per_score, output_size, per_score, stack_scores,
                                         token_names, token_relevance)
from lrp_triton.attribution.inputs import check_text_inputs
from lrp_triton.attribution.latent import recording, stack_latent
from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.targets import explained_positions, ids_per_position, logit_scores
from lrp_triton.backend import upcast
from lrp_triton.ops.elementwise import softcap_by_mode


def explained_scores(model, adapter, options, head, hidden, positions, targets, contrasts):
    """The final hidden states [B, N, hidden] -> (scores [B, P], targets [B, P]): the language-model head
    only at the explained positions (with the family's output scale and final soft-cap), then the
    target logit (minus the contrast logit)."""
    hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device)[:, None], positions.to(hidden.device)]
    scale = adapter.output_scale(model.config)
    logits = head(hidden if scale is None else hidden * scale)  # [B, P, vocab]: only where explained
    cap = adapter.final_logit_softcap(model.config)
    if cap:
        logits = softcap_by_mode(logits, cap, options.mode)
    return logit_scores(logits, targets, contrasts)


def explain_decoder(model, adapter, options, *, input_ids, inputs_embeds, attention_mask, target, position, contrast,
                    latent, checkpoint, tokenizer, progress) -> Attribution:
    """See `lrp_triton.attribute` for the arguments; `position` defaults to the last token there."""
    head = adapter.head(model)
    if head is None:
        raise TypeError(f"attribute: {type(model).__name__} has no language-model head; pass a *ForCausalLM model")
    if latent and checkpoint:
        raise ValueError("attribute: latent=True needs the layer activations kept, so it cannot be combined "
                         "with checkpoint=True")
    inputs = check_text_inputs(model, input_ids, inputs_embeds, attention_mask, adapter.max_length(model.config))
    mask = inputs.attention_mask
    positions, several = explained_positions(position, mask)
    vocab = output_size(head)
    targets = ids_per_position(target, "target", positions, several, vocab)
    contrasts = ids_per_position(contrast, "contrast", positions, several, vocab, complete=True)
    embeddings = adapter.embeddings(model)
    layers = adapter.layers(model)

    with frozen_eval(model), applied_for_call(model, options) as handle, checkpointed(layers, checkpoint), \
            OutputTap(embeddings.position) as pos_leaf, recording(latent, handle, layers) as recorder:
        embeds = leaf(embeddings.word(inputs.input_ids) if inputs.input_ids is not None else inputs.inputs_embeds)
        with torch.enable_grad():
            hidden = adapter.base_model(model)(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                                               position_ids=adapter.position_ids(model.config, mask))[0]
            scores, targets = explained_scores(model, adapter, options, head, hidden, positions, targets, contrasts)

        def read():
            return {"relevance": token_relevance(embeds), "position_relevance": pos_leaf.relevance(like=mask),
                    "latent": recorder.read() if recorder is not None else None}

        results = one_backward_per_score(scores, [embeds, *pos_leaf.tensors], read, progress,
                                         watched=recorder.tensors() if recorder is not None else ())
    latents = [r.pop("latent") for r in results]
    fields = stack_scores(results, several)
    return Attribution(
        **fields, target=per_score(targets, several), logit=per_score(upcast(scores.detach()), several),
        position=per_score(positions, several), contrast=per_score(contrasts, several),
        latent=stack_latent(latents, several) if latent else None, input_ids=inputs.input_ids,
        attention_mask=mask, mode=options.mode, model_type=model.config.model_type,
        model_name=str(getattr(model, "name_or_path", "") or ""), extras=display_extras(tokenizer),
        **token_names(tokenizer, inputs.input_ids, per_score(targets, several), per_score(contrasts, several)))
