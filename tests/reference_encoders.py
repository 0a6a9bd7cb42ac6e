"""Explicit float64 LRP references for BERT-family encoders and vision transformers, written as
relevance formulas (never the gradient trick), on top of the primitives of reference_lrp.

New primitives here: the gamma rule for a linear layer and the epsilon / gamma rule for a 2-D
convolution (written on unfolded patches: every output unit is a linear map of its receptive
field, and a pixel's relevance is the sum over every unit it feeds). The walkers read the weights
of an unmodified HuggingFace model and re-implement its forward; the tests check their outputs
against the model's own.

Gamma rules, explicit (the bias is the weight of a constant unit input, boosted like the weights,
absorbing its share), on the contributions c_ji = x_i W_ji:
    plain ("gamma"): W_g = W + gamma W^+, b_g = b + gamma b^+,
        R_x_i = sum_j x_i W_g,ji / (sum_i x_i W_g,ji + b_g,j) * R_j
    sign-aware ("gamma-signed"): with s = sign(y_j), boost the contributions of that sign,
        R_x_i = sum_j (c_ji + gamma [c_ji]_s) / (y_j + gamma (sum_i [c_ji]_s + [b_j]_s)) * R_j,
        [t]_+ = max(t, 0), [t]_- = min(t, 0); units with y_j = 0 pass nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference_lrp import (ACTIVATIONS, _div, act_kind, add, attention_core, d64, identity, layer_norm, linear,
                           merge_heads, split_heads)
from scaled_close import summed


# ------------------------------------------------------------------------------------------------
# Primitives
# ------------------------------------------------------------------------------------------------
def _boost(t, gamma):
    return None if t is None else t + gamma * t.clamp(min=0)


def gamma_linear(x, weight, bias=None, gamma=0.25):
    """y = x W^T + b; gamma rule R_x_i = sum_j x_i W_g,ji / z_g,j * R_j (z_g includes b_g)."""
    w, b = d64(weight), d64(bias)
    y = x @ w.T + (b if b is not None else 0.0)
    wg, bg = _boost(w, gamma), _boost(b, gamma)
    zg = x @ wg.T + (bg if bg is not None else 0.0)
    return y, lambda r: torch.einsum("...i,ji,...j->...i", x, wg, _div(r, zg))


def signed_gamma_linear(x, weight, bias=None, gamma=0.25):
    """y = x W^T + b; sign-aware gamma rule on the contributions c_ji = x_i W_ji (module docstring)."""
    w = d64(weight)
    b = d64(bias) if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    c = x[..., None, :] * w  # [..., j, i]
    y = c.sum(-1) + b
    pos = y[..., None] > 0
    boosted = c + gamma * torch.where(pos, c.clamp(min=0), c.clamp(max=0))
    z = boosted.sum(-1) + b + gamma * torch.where(y > 0, b.clamp(min=0), b.clamp(max=0))
    return y, lambda r: torch.einsum("...ji,...j->...i", boosted, torch.where(y != 0, _div(r, z), 0.0))


def dense(x, module, rule="epsilon", gamma=0.25):
    """nn.Linear `module` with the epsilon rule or a gamma rule."""
    if rule == "gamma":
        return gamma_linear(x, module.weight, module.bias, gamma)
    if rule == "gamma-signed":
        return signed_gamma_linear(x, module.weight, module.bias, gamma)
    return linear(x, module.weight, module.bias)


def conv2d(x, module, rule="epsilon", gamma=0.25):
    """nn.Conv2d (groups 1, zero padding) by unfolded receptive fields.

    z_olk = sum_i cols_bil W'_oi (W' = W or W_g), R_cols_bil = sum_o cols_bil W'_oi / z'_bol * R_bol,
    then each pixel collects the relevance of all its copies (fold = sum over overlapping fields).
    """
    assert module.groups == 1 and module.padding_mode == "zeros"
    k, s, p, d = module.kernel_size, module.stride, module.padding, module.dilation
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s)  # [B, C*k*k, L]
    w = d64(module.weight).reshape(module.out_channels, -1)
    b = d64(module.bias)
    y = torch.einsum("oi,bil->bol", w, cols) + (b[None, :, None] if b is not None else 0.0)
    signed = rule == "gamma-signed"
    if rule == "gamma":
        w_r, b_r = _boost(w, gamma), _boost(b, gamma)
        z = torch.einsum("oi,bil->bol", w_r, cols) + (b_r[None, :, None] if b_r is not None else 0.0)
    elif signed:
        c = torch.einsum("oi,bil->boil", w, cols)  # contributions
        pos = (y > 0)[:, :, None]
        boosted = c + gamma * torch.where(pos, c.clamp(min=0), c.clamp(max=0))
        bb = b[None, :, None] if b is not None else torch.zeros_like(y)
        z = boosted.sum(2) + bb + gamma * torch.where(y > 0, bb.clamp(min=0), bb.clamp(max=0))
    else:
        w_r, z = w, y
    h_out = (x.shape[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    w_out = (x.shape[3] + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1

    def back(r):  # r: [B, O, H_out, W_out]
        if signed:
            r_cols = torch.einsum("boil,bol->bil", boosted, torch.where(y != 0, _div(r.flatten(2), z), 0.0))
        else:
            r_cols = torch.einsum("bil,oi,bol->bil", cols, w_r, _div(r.flatten(2), z))
        return F.fold(r_cols, x.shape[2:], k, dilation=d, padding=p, stride=s)
    return y.view(x.shape[0], module.out_channels, h_out, w_out), back


def add3(a, b, c):
    """y = a + b + c; epsilon rule: each term t gets t / y * R."""
    y = a + b + c
    return y, lambda r: (a * _div(r, y), b * _div(r, y), c * _div(r, y))


def tanh(x):
    """tanh: identity rule."""
    return identity(torch.tanh, x)


# ------------------------------------------------------------------------------------------------
# BERT / RoBERTa
# ------------------------------------------------------------------------------------------------
def _self_attention(att, out_dense, x, mask, mode, rule, gamma):
    n_heads = att.num_attention_heads
    q, bq = dense(x, att.query, rule, gamma)
    k, bk = dense(x, att.key, rule, gamma)
    v, bv = dense(x, att.value, rule, gamma)
    o, b_core = attention_core(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads), mode,
                               causal=False, scale=att.scaling, key_padding_mask=mask)
    y, b_o = dense(merge_heads(o), out_dense, rule, gamma)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_o(r), n_heads))
        return bq(merge_heads(r_q)) + bk(merge_heads(r_k)) + bv(merge_heads(r_v))
    return y, back


def bert_layer(layer, x, mask, mode, rule, gamma):
    """Post-norm layer: LN(x + attn(x)), then LN(h + out(act(inter(h))))."""
    o, b_attn = _self_attention(layer.attention.self, layer.attention.output.dense, x, mask, mode, rule, gamma)
    s1, b_add1 = add(o, x)
    h1, b_ln1 = layer_norm(s1, layer.attention.output.LayerNorm)
    f, b_f = dense(h1, layer.intermediate.dense, rule, gamma)
    a, _ = identity(ACTIVATIONS[act_kind(layer.intermediate.intermediate_act_fn)], f)
    m, b_m = dense(a, layer.output.dense, rule, gamma)
    s2, b_add2 = add(m, h1)
    y, b_ln2 = layer_norm(s2, layer.output.LayerNorm)

    def back(r):
        r_m, r_h1 = b_add2(b_ln2(r))
        r_h1 = r_h1 + b_f(b_m(r_m))
        r_o, r_x = b_add1(b_ln1(r_h1))
        return r_x + b_attn(r_o)
    return y, back


def position_ids_for(embeddings, input_ids, mask):
    """The positions the HF model numbers its tokens with, from its own embedding module: RoBERTa's
    layout (XLM-R, CamemBERT: any embedding with `create_position_ids_from_input_ids`) counts from
    padding_idx + 1 over the non-pad ids (pad ids at padding); BERT's, DistilBERT's and ELECTRA's
    count from 0 (0 here at padding, whose positions no real token sees)."""
    if hasattr(embeddings, "create_position_ids_from_input_ids"):
        return embeddings.create_position_ids_from_input_ids(input_ids, embeddings.padding_idx)
    return ((mask.long().cumsum(-1) - 1).clamp(min=0))


def bert_encoder(base, input_ids, mask, token_type_ids, mode, rule, gamma):
    """(last hidden state, back(R_h) -> (R_word, R_pos, R_type) [B, N] each). BERT, RoBERTa and its
    copies, ELECTRA (its linear `embeddings_project` after the embedding LayerNorm, where present)."""
    emb = base.embeddings
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    word = d64(emb.word_embeddings(input_ids))
    pos = d64(emb.position_embeddings(position_ids_for(emb, input_ids, mask)))
    typ = d64(emb.token_type_embeddings(token_type_ids))
    s, b_sum = add3(word, typ, pos)
    x, b_ln = layer_norm(s, emb.LayerNorm)
    project = getattr(base, "embeddings_project", None)
    b_proj = lambda r: r  # noqa: E731
    if project is not None:
        x, b_proj = dense(x, project, rule, gamma)
    backs = []
    for layer in base.encoder.layer:
        x, back = bert_layer(layer, x, mask, mode, rule, gamma)
        backs.append(back)

    def back_all(r):
        for back in reversed(backs):
            r = back(r)
        r_word, r_typ, r_pos = b_sum(b_ln(b_proj(r)))
        return summed(r_word, -1), summed(r_pos, -1), summed(r_typ, -1)
    return x, back_all


def distilbert_layer(layer, x, mask, mode, rule, gamma):
    """Post-norm layer: LN(x + attn(x)), then LN(h + lin2(act(lin1(h))))."""
    att = layer.attention
    n_heads = att.n_heads
    q, bq = dense(x, att.q_lin, rule, gamma)
    k, bk = dense(x, att.k_lin, rule, gamma)
    v, bv = dense(x, att.v_lin, rule, gamma)
    o, b_core = attention_core(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads), mode,
                               causal=False, scale=att.scaling, key_padding_mask=mask)
    o, b_o = dense(merge_heads(o), att.out_lin, rule, gamma)
    s1, b_add1 = add(o, x)
    h1, b_ln1 = layer_norm(s1, layer.sa_layer_norm)
    f, b_f = dense(h1, layer.ffn.lin1, rule, gamma)
    a, _ = identity(ACTIVATIONS[act_kind(layer.ffn.activation)], f)
    m, b_m = dense(a, layer.ffn.lin2, rule, gamma)
    s2, b_add2 = add(m, h1)
    y, b_ln2 = layer_norm(s2, layer.output_layer_norm)

    def back(r):
        r_m, r_h1 = b_add2(b_ln2(r))
        r_h1 = r_h1 + b_f(b_m(r_m))
        r_o, r_x = b_add1(b_ln1(r_h1))
        r_q, r_k, r_v = b_core(split_heads(b_o(r_o), n_heads))
        return r_x + bq(merge_heads(r_q)) + bk(merge_heads(r_k)) + bv(merge_heads(r_v))
    return y, back


def distilbert_encoder(base, input_ids, mask, mode, rule, gamma):
    """(last hidden state, back(R_h) -> (R_word, R_pos, None)): word + position embeddings, no token types."""
    emb = base.embeddings
    word = d64(emb.word_embeddings(input_ids))
    pos = d64(emb.position_embeddings(position_ids_for(emb, input_ids, mask)))
    s, b_sum = add(word, pos)
    x, b_ln = layer_norm(s, emb.LayerNorm)
    backs = []
    for layer in base.transformer.layer:
        x, back = distilbert_layer(layer, x, mask, mode, rule, gamma)
        backs.append(back)

    def back_all(r):
        for back in reversed(backs):
            r = back(r)
        r_word, r_pos = b_sum(b_ln(r))
        return summed(r_word, -1), summed(r_pos, -1), None
    return x, back_all


def _explain_logits(z, target):
    """R at the logits: the target logit's own value, zero elsewhere (rows of z are [.., classes])."""
    r = torch.zeros_like(z)
    rows = torch.arange(z.shape[0])
    r[rows, target] = z[rows, target]
    return r, z[rows, target].clone()


def _act_head(x, dense_in, act, dense_out):
    """dense_out(act(dense_in(x))) of a task head: epsilon rule on both linears, identity rule on act."""
    t, b_t = linear(x, dense_in.weight, dense_in.bias)
    p, _ = identity(act, t)
    z, b_z = linear(p, dense_out.weight, dense_out.bias)
    return z, lambda r: b_t(b_z(r))


def _act_norm_head(x, dense_in, act, norm, dense_out):
    """dense_out(LN(act(dense_in(x)))): a masked-LM head (BERT, RoBERTa, DistilBERT, ELECTRA's generator)."""
    t, b_t = linear(x, dense_in.weight, dense_in.bias)
    a, _ = identity(act, t)
    n, b_n = layer_norm(a, norm)
    z, b_z = linear(n, dense_out.weight, dense_out.bias)
    return z, lambda r: b_t(b_n(b_z(r)))


def _classifier(model, base, h, rule, gamma):
    """(logits [B, C], back) of a sequence-classification head reading h [B, N, H]."""
    head = getattr(model, "classifier", None)
    if hasattr(head, "out_proj"):  # RoBERTa and its copies: tanh; ELECTRA: its `activation` (GELU)
        act = ACTIVATIONS[act_kind(head.activation)] if hasattr(head, "activation") else torch.tanh
        return _act_head(h[:, 0], head.dense, act, head.out_proj)
    if hasattr(model, "pre_classifier"):  # DistilBERT: classifier(relu(pre_classifier(h[:, 0])))
        return _act_head(h[:, 0], model.pre_classifier, torch.relu, model.classifier)
    t, b_t = dense(h[:, 0], base.pooler.dense, rule, gamma)  # BERT: the pooler is part of the base model
    p, _ = tanh(t)
    z, b_z = linear(p, head.weight, head.bias)
    return z, lambda r: b_t(b_z(r))


def _mlm_head(model, sel):
    """(logits [B, V], back) of a masked-LM head reading the selected hidden states sel [B, H]."""
    if hasattr(model, "lm_head"):  # RoBERTa and its copies
        head = model.lm_head
        return _act_norm_head(sel, head.dense, ACTIVATIONS["gelu"], head.layer_norm, head.decoder)
    if hasattr(model, "vocab_transform"):  # DistilBERT: the model's own activation between its head layers
        return _act_norm_head(sel, model.vocab_transform, ACTIVATIONS[act_kind(model.activation)],
                              model.vocab_layer_norm, model.vocab_projector)
    if hasattr(model, "generator_predictions"):  # ELECTRA's generator
        pred = model.generator_predictions
        return _act_norm_head(sel, pred.dense, ACTIVATIONS[act_kind(pred.activation)], pred.LayerNorm,
                              model.generator_lm_head)
    pred = model.cls.predictions
    return _act_norm_head(sel, pred.transform.dense, ACTIVATIONS[act_kind(pred.transform.transform_act_fn)],
                          pred.transform.LayerNorm, pred.decoder)


def bert_reference(model, input_ids, attention_mask, token_type_ids=None, *, target=None, position=None,
                   seed=None, mode="attnlrp", rule="epsilon", gamma=0.25):
    """Relevance of a BERT-family model by the rules, float64 (BERT, RoBERTa / XLM-R / CamemBERT,
    DistilBERT, ELECTRA).

    Heads: sequence classification (`target` class per row), masked LM (`target` token per row at
    padded index `position` per row), ELECTRA's discriminator (its one logit per token at padded
    index `position`), or the base model with `seed(h) -> R_h` (relevance at the last hidden
    state). Returns dict(word, pos, type: [B, N] (type None without token types); score; out:
    logits or hidden).
    """
    mask = attention_mask.bool()
    base = getattr(model, model.base_model_prefix, model)
    if hasattr(base, "transformer"):  # DistilBERT
        h, back = distilbert_encoder(base, input_ids, mask, mode, rule, gamma)
    else:
        h, back = bert_encoder(base, input_ids, mask, token_type_ids, mode, rule, gamma)
    name = type(model).__name__
    r_h = torch.zeros_like(h)
    rows = torch.arange(h.shape[0])
    if name.endswith("ForSequenceClassification"):
        z, b_head = _classifier(model, base, h, rule, gamma)
        r_z, score = _explain_logits(z, target)
        r_h[:, 0] = b_head(r_z)
        out = z
    elif name.endswith("ForMaskedLM"):
        z, b_head = _mlm_head(model, h[rows, position])
        r_z, score = _explain_logits(z, target)
        r_h[rows, position] = b_head(r_z)
        out = z
    elif hasattr(model, "discriminator_predictions"):  # ELECTRA's discriminator: one logit per token
        pred = model.discriminator_predictions
        z, b_head = _act_head(h[rows, position], pred.dense, ACTIVATIONS[act_kind(pred.activation)],
                              pred.dense_prediction)  # [B, 1]
        r_h[rows, position] = b_head(z)
        score, out = z[:, 0].clone(), z[:, 0]
    else:
        r_h, score = seed(h)
        out = h
    r_word, r_pos, r_type = back(r_h)
    return dict(word=r_word, pos=r_pos, type=r_type, score=score, out=out)


# ------------------------------------------------------------------------------------------------
# ViT / DeiT
# ------------------------------------------------------------------------------------------------
def vit_layer(layer, x, mode, rule, gamma):
    """Pre-norm layer: x + attn(LN(x)), then h + fc2(act(fc1(LN(h))))."""
    att = layer.attention
    n_heads = att.num_attention_heads
    a, b_ln1 = layer_norm(x, layer.layernorm_before)
    q, bq = dense(a, att.q_proj, rule, gamma)
    k, bk = dense(a, att.k_proj, rule, gamma)
    v, bv = dense(a, att.v_proj, rule, gamma)
    o, b_core = attention_core(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads), mode,
                               causal=False, scale=att.scaling)
    o, b_o = dense(merge_heads(o), att.o_proj, rule, gamma)
    h, b_add1 = add(o, x)
    c, b_ln2 = layer_norm(h, layer.layernorm_after)
    f, b_f = dense(c, layer.mlp.fc1, rule, gamma)
    g, _ = identity(ACTIVATIONS[act_kind(layer.mlp.activation_fn)], f)
    m, b_m = dense(g, layer.mlp.fc2, rule, gamma)
    y, b_add2 = add(m, h)

    def back(r):
        r_m, r_h = b_add2(r)
        r_h = r_h + b_ln2(b_f(b_m(r_m)))
        r_o, r_x = b_add1(r_h)
        r_q, r_k, r_v = b_core(split_heads(b_o(r_o), n_heads))
        r_a = bq(merge_heads(r_q)) + bk(merge_heads(r_k)) + bv(merge_heads(r_v))
        return r_x + b_ln1(r_a)
    return y, back


def vit_reference(model, pixel_values, target, mode="attnlrp", rule="epsilon", gamma=0.25):
    """Image classification (CLS token -> classifier, epsilon rule), float64.

    Returns dict(pixel [B, H, W], patch [B, P], cls [B, n_prefix], pos [B, T], score, logits).
    """
    base = getattr(model, model.base_model_prefix)
    emb = base.embeddings
    px = d64(pixel_values)
    p, b_conv = conv2d(px, emb.patch_embeddings.projection, rule, gamma)  # [B, H, h, w]
    patches = p.flatten(2).transpose(1, 2)  # [B, P, H]
    b = px.shape[0]
    prefix = [d64(getattr(emb, n)) for n in ("cls_token", "distillation_token") if getattr(emb, n, None) is not None]
    prefix = torch.cat(prefix, dim=1).expand(b, -1, -1)
    n_prefix = prefix.shape[1]
    tokens = torch.cat([prefix, patches], dim=1)
    pos = d64(emb.position_embeddings).expand(b, -1, -1)
    x, b_emb = add(tokens, pos)
    backs = []
    for layer in base.layers:
        x, back = vit_layer(layer, x, mode, rule, gamma)
        backs.append(back)
    h, b_lnf = layer_norm(x, base.layernorm)
    z, b_z = linear(h[:, 0], model.classifier.weight, model.classifier.bias)
    r_z, score = _explain_logits(z, target)
    r = torch.zeros_like(h)
    r[:, 0] = b_z(r_z)
    r = b_lnf(r)
    for back in reversed(backs):
        r = back(r)
    r_tokens, r_pos = b_emb(r)
    r_patches = r_tokens[:, n_prefix:]
    r_px = b_conv(r_patches.transpose(1, 2).reshape(p.shape))
    return dict(pixel=summed(r_px, 1), patch=summed(r_patches, -1), cls=summed(r_tokens[:, :n_prefix], -1),
                pos=summed(r_pos, -1), score=score, logits=z)
