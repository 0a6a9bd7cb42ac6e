"""Explicit float64 LRP reference for DINOv2 image classification (with or without register tokens),
written as relevance formulas on top of the primitives of reference_lrp / reference_encoders (never the
gradient trick); its logits are checked against the HuggingFace model's own.

    tokens = cat(CLS, conv(pixels)) + pos                          epsilon rule on the sum
             with registers: cat(CLS + pos_0, registers, patches + pos)
    layer:  h = x + ls1 * attn(LN1(x)),  y = h + ls2 * mlp(LN2(h))   layer scale x * lambda: R_x = R_y
            mlp: fc2(act(fc1 .)) or SwiGLU down(silu(gate .) * up .)  identity on act, uniform on the product
    logits = W cat(h_0, mean_p h_p) + b                            patches only (registers excluded); epsilon
                                                                   rule on the mean's terms h_p / P
"""

from __future__ import annotations

import torch

from reference_encoders import conv2d, dense
from reference_lrp import (ACTIVATIONS, _div, act_kind, add, attention_core, d64, identity, layer_norm, linear,
                           merge_heads, split_heads, uniform_product)
from scaled_close import summed


def mlp(module, x, mode, rule, gamma):
    """The plain MLP or the SwiGLU FFN of a layer."""
    if hasattr(module, "gate_proj"):
        g, b_g = dense(x, module.gate_proj, rule, gamma)
        u, b_u = dense(x, module.up_proj, rule, gamma)
        a, _ = identity(ACTIVATIONS[act_kind(module.act_fn)], g)
        p, b_p = uniform_product(a, u, mode)
        y, b_d = dense(p, module.down_proj, rule, gamma)

        def back(r):
            r_a, r_u = b_p(b_d(r))
            return b_g(r_a) + b_u(r_u)
        return y, back
    f, b_f = dense(x, module.fc1, rule, gamma)
    a, _ = identity(ACTIVATIONS[act_kind(module.activation_fn)], f)
    y, b_2 = dense(a, module.fc2, rule, gamma)
    return y, lambda r: b_f(b_2(r))


def dinov2_layer(layer, x, mode, rule, gamma):
    att = layer.attention
    heads = att.num_attention_heads
    a, b_ln1 = layer_norm(x, layer.norm1)
    q, bq = dense(a, att.q_proj, rule, gamma)
    k, bk = dense(a, att.k_proj, rule, gamma)
    v, bv = dense(a, att.v_proj, rule, gamma)
    o, b_core = attention_core(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), mode,
                               causal=False, scale=att.scaling)
    o, b_o = dense(merge_heads(o), att.o_proj, rule, gamma)
    o = o * d64(layer.layer_scale1.lambda1)  # R passes the constant scale unchanged
    h, b_add1 = add(o, x)
    c, b_ln2 = layer_norm(h, layer.norm2)
    m, b_m = mlp(layer.mlp, c, mode, rule, gamma)
    m = m * d64(layer.layer_scale2.lambda1)
    y, b_add2 = add(m, h)

    def back(r):
        r_m, r_h = b_add2(r)
        r_h = r_h + b_ln2(b_m(r_m))
        r_o, r_x = b_add1(r_h)
        r_q, r_k, r_v = b_core(split_heads(b_o(r_o), heads))
        return r_x + b_ln1(bq(merge_heads(r_q)) + bk(merge_heads(r_k)) + bv(merge_heads(r_v)))
    return y, back


def dinov2_reference(model, pixel_values, target, mode="attnlrp", rule="epsilon", gamma=0.25):
    """Returns dict(pixel [B, H, W], patch [B, P], cls [B, 1 + R] (CLS, then the registers), pos [B, 1 + P],
    score, logits), float64."""
    base = getattr(model, model.base_model_prefix)
    emb = base.embeddings
    px = d64(pixel_values)
    p, b_conv = conv2d(px, emb.patch_embeddings.projection, rule, gamma)
    patches = p.flatten(2).transpose(1, 2)  # [B, P, H]
    b = px.shape[0]
    tokens = torch.cat([d64(emb.cls_token).expand(b, -1, -1), patches], dim=1)
    pos = d64(emb.position_embeddings).expand(b, -1, -1)
    s, b_emb = add(tokens, pos)
    registers = getattr(emb, "register_tokens", None)
    n_reg = 0 if registers is None else registers.shape[1]
    if n_reg:
        s = torch.cat([s[:, :1], d64(registers).expand(b, -1, -1), s[:, 1:]], dim=1)
    x = s
    backs = []
    for layer in base.encoder.layer:
        x, back = dinov2_layer(layer, x, mode, rule, gamma)
        backs.append(back)
    h, b_lnf = layer_norm(x, base.layernorm)
    cls, patch_h = h[:, 0], h[:, 1 + n_reg:]
    terms = patch_h / patch_h.shape[1]
    mean = terms.sum(1)
    z, b_z = linear(torch.cat([cls, mean], dim=1), model.classifier.weight, model.classifier.bias)
    rows = torch.arange(b)
    r_z = torch.zeros_like(z)
    r_z[rows, target] = z[rows, target]
    r_in = b_z(r_z)
    hidden = cls.shape[-1]
    r = torch.zeros_like(h)
    r[:, 0] = r_in[:, :hidden]
    r[:, 1 + n_reg:] = terms * _div(r_in[:, hidden:], mean)[:, None]
    r = b_lnf(r)
    for back in reversed(backs):
        r = back(r)
    r_reg = r[:, 1:1 + n_reg]
    r_tokens, r_pos = b_emb(torch.cat([r[:, :1], r[:, 1 + n_reg:]], dim=1))
    r_patches = r_tokens[:, 1:]
    r_px = b_conv(r_patches.transpose(1, 2).reshape(p.shape))
    return dict(pixel=summed(r_px, 1), patch=summed(r_patches, -1),
                cls=summed(torch.cat([r_tokens[:, :1], r_reg], dim=1), -1), pos=summed(r_pos, -1),
                score=z[rows, target].clone(), logits=z)
