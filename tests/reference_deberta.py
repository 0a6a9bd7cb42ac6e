"""Explicit float64 LRP reference for DeBERTa-v2 / v3 and DeBERTa (v1), written with the relevance formulas.

The disentangled attention, per head, queries i and keys j (the model's own relative positions:
transformers' `build_relative_position`, dense [N, N], independent of lrp_triton's per-offset form):

    A_ij = sum_d s q_id k_jd                    content-to-content
    C_ij = sum_d s q_id pk_{c(i,j) d}           content-to-position, c(i,j) = clamp(delta_ij + span)
    P_ij = sum_d s k_jd pq_{p(i,j) d}           position-to-content, p(i,j) = clamp(-delta_ji + span)
    S    = A + C + P   (masked where the pair mask is False: a row with no visible key is uniform)
    W    = softmax(S), O_id = sum_j W_ij V_jd

walked backwards rule by rule:

    O = W V         epsilon on the terms z_ijd = W_ij V_jd: R(z) = z / O_id R_O_id, half to W, half
                    to V (CP-LRP: all to V)
    W = softmax(S)  R_S = S (R_W - W sum_j R_W) on the visible scores
    S = A + C + P   epsilon rule: R_A = A / S R_S, R_C = C / S R_S, R_P = P / S R_S
    A, C, P         epsilon on the terms of each bilinear sum, half to each factor: R_q gets half of
                    A's and C's terms, R_k half of A's and P's; pk and pq (projections of the
                    relative-embedding table, a parameter) keep the other halves of C and P

Around it: post-norm layers LN(x + dense(attn)) and LN(h + dense(act(dense(h)))) (LayerNorm std
held constant, identity rule on the activation), embeddings word (+ position, + token type:
epsilon on the sum), the optional embed_proj (epsilon), the embedding LayerNorm and the padding
mask multiplied in (linear), and the heads: ContextPooler act(dense(h[:, 0])) then the classifier,
or the masked-LM head LayerNorm(act(dense(h))) @ word_embeddings^T + bias. The base model's
linear layers take the epsilon rule or a gamma rule (`reference_encoders.dense`); the relative
embeddings' projections only need their forward (their relevance is absorbed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN
from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

from reference_encoders import _act_head, _act_norm_head, _explain_logits, dense, position_ids_for
from reference_lrp import (ACTIVATIONS, _div, act_kind, add, d64, identity, layer_norm, linear, merge_heads,
                           split_heads)
from scaled_close import summed


def relative_rows(att, n):
    """(c [N, N], p [N, N]): the relative-embedding row each score's c2p and p2c term reads."""
    span = att.pos_ebd_size
    ids = torch.zeros(1, n, 1)
    rel = build_relative_position(ids, ids, bucket_size=att.position_buckets,
                                  max_position=att.max_relative_positions)[0]  # [N, N]: delta(i - j)
    return (rel + span).clamp(0, 2 * span - 1), (-rel.T + span).clamp(0, 2 * span - 1)


def disentangled_core(q, k, v, pk, pq, c_row, p_row, visible, scale, mode):
    """The attention on heads q, k, v [B, H, N, D] (module docstring); pk / pq [H, R, D] or None, read at
    rows c_row / p_row [N, N]; visible bool broadcastable to [B, H, N, N].
    Returns (O, back(R_O) -> dict of R_q, R_k, R_v, R_pk, R_pq (None without the table))."""
    terms = {"A": scale * q[:, :, :, None, :] * k[:, :, None, :, :]}  # [B, H, N, M, D]
    if pk is not None:
        terms["C"] = scale * q[:, :, :, None, :] * pk[:, c_row][None]
    if pq is not None:
        terms["P"] = scale * k[:, :, None, :, :] * pq[:, p_row][None]
    sums = {name: z.sum(-1) for name, z in terms.items()}
    scores = sum(sums.values())
    vis = visible.expand_as(scores)
    filled = scores.masked_fill(~vis, torch.finfo(torch.float64).min)  # as the model's masked_fill
    e = torch.exp(filled - filled.amax(-1, keepdim=True))
    w = e / e.sum(-1, keepdim=True)
    o = torch.einsum("bhij,bhjd->bhid", w, v)

    def table_relevance(r_zt, rows, table):  # each term's share at the table row it read
        return 0.5 * torch.einsum("bhijd,ijr->hrd", r_zt, F.one_hot(rows, table.shape[1]).to(r_zt.dtype))

    def back(r_o):
        z = w[..., None] * v[:, :, None, :, :]  # [B, H, N, M, D]
        r_z = z * _div(r_o, o)[:, :, :, None, :]
        share_v = 0.5 if mode == "attnlrp" else 1.0
        out = dict(q=torch.zeros_like(q), k=torch.zeros_like(k), v=share_v * r_z.sum(2),
                   pk=None if pk is None else torch.zeros_like(pk), pq=None if pq is None else torch.zeros_like(pq))
        if mode != "attnlrp":
            return out
        r_w = 0.5 * r_z.sum(-1)
        s_vis = torch.where(vis, scores, torch.zeros_like(scores))
        r_s = torch.where(vis, s_vis * (r_w - w * r_w.sum(-1, keepdim=True)), torch.zeros_like(scores))
        for name, zt in terms.items():
            r_term = sums[name] * _div(r_s, scores)  # epsilon rule on S = A + C + P
            r_zt = zt * _div(r_term, sums[name])[..., None]  # epsilon on the bilinear terms, half to each factor
            if name in ("A", "C"):
                out["q"] = out["q"] + 0.5 * r_zt.sum(3)
            if name in ("A", "P"):
                out["k"] = out["k"] + 0.5 * r_zt.sum(2)
            if name == "C":
                out["pk"] = table_relevance(r_zt, c_row, pk)
            if name == "P":
                out["pq"] = table_relevance(r_zt, p_row, pq)
        return out
    return o, back


def disentangled_attention(att, x, rel_emb, visible, mode, rule, gamma):
    """DisentangledSelfAttention on x [B, N, hidden]; visible [B, 1, N, N] bool. (y, back(R_y) -> R_x)."""
    h = att.num_attention_heads
    n = x.shape[1]
    q, bq = dense(x, att.query_proj, rule, gamma)
    k, bk = dense(x, att.key_proj, rule, gamma)
    v, bv = dense(x, att.value_proj, rule, gamma)
    q, k, v = split_heads(q, h), split_heads(k, h), split_heads(v, h)  # [B, H, N, D]
    kinds = att.pos_att_type if att.relative_attention else []
    scale = 1.0 / math.sqrt(q.shape[-1] * (1 + ("c2p" in att.pos_att_type) + ("p2c" in att.pos_att_type)))
    pk = pq = c_row = p_row = None
    if kinds:
        rel = d64(rel_emb)[: 2 * att.pos_ebd_size][None]
        c_row, p_row = relative_rows(att, n)
        if "c2p" in kinds:
            proj = att.key_proj if att.share_att_key else att.pos_key_proj
            pk = split_heads(linear(rel, proj.weight, proj.bias)[0], h)[0]  # [H, R, D]
        if "p2c" in kinds:
            proj = att.query_proj if att.share_att_key else att.pos_query_proj
            pq = split_heads(linear(rel, proj.weight, proj.bias)[0], h)[0]
    o, b_core = disentangled_core(q, k, v, pk, pq, c_row, p_row, visible, scale, mode)

    def back(r_y):  # the relative-embedding table keeps the shares r["pk"], r["pq"]
        r = b_core(split_heads(r_y, h))
        return bq(merge_heads(r["q"])) + bk(merge_heads(r["k"])) + bv(merge_heads(r["v"]))
    return merge_heads(o), back


def v1_attention(att, x, rel_emb, visible, mode, rule, gamma):
    """DeBERTa (v1)'s DisentangledSelfAttention: fused in_proj (per head [q | k | v]) plus q_bias / v_bias
    (epsilon rule: each bias keeps its share), unbucketed relative positions i - j clamped to the span
    min(N, max_relative_positions) over the middle 2 span rows of the table."""
    h = att.num_attention_heads
    b, n, _ = x.shape
    qkv, b_in = dense(x, att.in_proj, rule, gamma)
    q0, k, v0 = qkv.view(b, n, h, -1).chunk(3, dim=-1)  # [B, N, H, D] each
    q, b_qb = add(q0, d64(att.q_bias).view(h, -1).expand_as(q0))
    v, b_vb = add(v0, d64(att.v_bias).view(h, -1).expand_as(v0))
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, N, D]
    scale = 1.0 / math.sqrt(q.shape[-1] * (1 + len(att.pos_att_type)))
    pk = pq = c_row = None
    if att.relative_attention:
        span = min(n, att.max_relative_positions)
        rel = d64(rel_emb)[att.max_relative_positions - span: att.max_relative_positions + span][None]
        delta = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # i - j
        c_row = (delta + span).clamp(0, 2 * span - 1)  # the p2c row, clamp(-(j - i) + span), is the same
        if "c2p" in att.pos_att_type:
            pk = split_heads(linear(rel, att.pos_proj.weight)[0], h)[0]
        if "p2c" in att.pos_att_type:
            pq = split_heads(linear(rel, att.pos_q_proj.weight, att.pos_q_proj.bias)[0], h)[0]
    o, b_core = disentangled_core(q, k, v, pk, pq, c_row, c_row, visible, scale, mode)

    def back(r_y):
        r = b_core(split_heads(r_y, h))
        r_q, r_k, r_v = (t.transpose(1, 2) for t in (r["q"], r["k"], r["v"]))  # [B, N, H, D]
        r_qkv = torch.cat([b_qb(r_q)[0], r_k, b_vb(r_v)[0]], dim=-1)
        return b_in(r_qkv.reshape(b, n, -1))
    return merge_heads(o), back


def deberta_layer(layer, x, rel_emb, visible, mode, rule, gamma):
    att = layer.attention
    attention = disentangled_attention if hasattr(att.self, "query_proj") else v1_attention
    a, b_att = attention(att.self, x, rel_emb, visible, mode, rule, gamma)
    o, b_o = dense(a, att.output.dense, rule, gamma)
    s1, b_add1 = add(o, x)
    h1, b_ln1 = layer_norm(s1, att.output.LayerNorm)
    f, b_f = dense(h1, layer.intermediate.dense, rule, gamma)
    g, _ = identity(ACTIVATIONS[act_kind(layer.intermediate.intermediate_act_fn)], f)
    m, b_m = dense(g, layer.output.dense, rule, gamma)
    s2, b_add2 = add(m, h1)
    y, b_ln2 = layer_norm(s2, layer.output.LayerNorm)

    def back(r):
        r_m, r_h1 = b_add2(b_ln2(r))
        r_h1 = r_h1 + b_f(b_m(r_m))
        r_o, r_x = b_add1(b_ln1(r_h1))
        return r_x + b_att(b_o(r_o))
    return y, back


def deberta_encoder(base, input_ids, mask, token_type_ids, mode, rule, gamma):
    """(last hidden state, back(R_h) -> (R_word, R_pos or None, R_type or None) [B, N])."""
    emb = base.embeddings
    parts = {"word": d64(emb.word_embeddings(input_ids))}
    if emb.position_embeddings is not None:
        parts["pos"] = d64(emb.position_embeddings(position_ids_for(emb, input_ids, mask)))
    if emb.token_type_embeddings is not None:
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        parts["type"] = d64(emb.token_type_embeddings(types))
    total = sum(parts.values())  # epsilon rule on the sum: each part p gets p / total * R

    def b_sum(r):
        return {name: p * _div(r, total) for name, p in parts.items()}
    x = total
    b_proj = lambda r: r  # noqa: E731
    if emb.embed_proj is not None:
        x, b_proj = dense(x, emb.embed_proj, rule, gamma)
    x, b_ln = layer_norm(x, emb.LayerNorm)
    keep = mask[..., None].to(torch.float64)
    x = x * keep  # the padding mask, a constant factor: R passes where it is 1
    enc = base.encoder
    rel_emb = None
    if enc.relative_attention:
        rel_emb = d64(enc.rel_embeddings.weight)
        if "layer_norm" in getattr(enc, "norm_rel_ebd", ()):  # deberta-v2 only
            rel_emb = layer_norm(rel_emb, enc.LayerNorm)[0]
    visible = (mask[:, None, :, None] & mask[:, None, None, :])  # [B, 1, N, N], as DebertaV2Encoder
    backs = []
    for layer in enc.layer:
        x, back = deberta_layer(layer, x, rel_emb, visible, mode, rule, gamma)
        backs.append(back)

    def back_all(r):
        for back in reversed(backs):
            r = back(r)
        rs = b_sum(b_proj(b_ln(r * keep)))
        return tuple(summed(rs[name], -1) if name in rs else None for name in ("word", "pos", "type"))
    return x, back_all


class _Tied:
    """The masked-LM head's output product as a linear layer: weight = the word embeddings."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias


def deberta_reference(model, input_ids, attention_mask, token_type_ids=None, *, target, position=None,
                      mode="attnlrp", rule="epsilon", gamma=0.25):
    """Relevance of Deberta(V2)ForSequenceClassification (`target` class per row) or Deberta(V2)ForMaskedLM
    (`target` token per row at padded index `position`), float64; `rule` / `gamma`: the base model's
    linear layers' rule (reference_encoders.dense; the heads keep the epsilon rule).
    Returns dict(word, pos, type, score, out)."""
    mask = attention_mask.bool()
    base = model.deberta
    h, back = deberta_encoder(base, input_ids, mask, token_type_ids, mode, rule, gamma)
    rows = torch.arange(h.shape[0])
    r_h = torch.zeros_like(h)
    if hasattr(model, "pooler"):
        pooler = model.pooler
        name = pooler.config.pooler_hidden_act
        act = torch.tanh if name == "tanh" else ACTIVATIONS[act_kind(ACT2FN[name])]  # identity rule either way
        z, b_head = _act_head(h[:, 0], pooler.dense, act, model.classifier)
        r_z, score = _explain_logits(z, target)
        r_h[:, 0] = b_head(r_z)
    else:
        sel = h[rows, position]
        if model.legacy:
            t = model.cls.predictions.transform
            z, b_head = _act_norm_head(sel, t.dense, ACTIVATIONS[act_kind(t.transform_act_fn)], t.LayerNorm,
                                       model.cls.predictions.decoder)
        else:
            head = model.lm_predictions.lm_head
            z, b_head = _act_norm_head(sel, head.dense, ACTIVATIONS[act_kind(head.transform_act_fn)], head.LayerNorm,
                                       _Tied(base.embeddings.word_embeddings.weight, head.bias))
        r_z, score = _explain_logits(z, target)
        r_h[rows, position] = b_head(r_z)
    r_word, r_pos, r_type = back(r_h)
    return dict(word=r_word, pos=r_pos, type=r_type, score=score, out=z)

