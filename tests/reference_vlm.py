"""Explicit float64 LRP reference for Qwen2-VL / Qwen2.5-VL, written as relevance formulas.

It walks the vision tower (patch embedding as a linear layer over each flattened patch, pre-norm
blocks with per-image (Qwen2.5-VL: per-window) non-causal attention and 2-D rotary q / k, the MLP),
the patch merger, the merge of the image embeddings into the text sequence (a copy: each position's
relevance goes back to exactly one of the two), and the Qwen2 decoder with 3-D multimodal rotary
positions, using the primitives of reference_lrp (each `(y, back)` with back the explicit rule).
The position ids (the vision tower's (h, w) per patch, the decoder's (t, h, w) per token) and the
vision rotary tables are computed here from their definitions, not by the model.
"""

from __future__ import annotations

import torch

from reference_lrp import (ACTIVATIONS, act_kind, add, attention_core, d64, head_relevance, identity, linear,
                           llama_layer, mlp_block, norm, rope)
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
    if hasattr(blk.mlp, "fc1"):  # Qwen2-VL: fc2(act(fc1(x)))
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
    """norm, then each group of m x m consecutive patches concatenated: Linear, GELU (identity), Linear."""
    a, b_ln = norm(x, merger.ln_q)
    n, dim = a.shape
    h, b1 = linear(a.reshape(-1, merger.hidden_size), merger.mlp[0].weight, merger.mlp[0].bias)
    g, _ = identity(ACTIVATIONS[act_kind(merger.mlp[1])], h)
    y, b2 = linear(g, merger.mlp[2].weight, merger.mlp[2].bias)
    return y, lambda r: b_ln(b1(b2(r)).reshape(n, dim))


def window_chunks(visual, grid):
    """Qwen2.5-VL: (the merged tokens' order, window by window; each window's length in patches), the
    bookkeeping of transformers' own window partition (index arithmetic, no relevance rule)."""
    from transformers.vision_utils import get_vision_window_index

    index, cu = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                        window_size=visual.window_size, patch_size=visual.patch_size)
    return index, (cu[1:] - cu[:-1]).tolist()


def vision_reference(visual, pixels, grid, mode):
    """(image embeddings [n_tokens, hidden], back(R) -> (R_pixels [n_patches, patch_dim], R_patch_embeddings))."""
    m = visual.spatial_merge_size
    x0, b_patch = linear(d64(pixels), visual.patch_embed.proj.weight.reshape(visual.patch_embed.proj.weight.shape[0], -1))
    cos, sin = vision_rotary(visual, grid, m)
    lengths = image_lengths(grid)
    x, order = x0, None
    windowed = hasattr(visual, "fullatt_block_indexes")
    if windowed:  # groups of m*m patches reordered window by window; the merger reads that order, undone after
        index, windows = window_chunks(visual, grid)
        order = (index[:, None] * m * m + torch.arange(m * m)).flatten()
        x, cos, sin = x[order], cos[order], sin[order]
    backs = []
    for i, blk in enumerate(visual.blocks):
        chunks = lengths if not windowed or i in visual.fullatt_block_indexes else windows
        x, b = vision_block(blk, x, cos, sin, chunks, mode)
        backs.append(b)
    y, b_merge = patch_merger(visual.merger, x)
    if windowed:
        y = y[torch.argsort(index)]

    def back(r):
        if windowed:
            r = r[index]
        r = b_merge(r)
        for b in reversed(backs):
            r = b(r)
        if windowed:
            r = r[torch.argsort(order)]
        return b_patch(r), r
    return y, back


def vlm_reference(model, ids, mask, pixels, grid, positions, target, contrast=None, mode="attnlrp"):
    """Relevance by the rules: a dict of the merged sequence's [B, N], the text tokens' [B, N], the
    pixels' [n_patches, patch_dim] and the patch embeddings' [n_patches]; the explained score [B]; the
    logits at the positions."""
    inner, cfg = model.model, model.config.text_config
    lm = inner.language_model
    mask = mask.bool()
    is_image = ids == model.config.image_token_id
    x = d64(lm.embed_tokens(ids)).clone()
    image_embeds, b_vision = vision_reference(inner.visual, pixels, grid, mode)
    x[is_image] = image_embeds
    pos = mrope_positions(ids, mask, grid, model.config.image_token_id, inner.visual.spatial_merge_size)
    cos, sin = (d64(t) for t in lm.rotary_emb(x, pos))
    backs = []
    for layer in lm.layers:
        x, back = llama_layer(layer, x, cos, sin, mask, cfg, mode)
        backs.append(back)
    h, b_norm = norm(x, lm.norm)
    r, score, z = head_relevance(h, model.lm_head, positions, target, contrast, None)
    r = b_norm(r)
    for back in reversed(backs):
        r = back(r)
    r_pixels, r_patches = b_vision(r[is_image])
    text = torch.where(is_image[..., None], torch.zeros_like(r), r)
    return ({"relevance": summed(r, -1), "text_relevance": summed(text, -1), "pixels": r_pixels,
             "patches": summed(r_patches, -1)}, score, z)
