"""Attribution of a decoder's sequence-classification head (`LlamaForSequenceClassification`, ...).

Such a model (adapter kind "causal_lm", class `*ForSequenceClassification`, head `score`: hidden ->
classes, no bias) pools the class logits at each row's last token that is not `pad_token_id`
(transformers' rule; the last token when no pad id is set, which it allows for one row only, and
with `inputs_embeds`). The explained score is the target class logit there (default: the top
class): one forward pass through the base model, the head only at the pooled token, one backward
pass. The pooled token must be the row's last real token of `attention_mask`; where the pad-id
rule picks another (a real token equal to the pad id at the end of a row, or right padding with
embeddings input) the call is refused, since the model's own logit would sit elsewhere. The head
is a plain linear layer (epsilon rule): a language model's final soft-cap or logit scale is not
part of it (transformers applies neither to the class logits).
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_triton.attribution.core import (OutputTap, applied_for_call, checkpointed, display_extras, frozen_eval, leaf,
                                         one_backward_per_score, output_size, stack_scores, token_names,
                                         token_relevance)
from lrp_triton.attribution.encoder import label_names
from lrp_triton.attribution.inputs import check_text_inputs
from lrp_triton.attribution.latent import recording, stack_latent
from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.targets import class_targets, logit_scores
from lrp_triton.backend import upcast


def sequence_classifier_head(model: nn.Module) -> nn.Module | None:
    """A decoder `*ForSequenceClassification`'s score layer, or None for any other model."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return None
    return getattr(model, "score", None)


def pooled_positions(model, input_ids: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """[B, 1] index of the token each row's class logits are read at, as the model pools them; a
    ValueError where that is not the row's last real token."""
    batch, n = mask.shape
    pad = model.config.get_text_config().pad_token_id
    if pad is None and batch != 1:
        raise ValueError(f"attribute: {type(model).__name__} pools each row at its last token that is not "
                         "config.pad_token_id, and pad_token_id is None, so the model takes one row at a time; "
                         "set model.config.pad_token_id (e.g. to the tokenizer's pad id) or pass one row")
    index = torch.arange(n, device=mask.device)
    if pad is None or input_ids is None:
        pooled = torch.full((batch,), n - 1, dtype=torch.long, device=mask.device)
    else:
        pooled = (index * (input_ids != pad)).argmax(-1)
    last_real = (index * mask).argmax(-1)
    bad = (pooled != last_real).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"attribute: {type(model).__name__} reads the class logits of row(s) {bad} at token(s) "
            f"{pooled[bad].tolist()} (the last token that is not pad_token_id {pad}; the last token for "
            f"inputs_embeds), but attention_mask's last real token is {last_real[bad].tolist()}; make them "
            "agree (pad with pad_token_id, left-pad embeddings, or drop a trailing token equal to the pad id)")
    return pooled[:, None]


def explain_decoder_classifier(model, adapter, options, *, input_ids, inputs_embeds, attention_mask, target,
                               latent, checkpoint, tokenizer, progress) -> Attribution:
    """See `lrp_triton.attribute`: `target` is a class index (one per row or one for all; default the
    top class); there is no position or contrast."""
    head = sequence_classifier_head(model)
    if callable(target):
        raise TypeError("attribute: a decoder sequence classifier explains a class index (int, integer tensor or "
                        "list of ints), not a callable target")
    if latent and checkpoint:
        raise ValueError("attribute: latent=True needs the layer activations kept, so it cannot be combined "
                         "with checkpoint=True")
    inputs = check_text_inputs(model, input_ids, inputs_embeds, attention_mask, adapter.max_length(model.config))
    mask = inputs.attention_mask
    positions = pooled_positions(model, inputs.input_ids, mask)
    targets = class_targets(target, mask.shape[0], output_size(head), mask.device)
    embeddings = adapter.embeddings(model)
    layers = adapter.layers(model)

    with frozen_eval(model), applied_for_call(model, options) as handle, checkpointed(layers, checkpoint), \
            OutputTap(embeddings.position) as pos_leaf, recording(latent, handle, layers) as recorder:
        embeds = leaf(embeddings.word(inputs.input_ids) if inputs.input_ids is not None else inputs.inputs_embeds)
        with torch.enable_grad():
            hidden = adapter.base_model(model)(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                                               position_ids=adapter.position_ids(model.config, mask))[0]
            rows = torch.arange(mask.shape[0], device=hidden.device)[:, None]
            logits = head(hidden[rows, positions.to(hidden.device)])  # [B, 1, C]
            scores, targets = logit_scores(logits, targets)

        def read():
            return {"relevance": token_relevance(embeds), "position_relevance": pos_leaf.relevance(like=mask),
                    "latent": recorder.read() if recorder is not None else None}

        results = one_backward_per_score(scores, [embeds, *pos_leaf.tensors], read, progress,
                                         watched=recorder.tensors() if recorder is not None else ())
    latents = [r.pop("latent") for r in results]
    names = {} if inputs.input_ids is None else token_names(tokenizer, inputs.input_ids)
    names["target_tokens"] = label_names(model, targets[:, 0])
    return Attribution(
        **stack_scores(results, False), target=targets[:, 0], logit=upcast(scores.detach())[:, 0],
        position=positions[:, 0], latent=stack_latent(latents, False) if latent else None,
        input_ids=inputs.input_ids, attention_mask=mask, mode=options.mode, model_type=model.config.model_type,
        model_name=str(getattr(model, "name_or_path", "") or ""), extras=display_extras(tokenizer), **names)
