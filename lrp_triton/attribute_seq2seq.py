"""Attribution for encoder-decoder models (T5 / Flan-T5): relevance of encoder and decoder tokens.

One encoder and one decoder forward pass; logits only at the explained decoder positions; one
backward pass per position from the explained score. Relevance is `x * x.grad` at the encoder's
and the decoder's input embeddings (two separate leaves), summed over the hidden dimension.
"""

from __future__ import annotations

import torch

from lrp_triton.attribute import (_absolute_positions, _applied, _checkpointed, _frozen_eval, _per_row_ids,
                                  token_names, token_relevance)
from lrp_triton.attribution import Attribution
from lrp_triton.backend import upcast


def _as_batch(ids, name, device):
    ids = torch.as_tensor(ids, device=device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"attribute: {name} must be integer [batch, seq], got {tuple(ids.shape)} {ids.dtype}")
    return ids


def _as_mask(mask, shape, name, device):
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    mask = torch.as_tensor(mask, device=device)
    if mask.dim() == 1:
        mask = mask[None]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"attribute: {name} shape {tuple(mask.shape)} does not match {tuple(shape)}")
    mask = mask.to(torch.bool)
    if not mask.any(-1).all():
        raise ValueError(f"attribute: a row of {name} has no token")
    return mask


def scales_decoder_output(config) -> bool:
    """Whether T5 multiplies the decoder output by d_model^-0.5 before lm_head.

    transformers >= 5.2x says so in `scale_decoder_outputs`; earlier releases tie it to
    `tie_word_embeddings`."""
    scale = getattr(config, "scale_decoder_outputs", None)
    return bool(config.tie_word_embeddings if scale is None else scale)


def attribute_seq2seq(model, adapter, input_ids, *, attention_mask=None, decoder_input_ids=None,
                      decoder_attention_mask=None, target=None, position=-1, contrast=None, mode="attnlrp",
                      latent=False, checkpoint=False, backend="auto", tokenizer=None,
                      progress=None) -> Attribution:
    """Explains decoder logits of an encoder-decoder model (see `lrp_triton.attribute`).

    `position` counts over each row's real decoder tokens; the default `decoder_input_ids` is the
    decoder start token alone (explaining the first output token). Returns an Attribution whose
    `relevance` is at the encoder tokens and `decoder_relevance` at the decoder prefix tokens.
    """
    if latent:
        raise NotImplementedError("attribute: latent=True is not available for encoder-decoder models yet")
    if input_ids is None:
        raise ValueError("attribute: encoder-decoder models need input_ids")
    device = next(model.parameters()).device
    input_ids = _as_batch(input_ids, "input_ids", device)
    batch, n_enc = input_ids.shape
    vocab = model.get_input_embeddings().num_embeddings
    if decoder_input_ids is None:
        start = model.config.decoder_start_token_id
        if start is None:
            raise ValueError("attribute: pass decoder_input_ids (the model config has no decoder_start_token_id)")
        decoder_input_ids = torch.full((batch, 1), start, dtype=torch.long, device=device)
    decoder_input_ids = _as_batch(decoder_input_ids, "decoder_input_ids", device)
    if decoder_input_ids.shape[0] != batch:
        raise ValueError(f"attribute: decoder_input_ids has batch {decoder_input_ids.shape[0]}, input_ids {batch}")
    for name, ids in (("input_ids", input_ids), ("decoder_input_ids", decoder_input_ids)):
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"attribute: {name} outside the vocabulary [0, {vocab})")
    n_dec = decoder_input_ids.shape[1]
    attention_mask = _as_mask(attention_mask, (batch, n_enc), "attention_mask", device)
    decoder_attention_mask = _as_mask(decoder_attention_mask, (batch, n_dec), "decoder_attention_mask", device)
    positions, several = _absolute_positions(position, decoder_attention_mask, batch, n_dec, device)
    n_pos = positions.shape[1]
    lm_head = model.get_output_embeddings()
    out_vocab = lm_head.weight.shape[0]
    targets = _per_row_ids(target, "target", batch, n_pos, several, out_vocab, device)
    contrasts = _per_row_ids(contrast, "contrast", batch, n_pos, several, out_vocab, device)
    if contrasts is not None and (contrasts < 0).any():
        raise ValueError("attribute: contrast must give an id for every position (None only as a whole)")

    layers = list(model.encoder.block) + list(model.decoder.block)
    with _frozen_eval(model), _applied(model, mode, backend), _checkpointed(layers, checkpoint):
        embed = model.get_input_embeddings()
        enc_emb = embed(input_ids).detach().requires_grad_(True)
        dec_emb = embed(decoder_input_ids).detach().requires_grad_(True)
        with torch.enable_grad():
            encoded = model.encoder(inputs_embeds=enc_emb, attention_mask=attention_mask, use_cache=False)[0]
            decoded = model.decoder(inputs_embeds=dec_emb, attention_mask=decoder_attention_mask,
                                    encoder_hidden_states=encoded, encoder_attention_mask=attention_mask,
                                    use_cache=False)[0]
            rows = torch.arange(batch, device=device)[:, None]
            hidden = decoded[rows, positions]
            if scales_decoder_output(model.config):  # T5 rescales before the tied output projection
                hidden = hidden * (model.config.d_model ** -0.5)
            logits = lm_head(hidden)  # [B, P, vocab]: only where explained
            predicted = logits.detach().argmax(-1)
            targets = predicted if targets is None else torch.where(targets < 0, predicted, targets)
            scores = logits.gather(-1, targets[..., None])[..., 0]
            if contrasts is not None:
                scores = scores - logits.gather(-1, contrasts[..., None])[..., 0]
        enc_rel, dec_rel = [], []
        for j in range(n_pos):
            enc_emb.grad = dec_emb.grad = None
            scores[:, j].sum().backward(retain_graph=j < n_pos - 1)
            enc_rel.append(token_relevance(enc_emb, enc_emb.grad))
            dec_rel.append(token_relevance(dec_emb, dec_emb.grad))
            if progress is not None:
                progress(j + 1, n_pos)

    def shaped(items):
        return torch.stack(items, dim=1) if several else items[0]

    squeeze = (lambda t: t) if several else (lambda t: t[:, 0])
    return Attribution(
        relevance=shaped(enc_rel).detach(), target=squeeze(targets), logit=squeeze(upcast(scores.detach())),
        position=squeeze(positions), contrast=None if contrasts is None else squeeze(contrasts),
        decoder_relevance=shaped(dec_rel).detach(), input_ids=input_ids, attention_mask=attention_mask,
        mode=mode, model_type=model.config.model_type,
        extras={"decoder_input_ids": decoder_input_ids, "decoder_attention_mask": decoder_attention_mask},
        **token_names(tokenizer, input_ids, squeeze(targets), None if contrasts is None else squeeze(contrasts)),
    )
