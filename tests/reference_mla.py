"""Explicit float64 LRP reference of DeepSeek-V2 / V3: multi-head latent attention (MLA) and
DeepSeek-V2's softmax router, written as relevance formulas (never the gradient trick).

reference_lrp.decoder_reference walks these models as any Llama-like decoder and calls in here for
the parts of their own (`llama_attention` for an attention layer with kv_a_proj_with_mqa,
`moe_routing` for a router with a topk_method). DeepSeek-V3's sigmoid router is GLM4-MoE's
(reference_lrp.sigmoid_routing), its shared experts a gated MLP (reference_lrp.shared_expert_terms).

MLA, per layer (H heads, no-rope dim dn, rope dim dr, value dim dv, latent rank r):

    q          = q_proj(x)  or  q_b_proj(rmsnorm(q_a_proj(x)))        [B, N, H (dn + dr)]
    c, k_rot   = split(kv_a_proj_with_mqa(x), [r, dr])                  k_rot: one head, shared
    k_nope, v  = split(kv_b_proj(rmsnorm(c)), [dn, dv]) per head
    Q = [q_nope, rope(q_rot)],  K = [k_nope, rope(k_rot) for every head],  V = v     (dv != dn + dr)
    O = attention(Q, K, V) with scale (dn + dr) ** -0.5 * mscale ** 2 (yarn with mscale_all_dim)

Rules: epsilon on every linear map (biases keep their share) and on RoPE (reference_lrp.rope: each
term back to its coordinate; DeepSeek-V3's rope_interleave first de-interleaves the pairs, a
permutation: relevance goes back to where each coordinate came from); identity on the RMSNorms;
the explicit attention rules of reference_attention; the rope key's relevance is the sum over the
heads that share it (each copy's relevance returns to its source).
"""

from __future__ import annotations

import math

import torch

from reference_lrp import attention_core, d64, linear, merge_heads, norm, rope, split_heads


def mla_scale(cfg) -> float:
    """The softmax temperature of DeepSeek's MLA, from the config: qk_head_dim ** -0.5, times
    mscale(factor, mscale_all_dim) ** 2 for a scaled RoPE with mscale_all_dim set,
    mscale(s, m) = 0.1 m ln(s) + 1 (1 for s <= 1)."""
    scale = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5
    rp = cfg.rope_parameters
    if rp.get("rope_type", "default") != "default" and rp.get("mscale_all_dim"):
        factor = rp["factor"]
        m = 0.1 * rp["mscale_all_dim"] * math.log(factor) + 1.0 if factor > 1 else 1.0
        scale *= m * m
    return scale


def deepseek_rope(x, cos, sin, cfg):
    """RoPE as the family applies it: DeepSeek-V2 rotates interleaved pairs in place (its complex
    product); DeepSeek-V3 with rope_interleave de-interleaves (x_0, x_2, ..., x_1, x_3, ...) and
    rotates halves; without it, halves (Llama)."""
    if cfg.model_type == "deepseek_v2":
        return rope(x, cos, sin, interleaved=True)
    if not getattr(cfg, "rope_interleave", False):
        return rope(x, cos, sin)
    rd = x.shape[-1]
    perm = torch.cat([torch.arange(0, rd, 2), torch.arange(1, rd, 2)])
    y, back = rope(x[..., perm], cos, sin)

    def unpermute(r):
        r_x = torch.empty_like(r)
        r_x[..., perm] = back(r)
        return r_x
    return y, unpermute


def mla_attention(attn, x, cos, sin, mask, cfg, mode):
    """DeepSeek-V2 / V3 multi-head latent attention (module docstring); (y, back(R_y) -> R_x)."""
    heads, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    rank = cfg.kv_lora_rank
    if attn.q_proj is not None:
        q, b_q = linear(x, attn.q_proj.weight, attn.q_proj.bias)
    else:
        qa, b_qa = linear(x, attn.q_a_proj.weight, attn.q_a_proj.bias)
        qn, b_qn = norm(qa, attn.q_a_layernorm)
        q, b_qb = linear(qn, attn.q_b_proj.weight, attn.q_b_proj.bias)
        b_q = lambda r: b_qa(b_qn(b_qb(r)))  # noqa: E731
    q_nope, q_rot = split_heads(q, heads).split([dn, dr], dim=-1)
    latent, b_latent = linear(x, attn.kv_a_proj_with_mqa.weight, attn.kv_a_proj_with_mqa.bias)
    c, k_rot = latent.split([rank, dr], dim=-1)
    cn, b_cn = norm(c, attn.kv_a_layernorm)
    kv, b_kv = linear(cn, attn.kv_b_proj.weight, attn.kv_b_proj.bias)
    k_nope, v = split_heads(kv, heads).split([dn, dv], dim=-1)
    q_rot, b_rq = deepseek_rope(q_rot, cos[:, None], sin[:, None], cfg)
    k_rot, b_rk = deepseek_rope(k_rot[:, None], cos[:, None], sin[:, None], cfg)  # [B, 1, N, dr]
    q_full = torch.cat([q_nope, q_rot], dim=-1)
    k_full = torch.cat([k_nope, k_rot.expand(-1, heads, -1, -1)], dim=-1)
    o, b_core = attention_core(q_full, k_full, v, mode, causal=True, scale=mla_scale(cfg), key_padding_mask=mask)
    y, b_o = linear(merge_heads(o), attn.o_proj.weight, attn.o_proj.bias)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_o(r), heads))
        r_qn, r_qr = r_q.split([dn, dr], dim=-1)
        r_kn, r_kr = r_k.split([dn, dr], dim=-1)
        r_kr = b_rk(r_kr.sum(1, keepdim=True))[:, 0]  # the shared rope key: the sum over its heads
        r_c = b_cn(b_kv(merge_heads(torch.cat([r_kn, r_v], dim=-1))))
        return b_q(merge_heads(torch.cat([r_qn, b_rq(r_qr)], dim=-1))) + b_latent(torch.cat([r_c, r_kr], dim=-1))
    return y, back


def deepseek_v2_routing(gate, flat):
    """DeepSeek-V2: p = softmax(router x); top_k experts by p ("greedy"), or among the topk_group
    groups of the largest best p ("group_limited_greedy"); w = routed_scaling_factor * p at the chosen,
    never renormalised. Returns (top_i, w, back(R_w) -> R_flat).

    Rules: the choice takes no relevance; the scale is linear (R unchanged); the softmax rule
    R_s = s (R_p - p sum_j R_p); epsilon on the router."""
    s, b_router = linear(flat, gate.weight)
    p = torch.softmax(s, dim=-1)
    choice = p
    if gate.topk_method == "group_limited_greedy":
        n_tok, n_exp = p.shape
        groups = p.view(n_tok, gate.num_group, -1)
        kept = groups.amax(-1).argsort(-1, descending=True)[:, : gate.topk_group]
        allowed = torch.zeros(n_tok, gate.num_group, dtype=torch.bool)
        allowed[torch.arange(n_tok)[:, None], kept] = True
        choice = torch.where(allowed[..., None].expand_as(groups).reshape(n_tok, n_exp), p, torch.zeros_like(p))
    else:
        assert gate.topk_method == "greedy", gate.topk_method
    top_i = choice.argsort(-1, descending=True)[:, : gate.top_k]
    w = p.gather(-1, top_i)

    def back(r_w):
        r_p = torch.zeros_like(p).scatter(-1, top_i, r_w)
        return b_router(s * (r_p - p * r_p.sum(-1, keepdim=True)))
    return top_i, d64(torch.tensor(gate.routed_scaling_factor)) * w, back
