"""Attribution of an encoder-decoder's decoder logits (adapter kind "seq2seq": T5 / Flan-T5, mT5,
umT5, BART, mBART).

One encoder and one decoder forward pass; logits only at the explained decoder positions (after
the adapter's output scaling, linear: exact gradient, and plus its constant output bias, BART's
final_logits_bias); one backward pass per position from the explained score. The adapter names
the layer stacks (checkpointing) and each stack's input embedding (`seq2seq_embeddings`). Relevance is `x * x.grad` at the encoder's and the decoder's input embeddings (two
separate leaves), summed over the hidden dimension: `relevance` (encoder tokens) and
`decoder_relevance` (decoder prefix).
"""

from __future__ import annotations

import torch

from lrp_triton.attribution.core import (applied_for_call, checkpointed, display_extras, frozen_eval, leaf,
                                         one_backward_per_score, output_size, per_score, stack_scores, token_names,
                                         token_relevance)
from lrp_triton.attribution.inputs import as_mask, as_token_batch, model_device
from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.targets import explained_positions, ids_per_position, logit_scores
from lrp_triton.backend import upcast


def explain_seq2seq(model, adapter, options, *, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                    target, position, contrast, latent, checkpoint, tokenizer, progress) -> Attribution:
    """See `lrp_triton.attribute`. `position` counts over each row's real decoder tokens; the default
    `decoder_input_ids` is the decoder start token alone (explaining the first output token)."""
    if latent:
        raise NotImplementedError("attribute: latent=True is not available for encoder-decoder models yet")
    if input_ids is None:
        raise ValueError("attribute: encoder-decoder models need input_ids")
    device = model_device(model)
    vocab = model.get_input_embeddings().num_embeddings
    input_ids = as_token_batch(input_ids, "input_ids", device, vocab)
    batch, n_enc = input_ids.shape
    if decoder_input_ids is None:
        start = model.config.decoder_start_token_id
        if start is None:
            raise ValueError("attribute: pass decoder_input_ids (the model config has no decoder_start_token_id)")
        decoder_input_ids = torch.full((batch, 1), start, dtype=torch.long, device=device)
    decoder_input_ids = as_token_batch(decoder_input_ids, "decoder_input_ids", device, vocab)
    if decoder_input_ids.shape[0] != batch:
        raise ValueError(f"attribute: decoder_input_ids has batch {decoder_input_ids.shape[0]}, input_ids {batch}")
    attention_mask = as_mask(attention_mask, (batch, n_enc), "attention_mask", device)
    decoder_attention_mask = as_mask(decoder_attention_mask, decoder_input_ids.shape, "decoder_attention_mask", device)
    positions, several = explained_positions(position, decoder_attention_mask)
    head = adapter.head(model)
    out_vocab = output_size(head)
    targets = ids_per_position(target, "target", positions, several, out_vocab)
    contrasts = ids_per_position(contrast, "contrast", positions, several, out_vocab, complete=True)

    with frozen_eval(model), applied_for_call(model, options), checkpointed(adapter.layers(model), checkpoint):
        enc_embed, dec_embed = adapter.seq2seq_embeddings(model)
        enc_emb, dec_emb = leaf(enc_embed(input_ids)), leaf(dec_embed(decoder_input_ids))
        with torch.enable_grad():
            encoded = model.get_encoder()(inputs_embeds=enc_emb, attention_mask=attention_mask, use_cache=False)[0]
            decoded = model.get_decoder()(inputs_embeds=dec_emb, attention_mask=decoder_attention_mask,
                                          encoder_hidden_states=encoded, encoder_attention_mask=attention_mask,
                                          use_cache=False)[0]
            hidden = decoded[torch.arange(batch, device=decoded.device)[:, None], positions.to(decoded.device)]
            scale = adapter.output_scale(model.config)
            logits = head(hidden if scale is None else hidden * scale)  # [B, P, vocab]: only where explained
            bias = adapter.output_bias(model)
            if bias is not None:
                logits = logits + bias.to(logits.dtype)
            scores, targets = logit_scores(logits, targets, contrasts)

        def read():
            return {"relevance": token_relevance(enc_emb), "decoder_relevance": token_relevance(dec_emb)}

        results = one_backward_per_score(scores, [enc_emb, dec_emb], read, progress)
    return Attribution(
        **stack_scores(results, several), target=per_score(targets, several),
        logit=per_score(upcast(scores.detach()), several), position=per_score(positions, several),
        contrast=per_score(contrasts, several), input_ids=input_ids, attention_mask=attention_mask,
        mode=options.mode, model_type=model.config.model_type,
        extras={"decoder_input_ids": decoder_input_ids, "decoder_attention_mask": decoder_attention_mask,
                **display_extras(tokenizer)},
        **token_names(tokenizer, input_ids, per_score(targets, several), per_score(contrasts, several)))
