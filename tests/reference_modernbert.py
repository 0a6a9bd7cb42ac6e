"""Explicit float64 LRP reference for ModernBERT (masked LM and sequence classification), written as
relevance formulas on top of the primitives of reference_lrp / reference_encoders (never the gradient
trick). It re-implements the forward from the weights of an unmodified HuggingFace model; the tests
check its outputs against the model's own (a wrong window or pooling would fail there).

    x = LN(tok(ids))                                       LayerNorm (no bias with norm_bias=False): std constant
    layer: h = x + Wo(attn(rope(q), rope(k), v)),  q, k, v = Wqkv(attn_norm(x))  (layer 0: no attn_norm)
           y = h + Wo'(act(a) * g),  a, g = Wi(mlp_norm(h)).chunk(2)
           local layers see the band |i - j| <= local_attention // 2 (HF's bidirectional window mask)
    LN(final) -> pooling ("cls": h[:, 0]; "mean": sum_i m_i h_i / sum_i m_i, epsilon rule on the terms)
           -> LN(act(dense(.))) -> decoder (masked LM) or classifier
"""

from __future__ import annotations

import torch

from reference_encoders import dense
from reference_lrp import (ACTIVATIONS, _div, act_kind, add, attention_core, d64, identity, layer_norm, linear,
                           merge_heads, rope, uniform_product)
from scaled_close import summed


def _norm(x, module):
    """LayerNorm, or nothing where the layer holds an nn.Identity (layer 0's attn_norm)."""
    if isinstance(module, torch.nn.Identity):
        return x, lambda r: r
    return layer_norm(x, module)


def local_window(attn, config):
    """The attention window of a layer as the reference's `visibility` takes it (|i - j| < window), from
    the config's own definition of the local band (|i - j| <= local_attention // 2), or None (global)."""
    if config.layer_types[attn.layer_idx] != "sliding_attention":
        return None
    return config.local_attention // 2 + 1


def attention(attn, x, cos, sin, mask, config, mode, rule, gamma):
    b, n, _ = x.shape
    heads = config.num_attention_heads
    qkv, b_qkv = dense(x, attn.Wqkv, rule, gamma)
    q, k, v = qkv.view(b, n, 3, heads, -1).unbind(2)  # each [B, N, H, D]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    qr, b_rq = rope(q, cos, sin)
    kr, b_rk = rope(k, cos, sin)
    o, b_core = attention_core(qr, kr, v, mode, causal=False, scale=attn.head_dim ** -0.5, key_padding_mask=mask,
                               sliding_window=local_window(attn, config))
    y, b_o = dense(merge_heads(o), attn.Wo, rule, gamma)

    def back(r):
        r_q, r_k, r_v = b_core(o_heads(b_o(r), heads))
        r_qkv = torch.stack([b_rq(r_q), b_rk(r_k), r_v], 2)  # [B, H, 3, N, D] -> [B, N, 3, H, D]
        return b_qkv(r_qkv.permute(0, 3, 2, 1, 4).reshape(b, n, -1))
    return y, back


def o_heads(r, heads):
    b, n, _ = r.shape
    return r.view(b, n, heads, -1).transpose(1, 2)


def geglu(mlp, x, mode, rule, gamma):
    """Wo(act(a) * g), (a, g) = Wi(x).chunk(2): epsilon on the linears, identity on act, uniform on the product."""
    w, b_wi = dense(x, mlp.Wi, rule, gamma)
    a, g = w.chunk(2, dim=-1)
    act, _ = identity(ACTIVATIONS[act_kind(mlp.act)], a)
    p, b_p = uniform_product(act, g, mode)
    y, b_wo = dense(p, mlp.Wo, rule, gamma)

    def back(r):
        r_a, r_g = b_p(b_wo(r))
        return b_wi(torch.cat([r_a, r_g], -1))
    return y, back


def layer(module, x, tables, mask, config, mode, rule, gamma):
    cos, sin = tables[module.attention_type]
    a, b_an = _norm(x, module.attn_norm)
    o, b_att = attention(module.attn, a, cos, sin, mask, config, mode, rule, gamma)
    h, b_add1 = add(x, o)
    c, b_mn = layer_norm(h, module.mlp_norm)
    m, b_mlp = geglu(module.mlp, c, mode, rule, gamma)
    y, b_add2 = add(h, m)

    def back(r):
        r_h, r_m = b_add2(r)
        r_h = r_h + b_mn(b_mlp(r_m))
        r_x, r_o = b_add1(r_h)
        return r_x + b_an(b_att(r_o))
    return y, back


def mean_pool(h, mask):
    """p = sum_i m_i h_i / sum_i m_i: epsilon rule on the terms m_i h_i / count, R_h_i = m_i h_i / count / p * R_p."""
    w = mask.to(h.dtype)[..., None] / mask.sum(1).to(h.dtype)[:, None, None]
    terms = w * h
    p = terms.sum(1)
    return p, lambda r: terms * _div(r, p)[:, None]


def modernbert_reference(model, input_ids, attention_mask, *, target, position=None, mode="attnlrp", rule="epsilon",
                         gamma=0.25):
    """Token relevance [B, N] (float64) of ModernBertForMaskedLM (`target` token at padded index `position`
    per row) or ModernBertForSequenceClassification (`target` class). Returns dict(word, score, out)."""
    base, config = model.model, model.config
    mask = attention_mask.bool()
    word = d64(base.embeddings.tok_embeddings(input_ids))
    x, b_emb = layer_norm(word, base.embeddings.norm)
    n = input_ids.shape[1]
    positions = torch.arange(n)[None].expand(input_ids.shape[0], n)
    tables = {t: tuple(d64(c) for c in base.rotary_emb(x.float(), positions, t)) for t in set(config.layer_types)}
    tables = {t: (cos[:, None], sin[:, None]) for t, (cos, sin) in tables.items()}  # [B, 1, N, D]: over heads
    backs = []
    for module in base.layers:
        x, back = layer(module, x, tables, mask, config, mode, rule, gamma)
        backs.append(back)
    h, b_final = layer_norm(x, base.final_norm)
    rows = torch.arange(h.shape[0])
    if position is not None:  # masked LM
        sel, b_sel = h[rows, position], None
    elif config.classifier_pooling == "mean":
        sel, b_sel = mean_pool(h, mask)
    else:
        sel, b_sel = h[:, 0], None
    head = model.head
    t, b_t = linear(sel, head.dense.weight, head.dense.bias)
    a, _ = identity(ACTIVATIONS[act_kind(head.act)], t)
    nh, b_n = layer_norm(a, head.norm)
    out_layer = model.decoder if position is not None else model.classifier
    z, b_z = linear(nh, out_layer.weight, out_layer.bias)
    r_z = torch.zeros_like(z)
    r_z[rows, target] = z[rows, target]
    score = z[rows, target].clone()
    r_sel = b_t(b_n(b_z(r_z)))
    r_h = torch.zeros_like(h)
    if position is not None:
        r_h[rows, position] = r_sel
    elif b_sel is not None:
        r_h = b_sel(r_sel)
    else:
        r_h[:, 0] = r_sel
    r = b_final(r_h)
    for back in reversed(backs):
        r = back(r)
    return dict(word=summed(b_emb(r), -1), score=score, out=z)
