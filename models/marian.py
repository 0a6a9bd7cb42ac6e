"""Marian adapter: BART's post-norm layers and rules (models/bart.py), fixed sinusoidal positions
(MarianSinusoidalPositionalEmbedding: a constant added to the embeddings, which absorbs its share),
no embedding LayerNorm, and its own embedding scaling: the encoder multiplies embed_tokens(ids) by
embed_scale only when it computes them from ids, the decoder multiplies whatever inputs_embeds it
gets. The explained leaves are what each stack takes as inputs_embeds: the encoder's already scaled,
the decoder's not (linear: the relevance is the same either way)."""

import dataclasses

from lrp_triton.models.bart import bart_like


def stack_embeddings(model):
    encoder, decoder = model.get_encoder(), model.get_decoder()
    return (lambda ids: encoder.embed_tokens(ids) * encoder.embed_scale), decoder.embed_tokens


ADAPTER = dataclasses.replace(bart_like("Marian", ("marian",)), stack_embeddings=stack_embeddings)
