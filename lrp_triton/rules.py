"""The table of contents of every LRP rule lrp_triton applies, and the constants they share.

Every rule is run in gradient form: the backward pass computes a modified gradient g such that
`x * g` is the relevance of x (see ../shared/attnlrp-rules.md for each rule in explicit and
gradient form). `RULES` below lists each rule with the operation it covers, both forms, where the
paper states it, the public op that applies it, and its Triton kernel and PyTorch twin, so that a
reader reaches any rule from here in one hop. `tests/test_rules_table.py` checks that every
pointer resolves.

Paper references: AttnLRP = Achtibat et al., "AttnLRP: Attention-Aware Layer-wise Relevance
Propagation for Transformers", ICML 2024, arXiv 2402.05602. The equation and proposition numbers
are those the authors' own library (lxt) cites in its docstrings (Eq. 7 uniform rule, Eq. 8
epsilon rule, Eq. 9 identity rule, Proposition 3.1 softmax, 3.2 elementwise product, 3.3 matrix
multiplication, 3.4 normalisation); they were not re-checked against the v2 PDF here. CP-LRP = Ali
et al., "XAI for Transformers: Better Explanations through Conservative Propagation", ICML 2022.
Gamma rule = Montavon et al., "Layer-Wise Relevance Propagation: An Overview", 2019.

Attribution modes (`mode=`):
- "attnlrp": the AttnLRP rules below.
- "cp-lrp": attention weights and gates are constants (`cp_lrp_constant`); otherwise as AttnLRP.
- "gradient": Input x Gradient: nothing is swapped but attention (the exact gradient everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

MODES = ("attnlrp", "cp-lrp", "gradient")
LINEAR_RULES = ("epsilon", "gamma", "gamma-signed")


class AttentionRule(NamedTuple):
    """The constant factors one mode folds into the exact attention gradient."""

    dqk: float  # factor on dQ and dK
    dv: float  # factor on dV
    softcap_identity: bool  # soft-capping by the identity-rule ratio instead of its derivative


# AttnLRP: S = scale Q K^T and O = P V are bilinear: the uniform rule gives half of the relevance
# of each product to each factor (Proposition 3.3); the softmax between them keeps its exact
# gradient (Proposition 3.1). Half of O's relevance reaches P, and half of that reaches each of Q
# and K: dQ, dK = exact / 4, dV = exact / 2. CP-LRP: P is a constant (dQ = dK = 0, dV exact).
ATTENTION_RULES = {
    "attnlrp": AttentionRule(dqk=0.25, dv=0.5, softcap_identity=True),
    "cp-lrp": AttentionRule(dqk=0.0, dv=1.0, softcap_identity=False),
    "gradient": AttentionRule(dqk=1.0, dv=1.0, softcap_identity=False),
}
assert tuple(ATTENTION_RULES) == MODES


def tanh_over_x(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) / x, equal to 1 at x = 0: the identity-rule ratio of tanh and of soft-capping.

    Soft-capping y = c tanh(s / c) with the identity rule (Eq. 9) passes g_s = g_y * y / s
    = g_y * tanh_over_x(s / c). The Triton attention kernel has its own copy (`_tanh_over_x` in
    kernels/attention.py, written through exp for the interpreter).
    """
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1.0 - x * x / 3.0, torch.tanh(safe) / safe)


def cp_lrp_constant(t: torch.Tensor, mode: str) -> torch.Tensor:
    """CP-LRP treats gates and routing weights as constants: `t` detached in mode "cp-lrp"."""
    return t.detach() if mode == "cp-lrp" else t


@dataclass(frozen=True)
class Rule:
    """One entry of the table of contents (all pointers are dotted import paths)."""

    name: str
    operation: str
    explicit: str  # the relevance formula
    gradient_form: str  # what the backward returns
    paper: str
    op: str  # the public op (or layer) applying it
    kernel: str | None = None  # the Triton kernel launcher
    torch_twin: str | None = None  # its plain-PyTorch twin


RULES = (
    Rule("epsilon", "linear, convolution, lm_head, RoPE, residual add, embedding sums (Qwen3-VL's interpolated "
         "vision positions), Qwen3-VL's DeepStack additions at the image tokens, output scaling",
         "R_i = sum_j z_ij / z_j R_j (the bias absorbs its share)", "the exact gradient",
         "AttnLRP Eq. 8", "torch.nn.functional.linear"),
    Rule("identity (activation)", "SiLU, GELU, GELU-tanh, ReLU, QuickGELU (CLIP, Qwen2-VL's vision tower)", "R_x = R_y",
         "g_x = g_y * act(x) / x (sigmoid(x), Phi(x), (1 + tanh u) / 2, [x > 0], sigmoid(1.702 x))", "AttnLRP Eq. 9",
         "lrp_triton.ops.mlp.lrp_activation", "lrp_triton.kernels.activations.activation_backward",
         "lrp_triton.kernels.activations_torch.activation_backward_torch"),
    Rule("identity (tanh)", "tanh in poolers and classification heads", "R_x = R_y",
         "g_x = g_y * tanh(x) / x", "AttnLRP Eq. 9", "lrp_triton.ops.elementwise.lrp_tanh", None,
         "lrp_triton.rules.tanh_over_x"),
    Rule("soft-cap identity", "c tanh(s / c): Gemma 2 final logits and attention scores", "R_s = R_y",
         "g_s = g_y * tanh(s / c) / (s / c)", "AttnLRP Eq. 9", "lrp_triton.ops.elementwise.lrp_softcap",
         "lrp_triton.kernels.attention.attention_backward", "lrp_triton.rules.tanh_over_x"),
    Rule("uniform (gated product)", "act(gate) * up (SwiGLU, GeGLU)", "R_gate = R_up = R_y / 2",
         "g_gate = g * up * act(gate) / gate / 2, g_up = g * act(gate) / 2", "AttnLRP Eq. 7, Proposition 3.2",
         "lrp_triton.ops.mlp.lrp_glu", "lrp_triton.kernels.activations.glu_backward",
         "lrp_triton.kernels.activations_torch.glu_backward_torch"),
    Rule("uniform (product)", "MoE routing weight x expert output; cosine-similarity terms (lrp_cosine_similarity)",
         "R_a = R_b = R_y / 2", "g_a = g * b / 2, g_b = g * a / 2", "AttnLRP Proposition 3.2",
         "lrp_triton.ops.elementwise.lrp_uniform_product"),
    Rule("attention", "softmax(scale Q K^T + bias) V (the value head dim may differ: DeepSeek's MLA)",
         "softmax rule on P, uniform on Q K^T and P V, bias absorbs",
         "exact gradient with dQ, dK x 1/4 and dV x 1/2 (ATTENTION_RULES)", "AttnLRP Propositions 3.1, 3.3",
         "lrp_triton.ops.attention.lrp_attention", "lrp_triton.kernels.attention.attention_backward",
         "lrp_triton.kernels.attention_torch.attention_backward_torch"),
    Rule("disentangled attention",
         "DeBERTa-v2 / v3: softmax(scale (Q K^T + Q pk[c(j - i)]^T + K pq[p(j - i)]^T), masked) V, pk / pq the "
         "projected relative embeddings",
         "softmax rule on P; epsilon on the sum of the three score terms; uniform on each bilinear term (half to "
         "each factor, as Q K^T: the relative-embedding table keeps the pk / pq halves) and on P V",
         "exact gradient with dQ, dK, dpk, dpq x 1/4 and dV x 1/2 (ATTENTION_RULES), one query block at a time",
         "AttnLRP Propositions 3.1, 3.3, Eq. 8", "lrp_triton.ops.disentangled_attention.lrp_disentangled_attention",
         None, "lrp_triton.kernels.disentangled_attention_torch.disentangled_attention_backward_torch"),
    Rule("attention sink", "gpt-oss's sinks: a logit s_h per head in the softmax denominator, attending nowhere",
         "the sink takes its share of relevance and passes it to no token: softmax rule over keys and sink, "
         "R_sink = s_h (0 - P_sink sum_j R_P_j) absorbed",
         "the attention rule's gradient with the sink in the log-sum-exp; no gradient to the sink",
         "AttnLRP Proposition 3.1", "lrp_triton.ops.attention.lrp_attention",
         "lrp_triton.kernels.attention.attention_forward", "lrp_triton.kernels.attention_torch.attention_forward_torch"),
    Rule("attention through SDPA", "the same rule on torch's scaled_dot_product_attention (lxt's method)",
         "as attention", "SDPA's gradient with dQ, dK x 1/4 and dV x 1/2", "AttnLRP Propositions 3.1, 3.3",
         "lrp_triton.ops.sdpa_attention.lrp_sdpa_attention"),
    Rule("RMSNorm (identity)", "y = (offset + w) x / rms(x)", "R_x = R_y (rms a constant)",
         "g_x = g_y * (offset + w) / rms(x)", "AttnLRP Proposition 3.4, Eq. 9",
         "lrp_triton.ops.norms.lrp_rms_norm", "lrp_triton.kernels.rms_norm.rms_norm_backward",
         "lrp_triton.kernels.rms_norm_torch.rms_norm_backward_torch"),
    Rule("LayerNorm (constant std)", "y = w (x - mean) / std + b", "epsilon rule on the centring, std a constant",
         "g_x = (g_y w - mean(g_y w)) / std", "AttnLRP Proposition 3.4",
         "lrp_triton.ops.norms.lrp_layer_norm", "lrp_triton.kernels.layer_norm.layer_norm_backward",
         "lrp_triton.kernels.layer_norm_torch.layer_norm_backward_torch"),
    Rule("MoE routing", "y = sum_k w_k E_k(x), w = renorm(topk(softmax(router(x))))",
         "softmax rule on the router, epsilon on the renormalisation, uniform on w_k E_k(x)",
         "exact gradients through router and renorm; each w_k E_k product halved for both factors",
         "AttnLRP Propositions 3.1, 3.2", "lrp_triton.modules.moe.LRPMoEExperts"),
    Rule("MoE routing (top-k, no renormalisation)",
         "y = sum_k w_k E_k(x), w = topk(softmax(router(x))) (Qwen2-MoE / Qwen3-MoE / OLMoE, norm_topk_prob off; "
         "DeepSeek-V2: top-k within the best groups, times a constant)",
         "softmax rule on the router, uniform on w_k E_k(x)",
         "exact gradients through the router; each w_k E_k product halved for both factors",
         "AttnLRP Propositions 3.1, 3.2", "lrp_triton.modules.moe.LRPMoEExperts"),
    Rule("MoE routing (sparsemixer)",
         "PhiMoE at inference: w_1 = softmax over the logits within 2 eps (relative) of the best, at the best; "
         "w_2 the same over the others",
         "softmax rule on each softmax over its (fixed) subset of logits, the others take nothing; uniform on w_k E_k",
         "the exact gradient of the untouched eval-mode router; each w_k E_k product halved for both factors",
         "AttnLRP Propositions 3.1, 3.2", "lrp_triton.modules.moe.LRPMoEExperts"),
    Rule("sigmoid (split)", "sigmoid gates: Qwen2-MoE's shared-expert gate, GLM4-MoE's and DeepSeek-V3's router scores",
         "sigmoid(x) = 1/2 + tanh(x / 2) / 2: epsilon on the sum (1/2 absorbs its share), identity on the tanh: "
         "R_x = (y - 1/2) / y * R_y", "g_x = g_y * tanh(x / 2) / (2 x) (1/4 at x = 0)", "AttnLRP Eqs. 8, 9",
         "lrp_triton.modules.moe_gates.lrp_sigmoid", None, "lrp_triton.rules.tanh_over_x"),
    Rule("uniform (shared-expert gate)", "sigmoid(g(x)) * S(x): Qwen2-MoE's gated shared expert",
         "R_gate = R_S = R_y / 2; CP-LRP: the gate a constant (R_S = R_y)",
         "g_gate = g * S / 2, g_S = g * sigmoid(g(x)) / 2, then the sigmoid's split rule",
         "AttnLRP Eq. 7, Proposition 3.2", "lrp_triton.modules.moe_gates.LRPSharedExpertMoE"),
    Rule("MoE routing (sigmoid router)",
         "GLM4-MoE, DeepSeek-V3: w = c renorm(p at the chosen), p = sigmoid(router(x)), chosen by p + bias in the "
         "best groups",
         "the sigmoid's split rule, epsilon on the renormalisation and the scale c, uniform on w_k E_k(x); the "
         "bias and the group choice select only (no relevance)",
         "g_logit = g_p * tanh(logit / 2) / (2 logit); exact gradients through renorm and scale",
         "AttnLRP Eq. 9, Proposition 3.2", "lrp_triton.modules.moe_gates.LRPSigmoidTopkRouter"),
    # CLIP / SigLIP's logit s = scale * (u / |u|) . (t / |t|) (+ bias). cos(u, t) is scale-invariant in u
    # (and in t), so by Euler's theorem u . grad_u cos = 0: Input x Gradient gives each embedding no relevance
    # in total, whatever the similarity. Holding each norm constant (as LayerNorm's std, Proposition 3.4)
    # makes the normalisation linear: it passes relevance unchanged. The dot product is then a sum of
    # bilinear terms u'_d t'_d, split by the epsilon rule over the terms and, per term, half to each side
    # (the uniform rule of Proposition 3.2, as for Q K^T: neither embedding is a gate of the other). So
    # R_u + R_t = scale * cos: the similarity less the bias, which keeps its own share.
    Rule("L2 normalisation (constant norm)", "x / ||x||_2: CLIP / SigLIP embeddings before their similarity",
         "R_x = R_y (||x|| a constant)", "g_x = g_y / ||x||", "AttnLRP Proposition 3.4, Eq. 9",
         "lrp_triton.attribution.scores.lrp_l2_normalize"),
    Rule("uniform (similarity)", "scale * u' . t' + bias: CLIP / SigLIP image-text logit (u', t' normalised)",
         "R_(u'_d t'_d) = u'_d t'_d / (u' . t') R_(u' . t'), half to u'_d, half to t'_d; the bias keeps its share",
         "g_u' = g * scale * t' / 2, g_t' = g * scale * u' / 2", "AttnLRP Eq. 8, Proposition 3.2",
         "lrp_triton.attribution.scores.lrp_similarity"),
    Rule("attention (nn.MultiheadAttention)", "torch's MultiheadAttention: SigLIP's attention-pooling head",
         "as attention; epsilon (or gamma) rule on the packed in-projection and out_proj", "as attention",
         "AttnLRP Propositions 3.1, 3.3", "lrp_triton.modules.multihead_attention.LRPMultiheadAttention"),
    Rule("CP-LRP", "attention weights, MLP gates and routing weights", "no relevance through them",
         "dQ = dK = 0 in attention; the gate / routing branch detached", "Ali et al. 2022",
         "lrp_triton.rules.cp_lrp_constant"),
    Rule("gamma", "linear and convolution layers with linear_rule='gamma' / 'gamma-signed'",
         "R_i = sum_j x_i W_g,ji / z_g,j R_j, W_g = W + gamma W^+ (signed: boost the output's sign)",
         "g_x = W_g^T (g_y * y / z_g)", "Montavon et al. 2019 (AttnLRP uses it for ViTs)",
         "lrp_triton.ops.gamma.lrp_gamma_linear"),
)
