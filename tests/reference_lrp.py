"""Explicit float64 LRP references for whole HuggingFace decoder models, written as relevance formulas.

Each primitive computes its forward in float64 and returns `(y, back)`, where `back(R_y)` applies the
layer's explicit relevance rule (epsilon rule as `z_ij / y_j * R_j` summed over outputs, identity,
uniform split, softmax rule, ...). Never the gradient trick. The walkers read the weights of an
unmodified HuggingFace model and re-implement its forward, so the reference logits are checked
against the model's own (a reference that computed something else would fail that check).
"""

from __future__ import annotations

import math

import torch

from reference_attention import attention_forward_reference, attention_relevance_from
from scaled_close import summed


def _div(num, den):
    safe = torch.where(den != 0, den, torch.ones_like(den))
    return torch.where(den != 0, num / safe, torch.zeros_like(num))


def d64(t):
    return None if t is None else t.detach().to(torch.float64)


# ------------------------------------------------------------------------------------------------
# Primitives: forward in float64, back(R) = explicit relevance rule
# ------------------------------------------------------------------------------------------------
def linear(x, weight, bias=None):
    """y_j = sum_i x_i W_ji + b_j; epsilon rule R_x_i = sum_j (x_i W_ji) / y_j * R_j (bias keeps its share)."""
    w = d64(weight)
    y = x @ w.T + (d64(bias) if bias is not None else 0.0)
    return y, lambda r: torch.einsum("...i,ji,...j->...i", x, w, _div(r, y))


def conv1d(x, module):
    """GPT-2 Conv1D: y = x W + b with W stored [in, out]."""
    return linear(x, module.weight.T, module.bias)


def add(a, b):
    """y = a + b; epsilon rule R_a = a / y * R, R_b = b / y * R."""
    y = a + b
    return y, lambda r: (a * _div(r, y), b * _div(r, y))


def identity(fn, x):
    """Elementwise activation, RMSNorm (rms held constant), soft-capping: R_x = R_y."""
    return fn(x), lambda r: r


def rms_norm(x, module, offset=0.0):
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    w = d64(module.weight) + offset
    return identity(lambda t: w * t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps), x)


def layer_norm(x, module):
    """y_i = w_i (x_i - mean) / std + b_i with std constant: z_ij = w_i (delta_ij - 1/n) x_j / std.

    Without weight and bias (OLMo's OlmoLayerNorm: w = 1, b = 0, eps 1e-5 written into its forward)
    the terms sum to y exactly and the rule conserves relevance. Cohere's bias-free LayerNorm keeps
    its epsilon in `variance_epsilon`, and its per-head q / k norms a weight [H, D] over x [..., H, D]."""
    n = x.shape[-1]
    eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
    std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    w = d64(getattr(module, "weight", None))
    b = d64(getattr(module, "bias", None))
    w = torch.ones(n, dtype=x.dtype) if w is None else w
    y = w * (x - x.mean(-1, keepdim=True)) / std + (0.0 if b is None else b)
    centre = torch.eye(n, dtype=x.dtype) - 1.0 / n  # [i, j]

    def back(r):
        z = w[..., :, None] * centre * (x / std)[..., None, :]  # [..., i, j]
        return torch.einsum("...ij,...i->...j", z, _div(r, y))
    return y, back


def norm(x, module):
    """A decoder's norm by its class: RMSNorm (identity rule; Gemma's `(1 + w)`) or LayerNorm (std
    constant). None: no norm there (identity)."""
    if module is None:
        return x, lambda r: r
    name = type(module).__name__
    if name.endswith("RMSNorm"):
        return rms_norm(x, module, 1.0 if name.startswith("Gemma") else 0.0)
    if name.endswith("LayerNorm"):
        return layer_norm(x, module)
    raise AssertionError(f"the reference has no norm rule for {name}")


def sigmoid_split(x):
    """sigmoid(x) = 1/2 + t, t = tanh(x / 2) / 2: epsilon rule over the two terms (the constant 1/2
    absorbs its share, as a bias), then the identity rule on the tanh: R_x = t / y * R_y."""
    t = torch.tanh(x / 2) / 2
    y = 0.5 + t
    return y, lambda r: t * _div(r, y)


def clamp(x, c):
    """y = clamp(x, -c, c) (OLMo's clip_qkv): linear where it does not clip, R_x = R_y there; a clipped
    entry is the constant +-c, which takes its relevance like a bias, R_x = 0."""
    inside = (x >= -c) & (x <= c)
    return x.clamp(-c, c), lambda r: torch.where(inside, r, torch.zeros_like(r))


def uniform_product(a, b, mode="attnlrp"):
    """y = a * b; uniform rule R_a = R_b = R / 2 (CP-LRP: a is a constant gate, R_b = R)."""
    if mode == "cp-lrp":
        return a * b, lambda r: (torch.zeros_like(r), r)
    return a * b, lambda r: (r / 2, r / 2)


def rope(x, cos, sin, interleaved=False):
    """y = x cos + rot(x) sin on the first cos.shape[-1] dims (the rest pass through).

    rot pairs coordinate i with its partner p(i) and a sign: the other half (Llama: rot(x)_i =
    -x_{i+h} for i < h, x_{i-h} after) or, interleaved (GLM-4's apply_rotary_pos_emb), the other
    member of the pair (2m, 2m + 1) (rot(x)_{2m} = -x_{2m+1}, rot(x)_{2m+1} = x_{2m}), where each
    pair takes cos / sin of frequency m. Epsilon rule on the two terms: the `x cos` term returns to
    x_i itself, the rotated term to the partner coordinate (p is its own inverse)."""
    rd = cos.shape[-1]
    idx = torch.arange(rd)
    if interleaved:
        cos = cos[..., : rd // 2].repeat_interleave(2, dim=-1)
        sin = sin[..., : rd // 2].repeat_interleave(2, dim=-1)
        partner, sign = idx ^ 1, torch.where(idx % 2 == 0, -1.0, 1.0)
    else:
        partner, sign = (idx + rd // 2) % rd, torch.where(idx < rd // 2, -1.0, 1.0)
    xr, xp = x[..., :rd], x[..., rd:]
    rot = sign.to(x.dtype) * xr[..., partner]
    z_self, z_cross = xr * cos, rot * sin
    y = torch.cat([z_self + z_cross, xp], dim=-1)

    def back(r):
        frac = _div(r[..., :rd], z_self + z_cross)
        return torch.cat([z_self * frac + (z_cross * frac)[..., partner], r[..., rd:]], -1)
    return y, back


INTERLEAVED_ROPE = ("glm4", "ernie4_5", "cohere", "cohere2")  # model types that rotate interleaved pairs
# rotary tables laid out interleaved (cos_2m = cos_2m+1 = frequency m), not as cat(freqs, freqs)
INTERLEAVED_TABLE = ("cohere", "cohere2")
PER_TYPE_ROPE = ("gemma3_text", "olmo3")  # a rotary table per layer type
HALF_TABLE = ("gpt_oss",)  # rotary tables of head_dim / 2 entries (halves rotated as Llama's)
PARALLEL_BLOCK = ("cohere", "cohere2")  # x + attn(ln(x)) + mlp(ln(x)) with Llama-style attention
NORM_BEFORE_CLIP = ("olmoe",)  # q / k norms over the projection, then clip_qkv (OLMo clips, OLMo 2 norms)


def scaled(x, c):
    """y = c x with a constant c (Granite's multipliers, logit scales): linear, R_x = R_y."""
    return x * c, lambda r: r


def rope_and_window(attn, cfg):
    """(whether q / k are rotated, the sliding window) of an attention layer, as its modeling file
    decides: SmolLM3's `use_rope`; Cohere 2 rotates its sliding layers only; EXAONE 4's global layers
    (`is_sliding` False) take neither RoPE nor a window, unless no window is configured at all."""
    window = attn.sliding_window if hasattr(attn, "sliding_window") else getattr(cfg, "sliding_window", None)
    window = window or None  # Qwen2-MoE's config writes 0 for no window
    if cfg.model_type == "exaone4":
        return window is None or attn.is_sliding, window if attn.is_sliding else None
    if cfg.model_type == "cohere2":
        return window is not None, window
    return getattr(attn, "use_rope", True), window


ACTIVATIONS = {
    "silu": lambda t: t * torch.sigmoid(t),
    "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2))),
    "gelu_tanh": lambda t: 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3))),
    "relu": torch.relu,
    "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t),
}


def act_kind(module):
    """The ACTIVATIONS key of a HuggingFace / torch activation module, read from its class.

    The reference's own mapping (never lrp_triton's): transformers' ACT2FN classes that compute
    SiLU, exact GELU, the tanh approximation of GELU, ReLU, or QuickGELU x sigmoid(1.702 x)."""
    from torch import nn
    from transformers import activations as hf

    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    kinds = ((nn.SiLU, "silu"), (hf.SiLUActivation, "silu"), (hf.GELUActivation, "gelu"),
             (hf.GELUTanh, "gelu_tanh"), (hf.NewGELUActivation, "gelu_tanh"), (nn.ReLU, "relu"),
             (hf.QuickGELUActivation, "quick_gelu"))
    for cls, kind in kinds:
        if isinstance(module, cls):
            return kind
    raise AssertionError(f"the reference has no activation kind for {type(module).__name__}")


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------
def split_heads(t, n_heads):
    b, n, _ = t.shape
    return t.view(b, n, n_heads, -1).transpose(1, 2)


def merge_heads(t):
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def attention_core(q, k, v, mode, **kw):
    """Attention on head tensors; back(R_out) -> (R_q, R_k, R_v) by the explicit attention rules."""
    f = attention_forward_reference(q, k, v, **kw)
    return f["out"], lambda r: attention_relevance_from(f, r, mode=mode, has_bias=kw.get("bias") is not None)


def llama_attention(attn, x, cos, sin, mask, cfg, mode, extent=None):
    """Llama-family self-attention: fused qkv (Phi-3); q/k/v clipping (OLMo's clip_qkv); q/k norms
    over the whole projection (OLMo 2, OLMo 3; OLMoE: before its clip) or per head (Qwen3 / Gemma 3 / EXAONE 4;
    Cohere's with a weight per head); RoPE and the window where the layer has them (`rope_and_window`).
    DeepSeek-V2 / V3's multi-head latent attention: reference_mla. `extent` [B, N]: the last key each
    query sees (bidirectional image blocks: reference_attention.visibility's causal_extent)."""
    if hasattr(attn, "kv_a_proj_with_mqa"):
        from reference_mla import mla_attention
        return mla_attention(attn, x, cos, sin, mask, cfg, mode)
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = attn.head_dim
    if hasattr(attn, "qkv_proj"):
        qkv, back_qkv = linear(x, attn.qkv_proj.weight, attn.qkv_proj.bias)
        q, k, v = qkv.split([n_heads * d, n_kv * d, n_kv * d], dim=-1)
    else:
        q, bq = linear(x, attn.q_proj.weight, attn.q_proj.bias)
        k, bk = linear(x, attn.k_proj.weight, attn.k_proj.bias)
        v, bv = linear(x, attn.v_proj.weight, attn.v_proj.bias)
    identity_back = lambda r: r  # noqa: E731
    b_cq = b_ck = b_cv = identity_back
    per_head = hasattr(attn, "q_norm") and attn.q_norm.weight.shape[-1] == d
    b_fq = b_fk = b_hq = b_hk = identity_back
    norm_first = cfg.model_type in NORM_BEFORE_CLIP
    if hasattr(attn, "q_norm") and not per_head and norm_first:
        q, b_fq = norm(q, attn.q_norm)
        k, b_fk = norm(k, attn.k_norm)
    if getattr(cfg, "clip_qkv", None) is not None:
        (q, b_cq), (k, b_ck), (v, b_cv) = (clamp(t, cfg.clip_qkv) for t in (q, k, v))
    if hasattr(attn, "q_norm") and not per_head and not norm_first:  # over the whole projection, before the split
        q, b_fq = norm(q, attn.q_norm)
        k, b_fk = norm(k, attn.k_norm)
    if per_head and attn.q_norm.weight.dim() == 2:  # Cohere: weight [H, D] on the [B, N, H, D] view
        b, n = q.shape[:2]
        (q, b_q4), (k, b_k4) = norm(q.view(b, n, n_heads, d), attn.q_norm), norm(k.view(b, n, n_kv, d), attn.k_norm)
        b_fq = lambda r: b_q4(r.view(b, n, n_heads, d)).reshape(b, n, -1)  # noqa: E731
        b_fk = lambda r: b_k4(r.view(b, n, n_kv, d)).reshape(b, n, -1)  # noqa: E731
        q, k, per_head = q.reshape(b, n, -1), k.reshape(b, n, -1), False
    q, k, v = split_heads(q, n_heads), split_heads(k, n_kv), split_heads(v, n_kv)
    if per_head:
        q, b_hq = norm(q, attn.q_norm)
        k, b_hk = norm(k, attn.k_norm)
    b_rq = b_rk = identity_back
    rotated, window = rope_and_window(attn, cfg)
    if rotated:
        interleaved = cfg.model_type in INTERLEAVED_ROPE
        q, b_rq = rope(q, cos[:, None], sin[:, None], interleaved)
        k, b_rk = rope(k, cos[:, None], sin[:, None], interleaved)
    o, b_core = attention_core(q, k, v, mode, causal=True, scale=attn.scaling, key_padding_mask=mask,
                               sliding_window=window, softcap=getattr(attn, "attn_logit_softcapping", None),
                               sinks=d64(getattr(attn, "sinks", None)),  # gpt-oss: a sink logit per head
                               causal_extent=extent)
    y, b_o = linear(merge_heads(o), attn.o_proj.weight, attn.o_proj.bias)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_o(r), n_heads))
        r_q, r_k = b_hq(b_rq(r_q)), b_hk(b_rk(r_k))
        r_q, r_k, r_v = merge_heads(r_q), merge_heads(r_k), merge_heads(r_v)
        if norm_first:
            r_q, r_k = b_fq(b_cq(r_q)), b_fk(b_ck(r_k))
        else:
            r_q, r_k = b_cq(b_fq(r_q)), b_ck(b_fk(r_k))
        r_v = b_cv(r_v)
        if hasattr(attn, "qkv_proj"):
            return back_qkv(torch.cat([r_q, r_k, r_v], dim=-1))
        return bq(r_q) + bk(r_k) + bv(r_v)
    return y, back


def gated_mlp(x, gate_w, up_w, down_w, act, mode, biases=(None, None, None)):
    """down(act(gate x) * up x): epsilon on the projections (with ERNIE 4.5's optional biases, each
    keeping its share), identity on act, uniform on the product."""
    g, bg = linear(x, gate_w, biases[0])
    u, bu = linear(x, up_w, biases[1])
    a, ba = identity(ACTIVATIONS[act], g)
    p, bp = uniform_product(a, u, mode)
    y, bd = linear(p, down_w, biases[2])

    def back(r):
        r_a, r_u = bp(bd(r))
        return bg(ba(r_a)) + bu(r_u)
    return y, back


def plain_mlp(x, fc, proj, act):
    """proj(act(fc x)) (Starcoder2's c_fc / c_proj): epsilon on the projections, identity on act."""
    f, b_fc = linear(x, fc.weight, fc.bias)
    g, _ = identity(ACTIVATIONS[act], f)
    y, b_proj = linear(g, proj.weight, proj.bias)
    return y, lambda r: b_fc(b_proj(r))


def mlp_block(mlp, x, mode):
    if hasattr(mlp, "experts"):  # a sparse MoE block (Mixtral, Qwen-MoE, OLMoE, PhiMoE, GLM4-MoE)
        return moe_block(mlp, x, mode)
    if hasattr(mlp, "c_fc"):  # Starcoder2
        return plain_mlp(x, mlp.c_fc, mlp.c_proj, act_kind(mlp.act))
    if hasattr(mlp, "gate_up_proj") and isinstance(mlp.gate_up_proj, torch.nn.Linear):  # Phi-3
        gate_w, up_w = mlp.gate_up_proj.weight.chunk(2, dim=0)
        return gated_mlp(x, gate_w, up_w, mlp.down_proj.weight, act_kind(mlp.activation_fn), mode)
    layers = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return gated_mlp(x, *(m.weight for m in layers), act_kind(mlp.act_fn), mode, tuple(m.bias for m in layers))


def softmax_routing(gate, flat):
    """Mixtral / Qwen2-MoE / Qwen3-MoE / OLMoE: w = renorm(topk(softmax(router x))), renorm only where the
    router has norm_topk_prob set (Mixtral always). Returns (top_i, w, back(R_w) -> R_flat).

    Rules: renormalisation w = p / sum_topk(p) in the exact-gradient form of its epsilon rule,
    R_p_j = R_w_j - w_j sum_k R_w_k; softmax rule on the router logits; epsilon on the router."""
    s, b_router = linear(flat, gate.weight)
    p = torch.softmax(s, dim=-1)
    top_p, top_i = torch.topk(p, gate.top_k, dim=-1)
    renorm = getattr(gate, "norm_topk_prob", True)
    w = top_p / top_p.sum(-1, keepdim=True) if renorm else top_p

    def back(r_w):
        r_top = r_w - w * r_w.sum(-1, keepdim=True) if renorm else r_w
        r_p = torch.zeros_like(p).scatter(-1, top_i, r_top)
        return b_router(s * (r_p - p * r_p.sum(-1, keepdim=True)))  # softmax rule
    return top_i, w, back


def sigmoid_routing(gate, flat):
    """GLM4-MoE: p = sigmoid(router x); experts chosen by p + e_score_correction_bias among the topk_group
    groups of the largest sum of their two best; w = c * renorm(p at the chosen).

    Rules: the choice takes no relevance; c (routed_scaling_factor) is linear (R unchanged); the
    renormalisation as for softmax routing, R_p_j = R_w_j - w_j sum_k R_w_k; sigmoid_split on the
    sigmoid; epsilon on the router."""
    s, b_router = linear(flat, gate.weight)
    p, b_sigmoid = sigmoid_split(s)
    choice = p + d64(gate.e_score_correction_bias)
    n_tok, n_exp = choice.shape
    groups = choice.view(n_tok, gate.num_group, -1)
    group_score = groups.sort(-1, descending=True).values[..., :2].sum(-1)
    kept_groups = group_score.argsort(-1, descending=True)[:, : gate.topk_group]
    allowed = torch.zeros_like(group_score, dtype=torch.bool)
    allowed[torch.arange(n_tok)[:, None], kept_groups] = True
    allowed = allowed[..., None].expand_as(groups).reshape(n_tok, n_exp)
    top_i = torch.where(allowed, choice, torch.full_like(choice, -math.inf)).argsort(-1, descending=True)
    top_i = top_i[:, : gate.top_k]
    chosen = p.gather(-1, top_i)
    w = chosen / chosen.sum(-1, keepdim=True) if gate.norm_topk_prob else chosen
    c = gate.routed_scaling_factor

    def back(r_w):  # the scale c is linear: R passes unchanged
        r_top = r_w - w * r_w.sum(-1, keepdim=True) if gate.norm_topk_prob else r_w
        r_p = torch.zeros_like(p).scatter(-1, top_i, r_top)
        return b_router(b_sigmoid(r_p))
    return top_i, c * w, back


def sparsemixer_routing(router, flat):
    """PhiMoE's sparsemixer at inference: expert 1 is the best logit, weighed by a softmax over the
    logits s_j with (s_max - s_j) / max(|s_j|, s_max) <= 2 eps, taken at expert 1; expert 2 the best of
    the others, weighed by a softmax over the others within 2 eps of it (relative), taken at expert 2.

    Rules: which logits enter each softmax is fixed (no relevance); softmax rule on each,
    R_s_j = s_j (R_w [j = e] - p_j R_w) over its logits; the two add up at s; epsilon on the router."""
    s, b_router = linear(flat, router.weight, router.bias)
    eps = router.router_jitter_noise
    rows = torch.arange(len(s))
    excluded = torch.zeros_like(s, dtype=torch.bool)
    picks = []
    for _ in range(2):
        avail = torch.where(excluded, torch.full_like(s, -math.inf), s)
        best, e = avail.max(-1, keepdim=True)
        inside = ((best - s) / s.abs().clamp(min=best)) <= 2 * eps
        member = inside & ~excluded
        p = torch.softmax(torch.where(member, s, torch.full_like(s, -math.inf)), dim=-1)
        picks.append((e[:, 0], p, member))
        excluded = excluded.clone()
        excluded[rows, e[:, 0]] = True
    top_i = torch.stack([e for e, _, _ in picks], -1)
    w = torch.stack([p[rows, e] for e, p, _ in picks], -1)

    def back(r_w):
        r_s = torch.zeros_like(s)
        for k, (e, p, member) in enumerate(picks):
            r_p = torch.zeros_like(s)
            r_p[rows, e] = r_w[:, k]
            r_s = r_s + torch.where(member, s * (r_p - p * r_p.sum(-1, keepdim=True)), torch.zeros_like(s))
        return b_router(r_s)
    return top_i, w, back


def topk_softmax_routing(router, flat):
    """gpt-oss / GraniteMoE: w = softmax over the top_k logits of x W_r (+ b_r, gpt-oss). Rules: the choice
    takes no relevance; softmax rule on the selected logits, R_s_j = s_j (R_w_j - w_j sum_k R_w_k), the
    others take nothing; epsilon on the router (its bias keeps its share)."""
    s, b_router = linear(flat, router.weight, getattr(router, "bias", None))
    top_s, top_i = torch.topk(s, router.top_k, dim=-1)
    w = torch.softmax(top_s, dim=-1)

    def back(r_w):
        return b_router(torch.zeros_like(s).scatter(-1, top_i, top_s * (r_w - w * r_w.sum(-1, keepdim=True))))
    return top_i, w, back


def moe_routing(moe, flat):
    if hasattr(moe, "router") and not hasattr(moe.router, "router_jitter_noise"):  # gpt-oss, GraniteMoE
        return topk_softmax_routing(moe.router, flat)
    if hasattr(moe, "router"):  # PhiMoE
        return sparsemixer_routing(moe.router, flat)
    if hasattr(moe.gate, "e_score_correction_bias"):  # GLM4-MoE, DeepSeek-V3
        return sigmoid_routing(moe.gate, flat)
    if hasattr(moe.gate, "topk_method"):  # DeepSeek-V2
        from reference_mla import deepseek_v2_routing
        return deepseek_v2_routing(moe.gate, flat)
    return softmax_routing(moe.gate, flat)


def shared_expert_terms(moe, flat, mode):
    """The always-on part of a sparse block, as (term, back(R_term) -> R_flat) pairs: GLM4-MoE's shared
    experts (a gated MLP); Qwen2-MoE's shared expert times its gate sigmoid(g x): sigmoid_split on the
    sigmoid, uniform rule on the product (CP-LRP: the gate a constant), epsilon on g."""
    if hasattr(moe, "shared_experts"):
        return [mlp_block(moe.shared_experts, flat, mode)]
    if not hasattr(moe, "shared_expert"):
        return []
    m, b_m = mlp_block(moe.shared_expert, flat, mode)
    logit, b_logit = linear(flat, moe.shared_expert_gate.weight)
    gate, b_sigmoid = sigmoid_split(logit)
    y, b_prod = uniform_product(gate, m, mode)

    def back(r):
        r_gate, r_m = b_prod(r)
        return b_m(r_m) + b_logit(b_sigmoid(r_gate.sum(-1, keepdim=True)))
    return [(y, back)]


def moe_block(moe, x, mode):
    """Sparse MoE: y = sum_k w_k E_k(x) (+ shared experts), with the routing of moe_routing.

    Rules: epsilon rule over the sum terms t_k = w_k E_k and the shared terms; uniform split of each
    product (CP-LRP: w_k constant, nothing to the router); the routing's own rules back to x.
    """
    b, n, hdim = x.shape
    flat = x.reshape(-1, hdim)
    top_i, w, b_route = moe_routing(moe, flat)
    experts = moe.experts
    terms, backs = [], []
    for slot in range(top_i.shape[1]):
        term = torch.zeros_like(flat)
        slot_backs = []
        for e in top_i[:, slot].unique().tolist():
            rows = (top_i[:, slot] == e).nonzero().flatten()
            if hasattr(experts, "limit"):  # gpt-oss
                eo, be = clamped_swiglu_expert(experts, e, flat[rows], mode)
            else:
                gate_w, up_w = experts.gate_up_proj[e].chunk(2, dim=0)
                eo, be = gated_mlp(flat[rows], gate_w, up_w, experts.down_proj[e], act_kind(experts.act_fn), mode)
            term[rows] = w[rows, slot, None] * eo
            slot_backs.append((rows, eo, be))
        terms.append(term)
        backs.append(slot_backs)
    shared = shared_expert_terms(moe, flat, mode)
    y = sum(terms) + sum(t for t, _ in shared)

    def back(r):
        r = r.reshape(-1, hdim)
        r_x = torch.zeros_like(flat)
        r_w = torch.zeros_like(w)
        for slot, slot_backs in enumerate(backs):
            r_term = terms[slot] * _div(r, y)  # epsilon rule over the sum
            for rows, eo, be in slot_backs:
                rt = r_term[rows]
                if mode == "cp-lrp":
                    r_x[rows] += be(rt)
                else:
                    r_x[rows] += be(rt / 2)
                    r_w[rows, slot] = rt.sum(-1) / 2
        for t, b_t in shared:
            r_x = r_x + b_t(t * _div(r, y))
        if mode != "cp-lrp":
            r_x = r_x + b_route(r_w)
        return r_x.view(b, n, hdim)
    return y.view(b, n, hdim), back


def clamped_swiglu_expert(experts, e, x, mode):
    """gpt-oss expert e: gate_up = x W_e + b_e (gate, up interleaved), y = (clamp(up, -L, L) + 1) *
    a(gate), a(t) = min(t, L) sigmoid(alpha min(t, L)), out = y D_e + d_e. Rules: epsilon on both
    projections (the biases keep their shares); identity on the clamped activation (R_gate = R_a);
    uniform on the product (CP-LRP: a a constant); epsilon on u + 1 (the 1 keeps its share); up's
    clamp as clip_qkv's (R passes where it does not clip, a clipped entry keeps nothing)."""
    limit, alpha = experts.limit, experts.alpha
    gu, b_gu = linear(x, experts.gate_up_proj[e].T, experts.gate_up_proj_bias[e])
    gate, up = gu[..., ::2], gu[..., 1::2]
    a, b_a = identity(lambda t: t.clamp(max=limit) * torch.sigmoid(alpha * t.clamp(max=limit)), gate)
    u, b_u = clamp(up, limit)
    u1, b_u1 = add(u, torch.ones_like(u))
    p, b_p = uniform_product(a, u1, mode)
    y, b_d = linear(p, experts.down_proj[e].T, experts.down_proj_bias[e])

    def back(r):
        r_a, r_u1 = b_p(b_d(r))
        r_gu = torch.zeros_like(gu)
        r_gu[..., ::2] = b_a(r_a)
        r_gu[..., 1::2] = b_u(b_u1(r_u1)[0])
        return b_gu(r_gu)
    return y, back


def granite_moe_block(layer, x, mode):
    """GraniteMoE's block_sparse_moe (moe_block with top-k softmax routing), plus GraniteMoE-Shared's
    shared_mlp (a fused gated MLP: input_linear's halves (gate, up), output_linear) added to it: epsilon
    rule over the two terms."""
    y, back = moe_block(layer.block_sparse_moe, x, mode)
    shared = getattr(layer, "shared_mlp", None)
    if shared is None:
        return y, back
    gate_w, up_w = shared.input_linear.weight.chunk(2, dim=0)
    s, b_s = gated_mlp(x, gate_w, up_w, shared.output_linear.weight, act_kind(shared.activation), mode)
    total, b_sum = add(y, s)

    def back_both(r):
        r_y, r_s = b_sum(r)
        return back(r_y) + b_s(r_s)
    return total, back_both


def layer_norms(layer):
    """(before attention, after attention, before the MLP, after the MLP): the layer's norms, None where
    it has none. Llama: pre-norms; Gemma 2 / 3, GLM-4: pre- and post-norms; OLMo 2: post-norms only."""
    if hasattr(layer, "pre_feedforward_layernorm"):  # Gemma 2 / 3
        return (layer.input_layernorm, layer.post_attention_layernorm, layer.pre_feedforward_layernorm,
                layer.post_feedforward_layernorm)
    if hasattr(layer, "post_self_attn_layernorm"):  # GLM-4: its post_attention_layernorm is the pre-MLP norm
        return (layer.input_layernorm, layer.post_self_attn_layernorm, layer.post_attention_layernorm,
                layer.post_mlp_layernorm)
    if not hasattr(layer, "input_layernorm"):  # OLMo 2
        return None, layer.post_attention_layernorm, None, layer.post_feedforward_layernorm
    return layer.input_layernorm, None, layer.post_attention_layernorm, None


def llama_layer(layer, x, cos, sin, mask, cfg, mode, extent=None):
    """Decoder layer x + post(attn(pre(x))), then the same around the MLP; each norm with its own rule
    (RMSNorm: identity; LayerNorm: std constant). `extent`: see llama_attention."""
    if cfg.model_type in PARALLEL_BLOCK:
        return parallel_llama_layer(layer, x, cos, sin, mask, cfg, mode)
    residual_scale = getattr(layer, "residual_multiplier", 1.0)  # Granite: x + m * f(x)
    pre_attn, post_attn, pre_mlp, post_mlp = layer_norms(layer)
    a, b_n1 = norm(x, pre_attn)
    o, b_attn = llama_attention(layer.self_attn, a, cos, sin, mask, cfg, mode, extent)
    o, b_n2 = norm(o, post_attn)
    o, _ = scaled(o, residual_scale)
    x2, b_add1 = add(x, o)
    c, b_n3 = norm(x2, pre_mlp)
    if hasattr(layer, "mlp"):
        m, b_mlp = mlp_block(layer.mlp, c, mode)
    elif hasattr(layer, "block_sparse_moe"):  # GraniteMoE (GraniteMoE-Shared: plus its shared expert)
        m, b_mlp = granite_moe_block(layer, c, mode)
    else:
        raise AssertionError("unknown MLP layout")
    m, b_n4 = norm(m, post_mlp)
    m, _ = scaled(m, residual_scale)
    y, b_add2 = add(x2, m)

    def back(r):
        r_x2, r_m = b_add2(r)
        r_x2 = r_x2 + b_n3(b_mlp(b_n4(r_m)))
        r_x, r_o = b_add1(r_x2)
        return r_x + b_n1(b_attn(b_n2(r_o)))
    return y, back


def parallel_llama_layer(layer, x, cos, sin, mask, cfg, mode):
    """Cohere / Cohere 2: y = x + attn(a) + mlp(a), a = ln(x) (bias-free LayerNorm, std constant):
    epsilon rule over the three terms, R_x = R_residual + ln_back(attn_back(R_attn) + mlp_back(R_mlp))."""
    a, b_ln = norm(x, layer.input_layernorm)
    o, b_attn = llama_attention(layer.self_attn, a, cos, sin, mask, cfg, mode)
    m, b_mlp = mlp_block(layer.mlp, a, mode)
    y, b_sum = add_terms(x, o, m)

    def back(r):
        r_x, r_o, r_m = b_sum(r)
        return r_x + b_ln(b_attn(r_o) + b_mlp(r_m))
    return y, back


def _moe_aware_mlp(layer):
    """Mixtral keeps its MoE under `mlp` in transformers 5: route it to moe_block."""
    return hasattr(getattr(layer, "mlp", None), "experts")


def head_relevance(h_final, lm_head, positions, target, contrast, softcap, scale=1.0):
    """Relevance at the final hidden states from the explained score at `positions`.

    Scores z = W h (+ b), times a constant `scale` (Granite's 1 / logits_scaling, Cohere's
    logit_scale: identity rule); soft-capping c tanh(z / c) takes the identity rule; the start is
    R = z'_target (and -z'_contrast), then the epsilon rule of lm_head back to h.
    """
    b = h_final.shape[0]
    rows = torch.arange(b)
    sel = h_final[rows, positions]
    z, back = linear(sel, lm_head.weight, lm_head.bias)
    z, _ = scaled(z, scale)
    zc = softcap * torch.tanh(z / softcap) if softcap else z
    r = torch.zeros_like(z)
    r[rows, target] = zc[rows, target]
    score = zc[rows, target].clone()
    if contrast is not None:
        r[rows, contrast] -= zc[rows, contrast]
        score = score - zc[rows, contrast]
    r_h = torch.zeros_like(h_final)
    r_h[rows, positions] = back(r)  # back's epsilon ratios z_ij / z_j are unchanged by the scale
    return r_h, score, zc


def logit_scale_of(cfg) -> float:
    """The constant the model multiplies its logits by: Granite divides by logits_scaling, Cohere
    multiplies by logit_scale (read from the config the way their ForCausalLM forwards do)."""
    if cfg.model_type in ("granite", "granitemoe", "granitemoeshared"):
        return 1.0 / cfg.logits_scaling
    if cfg.model_type in ("cohere", "cohere2"):
        return cfg.logit_scale
    return 1.0


def decoder_reference(model, input_ids, attention_mask, positions, target, contrast=None, mode="attnlrp",
                      head=None):
    """Token relevance [B, N] (float64), explained score [B] and logits at the positions, by the rules.

    `positions` are indices into the padded sequence; `target` / `contrast` token ids per row.
    `head`: a sequence classifier's score layer (plain logits: no soft-cap or logit scale), else the
    language-model head with the model's final soft-cap and logit scale.
    """
    cfg = model.config
    base = model.model
    mask = attention_mask.bool()
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    emb = d64(base.embed_tokens(input_ids))  # includes Gemma's embedding scale (a linear factor)
    x, _ = scaled(emb, getattr(cfg, "embedding_multiplier", 1.0))  # Granite: R_emb = R_x
    layer_types = getattr(cfg, "layer_types", None)
    backs = []
    rotary_cache = {}
    for i, layer in enumerate(base.layers):
        kind = layer_types[i] if layer_types is not None else None
        if kind not in rotary_cache:
            args = (emb, position_ids) if cfg.model_type not in PER_TYPE_ROPE else (emb, position_ids, kind)
            table = base.rotary_emb(*args)
            if isinstance(table, torch.Tensor) and torch.is_complex(table):  # DeepSeek-V2: e^{i theta} per pair
                # of interleaved coordinates, laid out as cat(freqs, freqs)
                table = (torch.cat([table.real] * 2, dim=-1), torch.cat([table.imag] * 2, dim=-1))
            cos, sin = (d64(t) for t in table)
            if cfg.model_type in INTERLEAVED_TABLE:  # as cat(freqs, freqs), the layout rope() reads
                cos, sin = (torch.cat([t[..., ::2]] * 2, dim=-1) for t in (cos, sin))
            if cfg.model_type in HALF_TABLE:  # one entry per frequency: as cat(freqs, freqs)
                cos, sin = (torch.cat([t] * 2, dim=-1) for t in (cos, sin))
            rotary_cache[kind] = (cos, sin)
        cos, sin = rotary_cache[kind]
        if _moe_aware_mlp(layer):
            x, back = _mixtral_layer(layer, x, cos, sin, mask, cfg, mode)
        else:
            x, back = llama_layer(layer, x, cos, sin, mask, cfg, mode)
        backs.append(back)
    h, b_norm = norm(x, base.norm)
    if head is None:
        r, score, z = head_relevance(h, model.lm_head, positions, target, contrast,
                                     getattr(cfg, "final_logit_softcapping", None), logit_scale_of(cfg))
    else:
        r, score, z = head_relevance(h, head, positions, target, contrast, None)
    r = b_norm(r)
    for back in reversed(backs):
        r = back(r)
    return summed(r, -1), score, z


def _mixtral_layer(layer, x, cos, sin, mask, cfg, mode):
    """A decoder layer with a sparse MoE block: llama_layer, whose mlp_block walks it by moe_block."""
    return llama_layer(layer, x, cos, sin, mask, cfg, mode)


def gpt2_reference(model, input_ids, attention_mask, positions, target, contrast=None, mode="attnlrp", head=None):
    """GPT-2: returns (token relevance, position-embedding relevance, score, logits); `head` as for
    decoder_reference (a classifier's score layer), else lm_head."""
    cfg = model.config
    base = model.transformer
    mask = attention_mask.bool()
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    tok, pos = d64(base.wte(input_ids)), d64(base.wpe(position_ids))
    x, b_emb = add(tok, pos)
    backs = []
    for block in base.h:
        attn = block.attn
        a, b_ln1 = layer_norm(x, block.ln_1)
        qkv, b_qkv = conv1d(a, attn.c_attn)
        q, k, v = (split_heads(t, cfg.n_head) for t in qkv.split(cfg.n_embd, dim=-1))
        o, b_core = attention_core(q, k, v, mode, causal=True, scale=attn.scaling, key_padding_mask=mask)
        o, b_proj = conv1d(merge_heads(o), attn.c_proj)
        x2, b_add1 = add(x, o)
        c, b_ln2 = layer_norm(x2, block.ln_2)
        f, b_fc = conv1d(c, block.mlp.c_fc)
        g, _ = identity(ACTIVATIONS[act_kind(block.mlp.act)], f)
        m, b_mproj = conv1d(g, block.mlp.c_proj)
        x, b_add2 = add(x2, m)

        def back(r, b_ln1=b_ln1, b_qkv=b_qkv, b_core=b_core, b_proj=b_proj, b_add1=b_add1, b_ln2=b_ln2,
                 b_fc=b_fc, b_mproj=b_mproj, b_add2=b_add2):
            r_x2, r_m = b_add2(r)
            r_x2 = r_x2 + b_ln2(b_fc(b_mproj(r_m)))
            r_x, r_o = b_add1(r_x2)
            r_q, r_k, r_v = b_core(split_heads(b_proj(r_o), cfg.n_head))
            r_a = b_qkv(torch.cat([merge_heads(r_q), merge_heads(r_k), merge_heads(r_v)], dim=-1))
            return r_x + b_ln1(r_a)
        backs.append(back)
    h, b_lnf = layer_norm(x, base.ln_f)
    r, score, z = head_relevance(h, model.lm_head if head is None else head, positions, target, contrast, None)
    r = b_lnf(r)
    for back in reversed(backs):
        r = back(r)
    r_tok, r_pos = b_emb(r)
    return summed(r_tok, -1), summed(r_pos, -1), score, z


# ------------------------------------------------------------------------------------------------
# Parallel-residual decoders: GPT-NeoX / Pythia (and its sequential form)
# ------------------------------------------------------------------------------------------------
def add_terms(*terms):
    """y = t_1 + ... + t_K; epsilon rule R_t_k = t_k / y * R for each term."""
    y = sum(terms)
    return y, lambda r: tuple(t * _div(r, y) for t in terms)


def gpt_neox_attention(attn, x, cos, sin, mask, mode):
    """GPT-NeoX self-attention: fused qkv laid out per head ([q_h | k_h | v_h] for head h), partial
    rotary on the first rotary_ndims = cos.shape[-1] dims of each head (rope: the rest pass through,
    R = R there), biased dense output."""
    b, n, hidden = x.shape
    heads = attn.config.num_attention_heads
    qkv, b_qkv = linear(x, attn.query_key_value.weight, attn.query_key_value.bias)
    q, k, v = qkv.view(b, n, heads, -1).transpose(1, 2).chunk(3, dim=-1)
    q, b_rq = rope(q, cos[:, None], sin[:, None])
    k, b_rk = rope(k, cos[:, None], sin[:, None])
    o, b_core = attention_core(q, k, v, mode, causal=True, scale=attn.scaling, key_padding_mask=mask)
    y, b_dense = linear(merge_heads(o), attn.dense.weight, attn.dense.bias)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_dense(r), heads))
        r_qkv = torch.cat([b_rq(r_q), b_rk(r_k), r_v], dim=-1)  # [B, H, N, 3 hs], as the forward's view
        return b_qkv(r_qkv.transpose(1, 2).reshape(b, n, -1))
    return y, back


def gpt_neox_layer(layer, x, cos, sin, mask, mode):
    """Parallel: y = x + attn(ln1(x)) + mlp(ln2(x)); epsilon rule over the three terms, then
    R_x = R_residual + ln1_back(attn_back(R_attn)) + ln2_back(mlp_back(R_mlp)), each branch through
    its own LayerNorm rule (std constant). Sequential: x2 = x + attn(ln1(x)); y = x2 + mlp(ln2(x2))."""
    mlp = layer.mlp
    a, b_ln1 = layer_norm(x, layer.input_layernorm)
    o, b_attn = gpt_neox_attention(layer.attention, a, cos, sin, mask, mode)
    if layer.use_parallel_residual:
        c, b_ln2 = layer_norm(x, layer.post_attention_layernorm)
        m, b_mlp = plain_mlp(c, mlp.dense_h_to_4h, mlp.dense_4h_to_h, act_kind(mlp.act))
        y, b_sum = add_terms(x, o, m)

        def back(r):
            r_x, r_o, r_m = b_sum(r)
            return r_x + b_ln1(b_attn(r_o)) + b_ln2(b_mlp(r_m))
        return y, back
    x2, b_add1 = add(x, o)
    c, b_ln2 = layer_norm(x2, layer.post_attention_layernorm)
    m, b_mlp = plain_mlp(c, mlp.dense_h_to_4h, mlp.dense_4h_to_h, act_kind(mlp.act))
    y, b_add2 = add(x2, m)

    def back_sequential(r):
        r_x2, r_m = b_add2(r)
        r_x, r_o = b_add1(r_x2 + b_ln2(b_mlp(r_m)))
        return r_x + b_ln1(b_attn(r_o))
    return y, back_sequential


def gpt_neox_reference(model, input_ids, attention_mask, positions, target, contrast=None, mode="attnlrp",
                       head=None):
    """GPT-NeoX / Pythia: (token relevance, score, logits), as decoder_reference."""
    base = model.gpt_neox
    mask = attention_mask.bool()
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    x = d64(base.embed_in(input_ids))
    cos, sin = (d64(t) for t in base.rotary_emb(x, position_ids))  # [B, N, rotary_ndims]
    backs = []
    for layer in base.layers:
        x, back = gpt_neox_layer(layer, x, cos, sin, mask, mode)
        backs.append(back)
    h, b_norm = layer_norm(x, base.final_layer_norm)
    r, score, z = head_relevance(h, model.lm_head if head is None else head, positions, target, contrast, None)
    r = b_norm(r)
    for back in reversed(backs):
        r = back(r)
    return summed(r, -1), score, z


# ------------------------------------------------------------------------------------------------
# Parallel-residual decoders with one shared LayerNorm: GPT-J, Phi (1 / 1.5 / 2)
# ------------------------------------------------------------------------------------------------
def projected_attention(attn, x, cos, sin, mask, mode, heads, kv_heads, interleaved):
    """Separate q / k / v projections (biased for Phi, bias-free for GPT-J), optional per-head q / k
    LayerNorms (Phi's qk_layernorm), partial rotary on the first cos.shape[-1] dims of each head:
    interleaved pairs (GPT-J's rotate_every_two) or halves (Phi), the rest passing through with
    R = R; output projection `out_proj` (GPT-J) or `dense` (Phi)."""
    q, bq = linear(x, attn.q_proj.weight, attn.q_proj.bias)
    k, bk = linear(x, attn.k_proj.weight, attn.k_proj.bias)
    v, bv = linear(x, attn.v_proj.weight, attn.v_proj.bias)
    q, k, v = split_heads(q, heads), split_heads(k, kv_heads), split_heads(v, kv_heads)
    b_nq = b_nk = lambda r: r  # noqa: E731
    if getattr(attn, "qk_layernorm", False):
        q, b_nq = layer_norm(q, attn.q_layernorm)
        k, b_nk = layer_norm(k, attn.k_layernorm)
    q, b_rq = rope(q, cos[:, None], sin[:, None], interleaved)
    k, b_rk = rope(k, cos[:, None], sin[:, None], interleaved)
    o, b_core = attention_core(q, k, v, mode, causal=True, scale=attn.scaling, key_padding_mask=mask)
    out = attn.out_proj if hasattr(attn, "out_proj") else attn.dense
    y, b_out = linear(merge_heads(o), out.weight, out.bias)

    def back(r):
        r_q, r_k, r_v = b_core(split_heads(b_out(r), heads))
        r_q, r_k = merge_heads(b_nq(b_rq(r_q))), merge_heads(b_nk(b_rk(r_k)))
        return bq(r_q) + bk(r_k) + bv(merge_heads(r_v))
    return y, back


def shared_norm_parallel_layer(layer, x, cos, sin, mask, cfg, mode):
    """y = x + attn(a) + mlp(a), a = ln(x): epsilon rule over the three terms; the relevance of a is
    the sum of both branches' (R_a = attn_back(R_attn) + mlp_back(R_mlp)), taken back through the
    one LayerNorm rule (std constant) and added to the residual's share: R_x = R_residual + ln_back(R_a)."""
    gptj = hasattr(layer, "ln_1")
    ln, attn, mlp = (layer.ln_1, layer.attn, layer.mlp) if gptj else (layer.input_layernorm, layer.self_attn, layer.mlp)
    heads = cfg.num_attention_heads
    kv_heads = heads if gptj else cfg.num_key_value_heads
    a, b_ln = layer_norm(x, ln)
    o, b_attn = projected_attention(attn, a, cos, sin, mask, mode, heads, kv_heads, interleaved=gptj)
    fc, proj, act = (mlp.fc_in, mlp.fc_out, mlp.act) if gptj else (mlp.fc1, mlp.fc2, mlp.activation_fn)
    m, b_mlp = plain_mlp(a, fc, proj, act_kind(act))
    y, b_sum = add_terms(x, o, m)

    def back(r):
        r_x, r_o, r_m = b_sum(r)
        return r_x + b_ln(b_attn(r_o) + b_mlp(r_m))
    return y, back


def shared_norm_parallel_reference(model, input_ids, attention_mask, positions, target, contrast=None,
                                   mode="attnlrp", head=None):
    """GPT-J / Phi: (token relevance, score, logits), as decoder_reference.

    GPT-J's rotary table gives (sin, cos) of width rotary_dim / 2, one entry per interleaved pair;
    written out as rope's interleaved layout (frequencies in the first half): cat(t, t)."""
    cfg = model.config
    base = model.base_model
    gptj = cfg.model_type == "gptj"
    mask = attention_mask.bool()
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    x = d64(model.get_input_embeddings()(input_ids))
    if gptj:
        sin, cos = (torch.cat([d64(t)] * 2, dim=-1) for t in base.rotary_emb(x, position_ids))
    else:
        cos, sin = (d64(t) for t in base.rotary_emb(x, position_ids))
    backs = []
    for layer in (base.h if gptj else base.layers):
        x, back = shared_norm_parallel_layer(layer, x, cos, sin, mask, cfg, mode)
        backs.append(back)
    h, b_norm = layer_norm(x, base.ln_f if gptj else base.final_layernorm)
    r, score, z = head_relevance(h, model.lm_head if head is None else head, positions, target, contrast, None)
    r = b_norm(r)
    for back in reversed(backs):
        r = back(r)
    return summed(r, -1), score, z
