"""Explicit float64 LRP reference for Qwen2-VL / Qwen2.5-VL / Qwen3-VL, written as relevance formulas.

It walks the vision tower (patch embedding as a linear layer over each flattened patch, pre-norm
blocks with per-image (Qwen2.5-VL: per-window) non-causal attention and 2-D rotary q / k, the MLP),
the patch merger, the merge of the image embeddings into the text sequence (a copy: each position's
relevance goes back to exactly one of the two), and the Qwen2 / Qwen3 decoder with 3-D multimodal
rotary positions, using the primitives of reference_lrp (each `(y, back)` with back the explicit rule).
Qwen3-VL adds learned position embeddings, bilinearly interpolated to each image's patch grid, to the
patch embeddings (epsilon rule on the sum), and DeepStack: the hidden states after the blocks of
`deepstack_visual_indexes`, each through a merger of its own, added to the decoder's hidden states at
the image tokens after its first layers (epsilon rule on the sum; that relevance walks back into the
vision tower at the block it came from and counts at the image token's relevance).
The position ids (the vision tower's (h, w) per patch, the decoder's (t, h, w) per token), the vision
rotary tables, Qwen3-VL's interpolated position embeddings and its interleaved multimodal rotary
tables are computed here from their definitions, not by the model.
"""

from __future__ import annotations

import torch

from reference_lrp import (ACTIVATIONS, act_kind, add, attention_core, d64, head_relevance, identity, linear,
                           llama_layer, mlp_block, norm, plain_mlp, rope)
from scaled_close import summed


def vision_patch_positions(grid, m):
    """(h, w) of each patch, in the processor's order: [t, h/m, w/m, m, m] per image."""
    out = []
    for t, h, w in grid.tolist():
        hh = torch.arange(h).view(h // m, m, 1, 1).expand(h // m, m, w // m, m).permute(0, 2, 1, 3)
        ww = torch.arange(w).view(1, 1, w // m, m).expand(h // m, m, w // m, m).permute(0, 2, 1, 3)
        out.append(torch.stack([hh.reshape(-1), ww.reshape(-1)], -1).repeat(t, 1))
    return torch.cat(out)


def vision_rotary(visual, grid, m):
    """cos, sin [n_patches, head_dim]: the h angles on the first quarter, w on the second, repeated."""
    inv = d64(visual.rotary_pos_emb.inv_freq)
    pos = vision_patch_positions(grid, m).double()
    f = torch.cat([pos[:, :1] * inv, pos[:, 1:] * inv], -1)
    f = torch.cat([f, f], -1)
    return f.cos(), f.sin()


def mrope_positions(ids, mask, grid, image_token_id, m):
    """[3, B, N] decoder positions: text tokens t = h = w = the running index; an image's tokens
    (t, h, w) = start + their grid coordinates (merged patches), after it the index continues at
    start + max(h, w) / m. 0 at padding."""
    pos = torch.zeros(3, *ids.shape, dtype=torch.long)
    images = iter(grid.tolist())
    for b in range(ids.shape[0]):
        real = mask[b].nonzero().flatten().tolist()
        i, nxt = 0, 0
        while i < len(real):
            j = real[i]
            if ids[b, j] == image_token_id:
                t, h, w = next(images)
                h, w = h // m, w // m
                for k in range(t * h * w):
                    pos[:, b, real[i + k]] = torch.tensor([nxt + k // (h * w), nxt + (k // w) % h, nxt + k % w])
                i += t * h * w
                nxt += max(h, w)
            else:
                pos[:, b, j] = nxt
                i, nxt = i + 1, nxt + 1
    return pos


def image_lengths(grid):
    """Patches per image: the vision blocks' attention sequences (full attention)."""
    return [int(t) * int(h) * int(w) for t, h, w in grid.tolist()]


def vision_attention(attn, x, cos, sin, chunks, mode):
    """Fused qkv, 2-D rotary on q and k (epsilon rule on its two terms), attention within each chunk
    of patches (non-causal; the attention rules), output projection."""
    n, heads = x.shape[0], attn.num_heads
    qkv, b_qkv = linear(x, attn.qkv.weight, attn.qkv.bias)
    q, k, v = (t.transpose(0, 1)[None] for t in qkv.view(n, 3, heads, -1).unbind(1))  # [1, H, n, d]
    q, b_rq = rope(q, cos[None, None], sin[None, None])
    k, b_rk = rope(k, cos[None, None], sin[None, None])
    outs, backs, start = [], [], 0
    for length in chunks:
        sl = slice(start, start + length)
        o, b = attention_core(q[:, :, sl], k[:, :, sl], v[:, :, sl], mode, causal=False, scale=attn.scaling)
        outs.append(o)
        backs.append((sl, b))
        start += length
    o = torch.cat(outs, 2)[0].transpose(0, 1).reshape(n, -1)
    y, b_o = linear(o, attn.proj.weight, attn.proj.bias)

    def back(r):
        r_o = b_o(r).view(n, heads, -1).transpose(0, 1)[None]
        r_q, r_k, r_v = (torch.zeros_like(t) for t in (q, k, v))
        for sl, b in backs:
            r_q[:, :, sl], r_k[:, :, sl], r_v[:, :, sl] = b(r_o[:, :, sl])
        r_q, r_k = b_rq(r_q), b_rk(r_k)
        stacked = torch.stack([t[0].transpose(0, 1) for t in (r_q, r_k, r_v)], 1)  # [n, 3, H, d]
        return b_qkv(stacked.reshape(n, -1))
    return y, back


def vision_block(blk, x, cos, sin, chunks, mode):
    a, b_n1 = norm(x, blk.norm1)
    o, b_attn = vision_attention(blk.attn, a, cos, sin, chunks, mode)
    x2, b_add1 = add(x, o)
    c, b_n2 = norm(x2, blk.norm2)
    if hasattr(blk.mlp, "linear_fc1"):  # Qwen3-VL: linear_fc2(act(linear_fc1(x)))
        mo, b_mlp = plain_mlp(c, blk.mlp.linear_fc1, blk.mlp.linear_fc2, act_kind(blk.mlp.act_fn))
    elif hasattr(blk.mlp, "fc1"):  # Qwen2-VL: fc2(act(fc1(x)))
        f, b_fc1 = linear(c, blk.mlp.fc1.weight, blk.mlp.fc1.bias)
        g, _ = identity(ACTIVATIONS[act_kind(blk.mlp.act)], f)
        mo, b_fc2 = linear(g, blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        b_mlp = lambda r: b_fc1(b_fc2(r))  # noqa: E731
    else:  # Qwen2.5-VL: gated
        mo, b_mlp = mlp_block(blk.mlp, c, mode)
    y, b_add2 = add(x2, mo)

    def back(r):
        r_x2, r_m = b_add2(r)
        r_x2 = r_x2 + b_n2(b_mlp(r_m))
        r_x, r_o = b_add1(r_x2)
        return r_x + b_n1(b_attn(r_o))
    return y, back


def patch_merger(merger, x):
    """norm, then each group of m x m consecutive patches concatenated: Linear, GELU (identity), Linear.
    Qwen3-VL's DeepStack mergers norm the concatenated group instead (`use_postshuffle_norm`)."""
    n, dim = x.shape
    if hasattr(merger, "linear_fc1"):  # Qwen3-VL
        if merger.use_postshuffle_norm:
            a, b_ln = norm(x.reshape(-1, merger.hidden_size), merger.norm)
        else:
            a, b_ln = norm(x, merger.norm)
            a = a.reshape(-1, merger.hidden_size)
        y, b_mlp = plain_mlp(a, merger.linear_fc1, merger.linear_fc2, act_kind(merger.act_fn))
        if merger.use_postshuffle_norm:
            return y, lambda r: b_ln(b_mlp(r)).reshape(n, dim)
        return y, lambda r: b_ln(b_mlp(r).reshape(n, dim))
    a, b_ln = norm(x, merger.ln_q)
    h, b1 = linear(a.reshape(-1, merger.hidden_size), merger.mlp[0].weight, merger.mlp[0].bias)
    g, _ = identity(ACTIVATIONS[act_kind(merger.mlp[1])], h)
    y, b2 = linear(g, merger.mlp[2].weight, merger.mlp[2].bias)
    return y, lambda r: b_ln(b1(b2(r)).reshape(n, dim))


def learned_positions(visual, grid):
    """Qwen3-VL: the square table of learned position embeddings resized to each image's patch grid (bilinear,
    corners aligned: torch's interpolate), one row per patch in the processor's order ([n_patches, hidden])."""
    side = int(visual.pos_embed.num_embeddings ** 0.5)
    table = d64(visual.pos_embed.weight).T.reshape(1, -1, side, side)
    out, start = [], 0
    pos = vision_patch_positions(grid, visual.spatial_merge_size)
    for t, h, w in grid.tolist():
        resized = torch.nn.functional.interpolate(table, size=(h, w), mode="bilinear", align_corners=True)[0]
        hw = pos[start:start + t * h * w]
        out.append(resized[:, hw[:, 0], hw[:, 1]].T)
        start += t * h * w
    return torch.cat(out)


def window_chunks(visual, grid):
    """Qwen2.5-VL: (the merged tokens' order, window by window; each window's length in patches), the
    bookkeeping of transformers' own window partition (index arithmetic, no relevance rule)."""
    from transformers.vision_utils import get_vision_window_index

    index, cu = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                        window_size=visual.window_size, patch_size=visual.patch_size)
    return index, (cu[1:] - cu[:-1]).tolist()


def vision_reference(visual, pixels, grid, mode):
    """(image embeddings [n_tokens, hidden], DeepStack features [[n_tokens, hidden], ...] (Qwen3-VL; else
    none), back(R, R_deepstack) -> (R_pixels [n_patches, patch_dim], R_patch_embeddings))."""
    m = visual.spatial_merge_size
    weight = visual.patch_embed.proj.weight
    x0, b_patch = linear(d64(pixels), weight.reshape(weight.shape[0], -1), visual.patch_embed.proj.bias)
    b_pos = None
    if hasattr(visual, "pos_embed"):  # Qwen3-VL: + learned positions (epsilon rule on the sum)
        x0, b_pos = add(x0, learned_positions(visual, grid))
    cos, sin = vision_rotary(visual, grid, m)
    lengths = image_lengths(grid)
    x, order = x0, None
    windowed = hasattr(visual, "fullatt_block_indexes")
    if windowed:  # groups of m*m patches reordered window by window; the merger reads that order, undone after
        index, windows = window_chunks(visual, grid)
        order = (index[:, None] * m * m + torch.arange(m * m)).flatten()
        x, cos, sin = x[order], cos[order], sin[order]
    backs, deep, b_deep = [], [], {}
    for i, blk in enumerate(visual.blocks):
        chunks = lengths if not windowed or i in visual.fullatt_block_indexes else windows
        x, b = vision_block(blk, x, cos, sin, chunks, mode)
        backs.append(b)
        if i in getattr(visual, "deepstack_visual_indexes", ()):  # Qwen3-VL: this block's hidden states
            k = visual.deepstack_visual_indexes.index(i)
            d, b_deep[i] = patch_merger(visual.deepstack_merger_list[k], x)
            deep.append(d)
    y, b_merge = patch_merger(visual.merger, x)
    if windowed:
        y = y[torch.argsort(index)]

    def back(r, r_deep=()):
        if windowed:
            r = r[index]
        r = b_merge(r)
        for i in reversed(range(len(backs))):
            if i in b_deep:  # the DeepStack merger's relevance joins at this block's output
                r = r + b_deep[i](r_deep[visual.deepstack_visual_indexes.index(i)])
            r = backs[i](r)
        if windowed:
            r = r[torch.argsort(order)]
        if b_pos is not None:
            r = b_pos(r)[0]
        return b_patch(r), r
    return y, deep, back


def interleaved_mrope(rotary, pos):
    """Qwen3-VL's decoder rotary tables cos, sin [B, N, head_dim]: frequency j of inv_freq turns by the
    h position where j % 3 == 1 and j < 3 * mrope_section[1], by w where j % 3 == 2 and j < 3 *
    mrope_section[2], by t elsewhere; the frequencies repeated over both halves (Llama's layout)."""
    inv = d64(rotary.inv_freq)
    section = rotary.mrope_section
    j = torch.arange(len(inv))
    axis = torch.zeros(len(inv), dtype=torch.long)
    axis[(j % 3 == 1) & (j < 3 * section[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * section[2])] = 2
    f = pos.double().permute(1, 2, 0)[..., axis] * inv  # [B, N, head_dim / 2]: each frequency's own axis
    f = torch.cat([f, f], -1)
    return f.cos(), f.sin()


def vlm_reference(model, ids, mask, pixels, grid, positions, target, contrast=None, mode="attnlrp"):
    """Relevance by the rules: a dict of the merged sequence's [B, N], the text tokens' [B, N], the
    pixels' [n_patches, patch_dim] and the patch embeddings' [n_patches]; the explained score [B]; the
    logits at the positions."""
    inner, cfg = model.model, model.config.text_config
    lm = inner.language_model
    mask = mask.bool()
    is_image = ids == model.config.image_token_id
    x = d64(lm.embed_tokens(ids)).clone()
    image_embeds, deep, b_vision = vision_reference(inner.visual, pixels, grid, mode)
    x[is_image] = image_embeds
    pos = mrope_positions(ids, mask, grid, model.config.image_token_id, inner.visual.spatial_merge_size)
    if deep:  # Qwen3-VL: interleaved t, h, w frequencies
        cos, sin = interleaved_mrope(lm.rotary_emb, pos)
    else:
        cos, sin = (d64(t) for t in lm.rotary_emb(x, pos))
    backs, b_deep = [], []
    for i, layer in enumerate(lm.layers):
        x, back = llama_layer(layer, x, cos, sin, mask, cfg, mode)
        backs.append(back)
        if i < len(deep):  # DeepStack: + the features of vision block deepstack_visual_indexes[i] at the images
            x_image, b = add(x[is_image], deep[i])
            x = x.clone()
            x[is_image] = x_image
            b_deep.append(b)
    h, b_norm = norm(x, lm.norm)
    r, score, z = head_relevance(h, model.lm_head, positions, target, contrast, None)
    r = b_norm(r)
    r_deep = [None] * len(deep)
    for i in reversed(range(len(backs))):
        if i < len(deep):
            r_image, r_deep[i] = b_deep[i](r[is_image])
            r = r.clone()
            r[is_image] = r_image
        r = backs[i](r)
    r_pixels, r_patches = b_vision(r[is_image], r_deep)
    text = torch.where(is_image[..., None], torch.zeros_like(r), r)
    terms = [r]  # the merged sequence's relevance, plus at the image tokens the DeepStack features'
    for rd in r_deep:
        terms.append(torch.zeros_like(r))
        terms[-1][is_image] = rd
    return ({"relevance": summed(torch.cat(terms, -1), -1), "text_relevance": summed(text, -1),
             "pixels": r_pixels, "patches": summed(r_patches, -1)}, score, z)
