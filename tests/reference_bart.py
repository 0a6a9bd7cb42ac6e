"""Explicit float64 LRP reference for BART, mBART and Marian, written with the relevance formulas.

Walks the encoder and decoder stacks with the primitives of reference_lrp, reading the weights of
an unmodified HuggingFace model: word embedding (scaled inside its module) + learned positions
(table rows arange(N) + offset 2; Marian: fixed sinusoidal rows arange(N), and the word embedding
times the stack's embed_scale) with the epsilon rule on the sum, the embedding LayerNorm (std
constant; Marian has none), then per layer attention (epsilon rule on every biased projection, the attention
rules), fc2(act(fc1(x))) with the identity rule on act, and the residual sums (epsilon rule).
BART is post-norm: LN(x + f(x)); mBART pre-norm: x + f(LN(x)), each stack closed by a final
LayerNorm (told apart by the stack's `layer_norm`). The head is lm_head plus final_logits_bias, a
bias that keeps its share (epsilon rule).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from reference_lrp import (ACTIVATIONS, act_kind, add, attention_core, d64, head_relevance, identity, layer_norm,
                           linear, merge_heads, split_heads)
from scaled_close import summed


def _attention(attn, x, source, mask, causal, mode):
    h = attn.num_heads
    q, bq = linear(x, attn.q_proj.weight, attn.q_proj.bias)
    k, bk = linear(source, attn.k_proj.weight, attn.k_proj.bias)
    v, bv = linear(source, attn.v_proj.weight, attn.v_proj.bias)
    o, b_core = attention_core(split_heads(q, h), split_heads(k, h), split_heads(v, h), mode, causal=causal,
                               scale=attn.scaling, key_padding_mask=mask)
    y, b_o = linear(merge_heads(o), attn.out_proj.weight, attn.out_proj.bias)

    def back(r):  # (R at the queries' input, R at the keys' / values' input)
        r_q, r_k, r_v = b_core(split_heads(b_o(r), h))
        return bq(merge_heads(r_q)), bk(merge_heads(r_k)) + bv(merge_heads(r_v))
    return y, back


def _mlp(layer, x):
    f, bf = linear(x, layer.fc1.weight, layer.fc1.bias)
    a, _ = identity(ACTIVATIONS[act_kind(layer.activation_fn)], f)
    y, bo = linear(a, layer.fc2.weight, layer.fc2.bias)
    return y, lambda r: bf(bo(r))


def _sublayer(x, norm, fn, pre_norm):
    """pre-norm: x + f(LN(x)); post-norm: LN(x + f(x)). fn(a) -> (y, back(R_y) -> R_a or (R_a, extra)).
    Returns (out, back(R_out) -> (R_x, extra or None))."""
    if pre_norm:
        a, b_ln = layer_norm(x, norm)
        y, b_f = fn(a)
        out, b_add = add(x, y)

        def back(r):
            r_x, r_y = b_add(r)
            r_a = b_f(r_y)
            r_a, extra = r_a if isinstance(r_a, tuple) else (r_a, None)
            return r_x + b_ln(r_a), extra
        return out, back
    y, b_f = fn(x)
    s, b_add = add(x, y)
    out, b_ln = layer_norm(s, norm)

    def back_post(r):
        r_x, r_y = b_add(b_ln(r))
        r_a = b_f(r_y)
        r_a, extra = r_a if isinstance(r_a, tuple) else (r_a, None)
        return r_x + r_a, extra
    return out, back_post


def _self_attention(attn, mask, causal, mode):
    def fn(a):
        y, back = _attention(attn, a, a, mask, causal, mode)
        return y, lambda r: sum(back(r))
    return fn


def _cross_attention(attn, encoded, mask, mode):
    def fn(a):
        y, back = _attention(attn, a, encoded, mask, False, mode)
        return y, back  # (R at the decoder side, R at the encoder output)
    return fn


def _embed(stack, ids):
    """(LN(word + position), back(R) -> R_word [B, N, H])."""
    word = d64(stack.embed_tokens(ids)) * getattr(stack, "embed_scale", 1.0)  # BART / mBART: inside embed_tokens
    table = stack.embed_positions
    pos = d64(table.weight[torch.arange(ids.shape[1]) + getattr(table, "offset", 0)]).expand_as(word)
    s, b_sum = add(word, pos)
    if getattr(stack, "layernorm_embedding", None) is None:  # Marian
        return s, lambda r: b_sum(r)[0]
    x, b_ln = layer_norm(s, stack.layernorm_embedding)
    return x, lambda r: b_sum(b_ln(r))[0]


def _close(stack, x):
    """The stack's final LayerNorm (mBART), else nothing."""
    if getattr(stack, "layer_norm", None) is None:
        return x, lambda r: r
    return layer_norm(x, stack.layer_norm)


def bart_reference(model, input_ids, attention_mask, decoder_input_ids, positions, target, contrast=None,
                   mode="attnlrp"):
    """(encoder token relevance [B, N], decoder token relevance [B, N_dec], score, logits), float64."""
    base = model.model
    enc_mask = attention_mask.bool()
    pre = getattr(base.encoder, "layer_norm", None) is not None

    x, b_enc_emb = _embed(base.encoder, input_ids)
    enc_backs = []
    for layer in base.encoder.layers:
        x, b1 = _sublayer(x, layer.self_attn_layer_norm, _self_attention(layer.self_attn, enc_mask, False, mode), pre)
        x, b2 = _sublayer(x, layer.final_layer_norm, lambda a, layer=layer: _mlp(layer, a), pre)
        enc_backs.append((b1, b2))
    encoded, b_enc_close = _close(base.encoder, x)

    y, b_dec_emb = _embed(base.decoder, decoder_input_ids)
    dec_backs = []
    for layer in base.decoder.layers:
        y, b1 = _sublayer(y, layer.self_attn_layer_norm, _self_attention(layer.self_attn, None, True, mode), pre)
        y, b2 = _sublayer(y, layer.encoder_attn_layer_norm,
                          _cross_attention(layer.encoder_attn, encoded, enc_mask, mode), pre)
        y, b3 = _sublayer(y, layer.final_layer_norm, lambda a, layer=layer: _mlp(layer, a), pre)
        dec_backs.append((b1, b2, b3))
    decoded, b_dec_close = _close(base.decoder, y)

    head = SimpleNamespace(weight=model.lm_head.weight, bias=model.final_logits_bias[0])
    r, score, z = head_relevance(decoded, head, positions, target, contrast, None)
    r = b_dec_close(r)
    r_enc = torch.zeros_like(encoded)
    for b1, b2, b3 in reversed(dec_backs):
        r, _ = b3(r)
        r, r_e = b2(r)
        r_enc = r_enc + r_e
        r, _ = b1(r)
    r_dec = b_dec_emb(r)
    r_enc = b_enc_close(r_enc)
    for b1, b2 in reversed(enc_backs):
        r_enc, _ = b2(r_enc)
        r_enc, _ = b1(r_enc)
    return summed(b_enc_emb(r_enc), -1), summed(r_dec, -1), score, z
