"""Explicit float64 LRP references for CLIP and SigLIP (towers, attention pooling, the image-text
similarity), written as relevance formulas on top of reference_lrp / reference_encoders.

New rules written out here:
- L2 normalisation y = x / ||x|| with the norm a constant: y is linear in x, each y_d = x_d / ||x||
  a single term, so R_x_d = R_y_d.
- the dot product c = sum_d u_d t_d of the normalised embeddings: epsilon rule over its terms
  z_d = u_d t_d (R_z_d = z_d / c * R_c), then the uniform rule on each bilinear term: half of R_z_d
  to u_d, half to t_d.
- the logit s = scale * c + bias: one term per input, the bias keeps its own share (epsilon rule):
  R_c = scale * c / s * R_s.
- the mean over tokens (image classifiers): y = sum_t x_t / n, R_x_t = (x_t / n) / y * R_y.
- torch.nn.MultiheadAttention (SigLIP's pooling head): three linear projections of a packed
  in_proj (epsilon rule), the attention rules of reference_attention, the linear out_proj.
"""

from __future__ import annotations

import copy

import torch

from reference_encoders import conv2d, dense
from reference_lrp import (ACTIVATIONS, _div, add, attention_core, d64, identity, layer_norm, linear, merge_heads,
                           split_heads)
from scaled_close import summed


def quick_gelu(t):
    return t * torch.sigmoid(1.702 * t)


def activation(module):
    """The reference's own reading of a CLIP / SigLIP MLP activation (QuickGELU, GELU-tanh, GELU)."""
    from transformers import activations as hf

    if isinstance(module, hf.QuickGELUActivation):
        return quick_gelu
    if isinstance(module, (hf.GELUTanh, hf.NewGELUActivation)):
        return ACTIVATIONS["gelu_tanh"]
    if isinstance(module, hf.GELUActivation):
        return ACTIVATIONS["gelu"]
    raise AssertionError(f"no reference activation for {type(module).__name__}")


def mlp(x, module, rule, gamma):
    """fc2(act(fc1(x))): epsilon (or gamma) rule on the linears, identity rule on the activation."""
    f, b_f = dense(x, module.fc1, rule, gamma)
    a, _ = identity(activation(module.activation_fn), f)
    m, b_m = dense(a, module.fc2, rule, gamma)
    return m, lambda r: b_f(b_m(r))


def self_attention(att, x, mask, causal, mode, rule, gamma):
    n_heads = att.num_heads
    q, bq = dense(x, att.q_proj, rule, gamma)
    k, bk = dense(x, att.k_proj, rule, gamma)
    v, bv = dense(x, att.v_proj, rule, gamma)
    o, b_core = attention_core(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads), mode,
                               causal=causal, scale=att.scale, key_padding_mask=mask)
    y, b_o = dense(merge_heads(o), att.out_proj, rule, gamma)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_o(r), n_heads))
        return bq(merge_heads(r_q)) + bk(merge_heads(r_k)) + bv(merge_heads(r_v))
    return y, back


def encoder_layer(layer, x, mask, causal, mode, rule, gamma):
    """Pre-norm layer: h = x + attn(LN1(x)), y = h + mlp(LN2(h))."""
    a, b_ln1 = layer_norm(x, layer.layer_norm1)
    o, b_att = self_attention(layer.self_attn, a, mask, causal, mode, rule, gamma)
    h, b_add1 = add(o, x)
    c, b_ln2 = layer_norm(h, layer.layer_norm2)
    m, b_m = mlp(c, layer.mlp, rule, gamma)
    y, b_add2 = add(m, h)

    def back(r):
        r_m, r_h = b_add2(r)
        r_h = r_h + b_ln2(b_m(r_m))
        r_o, r_x = b_add1(r_h)
        return r_x + b_ln1(b_att(r_o))
    return y, back


def stack(layers, x, mask, causal, mode, rule, gamma):
    backs = []
    for layer in layers:
        x, back = encoder_layer(layer, x, mask, causal, mode, rule, gamma)
        backs.append(back)

    def back_all(r):
        for back in reversed(backs):
            r = back(r)
        return r
    return x, back_all


def multihead_attention(mha, query, kv, mode, rule="epsilon", gamma=0.25, keep=None):
    """torch.nn.MultiheadAttention(query, kv, kv) (batch_first), packed in_proj; `keep` [B, M] (True = a key
    attended); back -> (R_query, R_kv)."""
    e, n_heads = mha.embed_dim, mha.num_heads
    w, b = d64(mha.in_proj_weight), d64(mha.in_proj_bias)
    proj = [dense(t, _Linear(w[i * e:(i + 1) * e], b[i * e:(i + 1) * e]), rule, gamma)
            for i, t in enumerate((query, kv, kv))]
    (q, bq), (k, bk), (v, bv) = proj
    o, b_core = attention_core(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads), mode,
                               causal=False, scale=(e // n_heads) ** -0.5, key_padding_mask=keep)
    y, b_o = dense(merge_heads(o), mha.out_proj, rule, gamma)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_o(r), n_heads))
        return bq(merge_heads(r_q)), bk(merge_heads(r_k)) + bv(merge_heads(r_v))
    return y, back


class _Linear:
    """A weight / bias pair read like an nn.Linear by reference_encoders.dense."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias


def pooling_head(head, x, mode, rule, gamma):
    """SigLIP: a = MHA(probe, x, x); y = (a + mlp(LN(a)))[:, 0]. The probe is a constant (no relevance kept)."""
    probe = d64(head.probe).expand(x.shape[0], -1, -1)
    a, b_att = multihead_attention(head.attention, probe, x, mode, rule, gamma)
    c, b_ln = layer_norm(a, head.layernorm)
    m, b_m = mlp(c, head.mlp, rule, gamma)
    y, b_add = add(a, m)

    def back(r):
        r_a, r_m = b_add(r[:, None])
        return b_att(r_a + b_ln(b_m(r_m)))[1]
    return y[:, 0], back


def _valid_as_zero(conv):
    """SigLIP's patch convolution says padding="valid": the same as zero padding 0 for reference_encoders.conv2d."""
    if conv.padding != "valid":
        return conv
    clone = copy.copy(conv)
    clone.padding = (0, 0)
    return clone


def vision_tower(tower, pixel_values, mode, rule="epsilon", gamma=0.25, position_ids=None, patch_mask=None):
    """(hidden [B, T, H] as HF's last_hidden_state, pooled [B, H] as pooler_output, back) of a CLIP / SigLIP
    vision tower (or Idefics3's: `position_ids` [B, T] the position-table rows read, default 0..T-1;
    `patch_mask` [B, T] the patches attended as keys, default all). back(R_hidden, R_pooled) -> dict(pixel
    [B, H, W], patch, cls, pos)."""
    emb = tower.embeddings
    px = d64(pixel_values)
    p, b_conv = conv2d(px, _valid_as_zero(emb.patch_embedding), rule, gamma)
    patches = p.flatten(2).transpose(1, 2)
    b = px.shape[0]
    cls = getattr(emb, "class_embedding", None)
    prefix = d64(cls).view(1, 1, -1).expand(b, 1, -1) if cls is not None else patches[:, :0]
    n_prefix = prefix.shape[1]
    tokens = torch.cat([prefix, patches], dim=1)
    table = d64(emb.position_embedding.weight)
    x, b_emb = add(tokens, table[None].expand(b, -1, -1) if position_ids is None else table[position_ids])
    b_pre = lambda r: r  # noqa: E731
    if hasattr(tower, "pre_layrnorm"):
        x, b_pre = layer_norm(x, tower.pre_layrnorm)
    h, b_stack = stack(tower.encoder.layers, x, patch_mask, False, mode, rule, gamma)
    if cls is not None:  # CLIP: last_hidden_state before the post-norm, pooled = post_layernorm(h[:, 0])
        pooled, b_post = layer_norm(h[:, 0], tower.post_layernorm)
        hidden = h

        def back_head(r_hidden, r_pooled):
            r = r_hidden.clone()
            if r_pooled is not None:
                r[:, 0] += b_post(r_pooled)
            return r
    else:  # SigLIP: last_hidden_state = post_layernorm(h); pooled = head(last_hidden_state) (or None)
        hidden, b_post = layer_norm(h, tower.post_layernorm)
        pooled, b_pool = (pooling_head(tower.head, hidden, mode, rule, gamma) if getattr(tower, "use_head", False)
                          else (None, None))

        def back_head(r_hidden, r_pooled):
            return b_post(r_hidden + (b_pool(r_pooled) if r_pooled is not None else 0.0))

    def back(r_hidden=None, r_pooled=None):
        r_hidden = torch.zeros_like(hidden) if r_hidden is None else r_hidden
        r_tokens, r_pos = b_emb(b_pre(b_stack(back_head(r_hidden, r_pooled))))
        r_patches = r_tokens[:, n_prefix:]
        r_px = b_conv(r_patches.transpose(1, 2).reshape(p.shape))
        return dict(pixel=summed(r_px, 1), patch=summed(r_patches, -1), cls=summed(r_tokens[:, :n_prefix], -1),
                    pos=summed(r_pos, -1))
    return hidden, pooled, back


def eos_index(tower, input_ids):
    """The token CLIP's text tower pools: the largest id (eos_token_id == 2, HF's legacy reading), else the first
    eos_token_id."""
    if tower.eos_token_id == 2:
        return input_ids.argmax(-1)
    return (input_ids == tower.eos_token_id).int().argmax(-1)


def text_tower(tower, input_ids, attention_mask, mode, rule="epsilon", gamma=0.25):
    """(hidden [B, N, H] after the final norm, pooled [B, H] as pooler_output, back) of a CLIP (causal, EOS
    pooling) or SigLIP (bidirectional, last token, `head`) text tower. Positions count each row's real tokens
    from 0. back(R_hidden, R_pooled) -> dict(word [B, N], pos [B, N])."""
    emb = tower.embeddings
    mask = attention_mask.bool()
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    x, b_emb = add(d64(emb.token_embedding(input_ids)), d64(emb.position_embedding(positions)))
    causal = not hasattr(tower, "head")  # CLIP's text tower is causal, SigLIP's is not
    h, b_stack = stack(tower.encoder.layers, x, mask, causal, mode, rule, gamma)
    hidden, b_final = layer_norm(h, tower.final_layer_norm)
    rows = torch.arange(h.shape[0])
    index = eos_index(tower, input_ids) if causal else torch.full_like(rows, h.shape[1] - 1)
    pooled, b_pool = hidden[rows, index], lambda r: r
    if not causal:
        pooled, b_pool = dense(pooled, tower.head, rule, gamma)

    def back(r_hidden=None, r_pooled=None):
        r = torch.zeros_like(hidden) if r_hidden is None else r_hidden.clone()
        if r_pooled is not None:
            r[rows, index] += b_pool(r_pooled)
        r_word, r_pos = b_emb(b_stack(b_final(r)))
        return dict(word=summed(r_word, -1), pos=summed(r_pos, -1))
    return hidden, pooled, back


def similarity(u, t, scale, bias=None):
    """s = scale * (u / |u|) . (t / |t|) + bias, and back(R_s) -> (R_u, R_t) by the module docstring's rules."""
    un, tn = u / u.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)  # R passes unchanged
    z = un * tn
    c = z.sum(-1)
    s = scale * c + (0.0 if bias is None else bias)

    def back(r_s):
        r_c = scale * c * _div(r_s, s)
        r_z = z * _div(r_c, c)[:, None]
        return r_z / 2, r_z / 2
    return s, back


def joint_reference(model, input_ids, attention_mask, pixel_values, mode="attnlrp"):
    """Relevance of CLIPModel / SiglipModel's similarity of image i with text i, float64.

    Returns dict(word, pos [B, N]; pixel [B, H, W], patch, cls, image_pos; score [B]; logits [B] (the
    similarity itself, against the model's logits_per_image diagonal))."""
    _, img_pooled, b_img = vision_tower(model.vision_model, pixel_values, mode)
    _, txt_pooled, b_txt = text_tower(model.text_model, input_ids, attention_mask, mode)
    b_vproj = b_tproj = lambda r: r  # noqa: E731
    u, t = img_pooled, txt_pooled
    if hasattr(model, "visual_projection"):  # CLIP: bias-free projections into the joint space
        u, b_vproj = linear(img_pooled, model.visual_projection.weight)
        t, b_tproj = linear(txt_pooled, model.text_projection.weight)
    scale = d64(model.logit_scale).exp()
    bias = d64(getattr(model, "logit_bias", None))
    s, b_sim = similarity(u, t, scale, bias)
    r_u, r_t = b_sim(s.clone())
    img, txt = b_img(None, b_vproj(r_u)), b_txt(None, b_tproj(r_t))
    return dict(word=txt["word"], pos=txt["pos"], pixel=img["pixel"], patch=img["patch"], cls=img["cls"],
                image_pos=img["pos"], score=s.clone(), logits=s)


def vector_reference(tower_model, inputs, target, mode="attnlrp", rule="epsilon", gamma=0.25):
    """A tower model's explained embedding dimension `target` [B] (pooler_output, or the projection's
    image_embeds / text_embeds), float64. Returns the tower's back() fields with score and out (the vector)."""
    tower = getattr(tower_model, "vision_model", getattr(tower_model, "text_model", tower_model))
    if "pixel_values" in inputs:
        _, pooled, back = vision_tower(tower, inputs["pixel_values"], mode, rule, gamma)
    else:
        _, pooled, back = text_tower(tower, inputs["input_ids"], inputs["attention_mask"], mode, rule, gamma)
    proj = getattr(tower_model, "visual_projection", getattr(tower_model, "text_projection", None))
    vec, b_proj = (pooled, lambda r: r) if proj is None else linear(pooled, proj.weight)
    rows = torch.arange(vec.shape[0])
    r = torch.zeros_like(vec)
    r[rows, target] = vec[rows, target]
    return dict(back(None, b_proj(r)), score=vec[rows, target].clone(), out=vec)


def classifier_reference(model, pixel_values, target, mode="attnlrp"):
    """CLIP / SigLIP ForImageClassification: classifier(mean of the tokens) (CLIP: the patch tokens of the
    pre-post-norm state; SigLIP: every token of the post-normed state); the mean by the epsilon rule."""
    hidden, _, back = vision_tower(model.vision_model, pixel_values, mode)
    start = 1 if hasattr(model.vision_model, "pre_layrnorm") else 0
    tokens = hidden[:, start:]
    mean = tokens.mean(1)
    z, b_z = linear(mean, model.classifier.weight, model.classifier.bias)
    rows = torch.arange(z.shape[0])
    r_z = torch.zeros_like(z)
    r_z[rows, target] = z[rows, target]
    r_mean = b_z(r_z)
    r_hidden = torch.zeros_like(hidden)
    r_hidden[:, start:] = tokens / tokens.shape[1] * _div(r_mean, mean)[:, None]
    return dict(back(r_hidden, None), score=z[rows, target].clone(), out=z)
