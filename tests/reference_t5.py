"""Explicit float64 LRP reference for T5 / Flan-T5, mT5 and umT5, written with the relevance formulas.

Walks encoder and decoder stacks with the primitives of reference_lrp: T5LayerNorm identity,
epsilon rule on every projection and residual, the attention rules (relative-position bias as an
additive constant that keeps its share: the dense bias comes from transformers' own
`compute_bias`, independent of lrp_triton's compact per-offset form), gated-GELU (identity +
uniform) or ReLU (identity) feed-forward, and the tied-embedding output scaling (linear). T5 and
mT5 compute the bias in the first layer of a stack and share it; umT5 gives every self-attention
layer its own table: each layer's bias is its own `compute_bias` where it has a table, else the
stack's first layer's.
"""

from __future__ import annotations

import torch

from reference_lrp import (ACTIVATIONS, act_kind, add, attention_core, d64, head_relevance, identity, linear,
                           merge_heads, rms_norm, split_heads, uniform_product)
from scaled_close import summed


def _attention(attn, x, source, mask, bias, causal, mode):
    h = attn.n_heads
    q, bq = linear(x, attn.q.weight)
    k, bk = linear(source, attn.k.weight)
    v, bv = linear(source, attn.v.weight)
    o, b_core = attention_core(split_heads(q, h), split_heads(k, h), split_heads(v, h), mode, causal=causal,
                               scale=1.0, key_padding_mask=mask, bias=bias)
    y, b_o = linear(merge_heads(o), attn.o.weight)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_o(r), h))
        return bq(merge_heads(r_q)), bk(merge_heads(r_k)) + bv(merge_heads(r_v))
    return y, back


def _feed_forward(ff, x, mode):
    if hasattr(ff, "wi_0"):  # gated: act(wi_0 x) * (wi_1 x)
        g, bg = linear(x, ff.wi_0.weight)
        u, bu = linear(x, ff.wi_1.weight)
        a, ba = identity(ACTIVATIONS[act_kind(ff.act)], g)
        p, bp = uniform_product(a, u, mode)
        y, bd = linear(p, ff.wo.weight)

        def back(r):
            r_a, r_u = bp(bd(r))
            return bg(ba(r_a)) + bu(r_u)
        return y, back
    f, bf = linear(x, ff.wi.weight)
    a, _ = identity(ACTIVATIONS[act_kind(ff.act)], f)
    y, bo = linear(a, ff.wo.weight)
    return y, lambda r: bf(bo(r))


def scales_decoder_output(config) -> bool:
    """Whether the model multiplies the decoder output by d_model^-0.5 before lm_head, as transformers
    5.24's modeling files decide it: T5 and umT5 iff config.scale_decoder_outputs; mT5 never (its
    config has no such attribute, and MT5ForConditionalGeneration no rescaling)."""
    return bool(getattr(config, "scale_decoder_outputs", False))


def _dense_bias(attn, n, m):
    return d64(attn.compute_bias(n, m, device=torch.device("cpu"), past_seen_tokens=m - n))


def _stack_biases(stack, n):
    """The dense self-attention bias [1, H, n, n] of each block: its own table's, else the first block's."""
    first = _dense_bias(stack.block[0].layer[0].SelfAttention, n, n)
    return [_dense_bias(b.layer[0].SelfAttention, n, n) if b.layer[0].SelfAttention.has_relative_attention_bias
            else first for b in stack.block]


def t5_reference(model, input_ids, attention_mask, decoder_input_ids, positions, target, contrast=None,
                 mode="attnlrp"):
    """(encoder token relevance [B, N], decoder token relevance [B, N_dec], score, logits), float64."""
    enc_mask = attention_mask.bool()
    embed = model.get_input_embeddings()
    n, n_dec = input_ids.shape[1], decoder_input_ids.shape[1]

    # encoder
    x = d64(embed(input_ids))
    enc_backs = []
    for block, enc_bias in zip(model.encoder.block, _stack_biases(model.encoder, n)):
        sa, ff = block.layer[0], block.layer[1]
        a, _ = rms_norm(x, sa.layer_norm)
        o, b_att = _attention(sa.SelfAttention, a, a, enc_mask, enc_bias, False, mode)
        x2, b_add1 = add(x, o)
        c, _ = rms_norm(x2, ff.layer_norm)
        m, b_ff = _feed_forward(ff.DenseReluDense, c, mode)
        x, b_add2 = add(x2, m)

        def back(r, b_att=b_att, b_add1=b_add1, b_ff=b_ff, b_add2=b_add2):
            r_x2, r_m = b_add2(r)
            r_x2 = r_x2 + b_ff(r_m)
            r_x, r_o = b_add1(r_x2)
            r_a_q, r_a_kv = b_att(r_o)
            return r_x + r_a_q + r_a_kv
        enc_backs.append(back)
    encoded, _ = rms_norm(x, model.encoder.final_layer_norm)

    # decoder
    y = d64(embed(decoder_input_ids))
    dec_backs = []
    for block, dec_bias in zip(model.decoder.block, _stack_biases(model.decoder, n_dec)):
        sa, ca, ff = block.layer[0], block.layer[1], block.layer[2]
        a, _ = rms_norm(y, sa.layer_norm)
        o, b_self = _attention(sa.SelfAttention, a, a, None, dec_bias, True, mode)
        y2, b_add1 = add(y, o)
        c, _ = rms_norm(y2, ca.layer_norm)
        o2, b_cross = _attention(ca.EncDecAttention, c, encoded, enc_mask, None, False, mode)
        y3, b_add2 = add(y2, o2)
        d, _ = rms_norm(y3, ff.layer_norm)
        m, b_ff = _feed_forward(ff.DenseReluDense, d, mode)
        y, b_add3 = add(y3, m)

        def back(r, b_self=b_self, b_add1=b_add1, b_cross=b_cross, b_add2=b_add2, b_ff=b_ff, b_add3=b_add3):
            """Returns (R at the block input, R at the encoder output)."""
            r_y3, r_m = b_add3(r)
            r_y3 = r_y3 + b_ff(r_m)
            r_y2, r_o2 = b_add2(r_y3)
            r_c, r_enc = b_cross(r_o2)
            r_y2 = r_y2 + r_c
            r_y, r_o = b_add1(r_y2)
            r_a_q, r_a_kv = b_self(r_o)
            return r_y + r_a_q + r_a_kv, r_enc
        dec_backs.append(back)
    decoded, _ = rms_norm(y, model.decoder.final_layer_norm)
    if scales_decoder_output(model.config):
        decoded, _ = identity(lambda t: t * model.config.d_model ** -0.5, decoded)  # linear: R unchanged

    r, score, z = head_relevance(decoded, model.get_output_embeddings(), positions, target, contrast, None)
    r_enc = torch.zeros_like(encoded)
    for back in reversed(dec_backs):
        r, r_e = back(r)
        r_enc = r_enc + r_e
    for back in reversed(enc_backs):
        r_enc = back(r_enc)
    return summed(r_enc, -1), summed(r, -1), score, z
