"""Attribution of a text encoder (adapter kind "encoder": BERT, RoBERTa, ..., CLIP / SigLIP text towers).

One forward pass of the whole model (task head included), then one backward pass per explained
score (see `targets.output_scores`): a classification logit, a token-level head's logit at
`position` (masked LM, token classification), or a callable target's scores (e.g. a sentence
similarity), or, for a head with one logit per token (the adapter's `token_logit_heads`: ELECTRA's
discriminator), the logit at `position`. Positions are numbered by the adapter's `position_ids`
(RoBERTa and its copies: from pad_token_id + 1), passed to the model explicitly, since the model
cannot derive them from the input embeddings. `relevance` is at the word embeddings, summed over the hidden dimension; the position
and token-type embeddings, summed with them before the embedding LayerNorm (epsilon rule: the
exact gradient), are leaves of their own: `position_relevance` and `token_type_relevance`.
A model that reads its ids itself (the adapter's `ids_only`: CLIP's causal text tower pools at its
end-of-text id) gets them, and the word embedding's output is made the leaf inside its forward. A
model without logits (an embedding tower) explains a dimension of its embedding (`vector_outputs`).
"""

from __future__ import annotations

import torch

from lrp_triton.attribution.core import (OutputTap, applied_for_call, display_extras, frozen_eval, leaf,
                                         one_backward_per_score, per_score, stack_scores, token_names,
                                         token_relevance)
from lrp_triton.attribution.inputs import check_text_inputs, check_token_type_ids
from lrp_triton.attribution.latent import recording, stack_latent
from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.targets import HeadScores, check_finite_scores, explained_positions, output_scores
from lrp_triton.backend import upcast


def label_names(model, targets: torch.Tensor, vector: bool = False) -> list[str]:
    """A classification head's label names (config.id2label) for class ids [B]; `vector`: "dim k", the
    dimensions of an embedding."""
    if vector:
        return [f"dim {t}" for t in targets.tolist()]
    labels = getattr(model.config, "id2label", None) or {}
    return [labels.get(t, f"class {t}") for t in targets.tolist()]


def explain_encoder(model, adapter, options, *, input_ids, inputs_embeds, attention_mask, token_type_ids, target,
                    position, latent, tokenizer, progress) -> Attribution:
    """See `lrp_triton.attribute` for the arguments."""
    inputs = check_text_inputs(model, input_ids, inputs_embeds, attention_mask, adapter.max_length(model.config))
    mask = inputs.attention_mask
    token_type_ids = check_token_type_ids(model, token_type_ids, inputs.shape)
    if callable(target) and position is not None:
        raise ValueError("attribute: position is for token-level heads; a callable target picks its own scores")
    embeddings = adapter.embeddings(model)
    if token_type_ids is not None and embeddings.token_type is None:
        raise ValueError(f"attribute: {type(model).__name__} has no token-type embeddings; do not pass token_type_ids")
    token_head = type(model).__name__ in adapter.token_logit_heads and not callable(target)
    if token_head and (target is not None or position is None):
        raise ValueError(f"attribute: {type(model).__name__} gives one logit per token: pass position (the token "
                         "whose logit is explained) and no target id (or a callable target)")

    if adapter.ids_only and inputs.input_ids is None:
        raise ValueError(f"attribute: {type(model).__name__} reads its input_ids itself (it pools at a token it "
                         "finds among them); pass input_ids, not inputs_embeds")

    word_module = embeddings.word if adapter.ids_only else None  # its output: the leaf, made in the forward
    with frozen_eval(model), applied_for_call(model, options) as handle, OutputTap(embeddings.position) as pos_leaf, \
            OutputTap(embeddings.token_type) as type_leaf, OutputTap(word_module) as word_leaf, \
            recording(latent, handle, adapter.layers(model)) as recorder:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if adapter.ids_only:  # the word embedding's output becomes the leaf inside the forward
            extra["input_ids"] = inputs.input_ids
        else:
            words = extra["inputs_embeds"] = leaf(embeddings.word(inputs.input_ids) if inputs.input_ids is not None
                                                  else inputs.inputs_embeds)
        with torch.enable_grad():
            outputs = model(attention_mask=mask, **extra, position_ids=adapter.position_ids(model.config, mask))
            head = (token_scores(outputs.logits, position, mask) if token_head
                    else output_scores(outputs, target, position, mask, type(model).__name__, adapter.vector_outputs))
        if adapter.ids_only:
            words = word_leaf.first

        def read():
            return {"relevance": token_relevance(words), "position_relevance": pos_leaf.relevance(like=mask),
                    "token_type_relevance": type_leaf.relevance(like=mask),
                    "latent": recorder.read() if recorder is not None else None}

        results = one_backward_per_score(head.scores, [words, *pos_leaf.tensors, *type_leaf.tensors], read, progress,
                                         watched=recorder.tensors() if recorder is not None else ())
    latents = [r.pop("latent") for r in results]
    targets = per_score(head.targets, head.several)
    names = {} if inputs.input_ids is None else token_names(tokenizer, inputs.input_ids,
                                                            targets if head.positions is not None else None)
    if head.positions is None and targets is not None:  # a classification head: its label names
        names["target_tokens"] = label_names(model, targets, head.vector)
    return Attribution(
        **stack_scores(results, head.several), target=targets,
        logit=per_score(upcast(head.scores.detach()), head.several),
        position=per_score(head.positions, head.several),
        latent=stack_latent(latents, head.several) if latent else None, input_ids=inputs.input_ids,
        attention_mask=mask, mode=options.mode, model_type=model.config.model_type,
        extras={**rule_extras(options), **display_extras(tokenizer)}, **names)


def token_scores(logits: torch.Tensor, position, mask: torch.Tensor) -> HeadScores:
    """A one-logit-per-token head's logits [B, N] at `position` (counted over real tokens): [B, P]."""
    positions, several = explained_positions(position, mask)
    scores = logits[torch.arange(logits.shape[0], device=logits.device)[:, None], positions.to(logits.device)]
    check_finite_scores(scores, "the explained token logit")
    return HeadScores(scores, None, positions, several)


def rule_extras(options) -> dict:
    """The gamma rule's settings, recorded on the Attribution (empty for the epsilon rule)."""
    return {"linear_rule": options.linear_rule, "gamma": options.gamma} if options.linear_rule != "epsilon" else {}
