"""Sigmoid gates of mixture-of-experts layers (Qwen2-MoE's shared expert, GLM4-MoE's and DeepSeek-V3's router).

- `lrp_sigmoid`: sigmoid(x) = 1/2 + tanh(x / 2) / 2, taken apart by rules already in the table: the
  epsilon rule on the sum (the constant 1/2 absorbs its share, as a bias does), the identity rule on
  the tanh and exact gradients through the two halvings. Explicit: R_x = (y - 1/2) / y * R_y;
  gradient form g_x = g_y * (sigmoid(x) - 1/2) / x = g_y * tanh_over_x(x / 2) / 4 (1/4 at x = 0).
  Why not the identity rule R_x = R_y (g_x = g_y * sigmoid(x) / x): a sigmoid is 1/2 at 0, so a logit
  near 0 would keep a finite relevance, which the epsilon rule of the linear layer producing it then
  divides by that logit: contributions grow as 1/|logit| and cancel. Measured on the model zoo's
  Qwen2-MoE (float32 vs the float64 reference, 40 draws): up to 3e-4 of the relevance scale with the
  identity rule, up to 1.1e-6 with this split.
- `LRPSharedExpertMoE` (Qwen2-MoE's sparse block): y = sum_k w_k E_k(x) + sigmoid(g(x)) * S(x). The
  routed part is `LRPMoEExperts` (router untouched); the shared expert S is a gated MLP; its gate
  product sigmoid(g(x)) * S(x) is treated as the gate of a gated MLP: the sigmoid's rule above, the
  uniform rule on the product (R_gate = R_S = R / 2); CP-LRP makes the gate a constant. The sum of
  the two parts is linear (epsilon rule: the exact gradient).
- `LRPSigmoidTopkRouter` (GLM4-MoE's and DeepSeek-V3's router): w = c * renorm(gather_topk(sigmoid(router(x)))). The
  sigmoid takes the rule above; the renormalisation w_j = p_j / sum_k p_k and the constant scale c
  keep their exact gradients (epsilon rule, as for softmax routing: R_p_j = R_w_j - w_j sum_k R_w_k).
  The experts are chosen by sigmoid + e_score_correction_bias within the topk_group best groups:
  the bias and the group choice only select, and take no relevance.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lrp_triton.backend import upcast
from lrp_triton.modules.mlp import LRPGatedMLP
from lrp_triton.modules.moe import LRPMoEExperts
from lrp_triton.ops.elementwise import lrp_uniform_product
from lrp_triton.ops.streams import refuse_batched_inputs
from lrp_triton.options import LRPOptions
from lrp_triton.rules import tanh_over_x


class _SigmoidSplit(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    vmap = refuse_batched_inputs("lrp_sigmoid")  # its backward is batched by vmap (several targets)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return (upcast(g) * tanh_over_x(upcast(x) / 2) / 4).to(g.dtype)


def lrp_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """sigmoid(x) = 1/2 + tanh(x / 2) / 2 with the constant absorbing its share and the identity rule on
    the tanh: R_x = (y - 1/2) / y * R_y, g_x = g_y * tanh(x / 2) / (2 x) (see the module docstring)."""
    return _SigmoidSplit.apply(x)


class LRPSharedExpertMoE(nn.Module):
    """Drop-in for Qwen2MoeSparseMoeBlock: gate (router), experts, shared_expert, shared_expert_gate."""

    def __init__(self, gate, experts, shared_expert, shared_expert_gate, *, mode: str, backend: str):
        super().__init__()
        self.gate, self.experts = gate, experts
        self.shared_expert, self.shared_expert_gate = shared_expert, shared_expert_gate
        self.mode, self.backend = mode, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        """Builds its own LRP experts and shared expert (the block's HF children stay on the HF block)."""
        return cls(module.gate, LRPMoEExperts.from_hf(module.experts, options),
                   LRPGatedMLP.from_hf(module.shared_expert, options), module.shared_expert_gate, mode=options.mode,
                   backend=options.backend)

    def forward(self, hidden_states):
        batch, length, hidden = hidden_states.shape
        flat = hidden_states.view(-1, hidden)
        shared = self.shared_expert(flat)
        _, weights, index = self.gate(flat)
        routed = self.experts(flat, index, weights)
        logit = self.shared_expert_gate(flat)
        if self.mode == "cp-lrp":
            shared = torch.sigmoid(logit).detach() * shared
        else:
            shared = lrp_uniform_product(lrp_sigmoid(logit), shared)
        return (routed + shared).reshape(batch, length, hidden)


class LRPSigmoidTopkRouter(nn.Module):
    """Drop-in for Glm4MoeTopkRouter and DeepseekV3TopkRouter (sigmoid scores, bias-corrected grouped top-k,
    renormalised where norm_topk_prob is set, scaled)."""

    def __init__(self, module, *, mode: str = "attnlrp", backend: str = "auto"):
        super().__init__()
        self.mode, self.backend = mode, backend  # the sigmoid's rule is plain PyTorch on every backend
        self.weight = module.weight  # the replaced router's Parameter and buffer
        self.register_buffer("e_score_correction_bias", module.e_score_correction_bias)
        self.top_k, self.num_experts, self.hidden_dim = module.top_k, module.num_experts, module.hidden_dim
        self.num_group, self.topk_group = module.num_group, module.topk_group
        self.norm_topk_prob, self.routed_scaling_factor = module.norm_topk_prob, module.routed_scaling_factor

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module, mode=options.mode, backend=options.backend)

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """The top_k experts by score + e_score_correction_bias among the topk_group best groups (a
        group's score: the sum of its two best)."""
        choice = (scores + self.e_score_correction_bias).view(-1, self.num_group, self.num_experts // self.num_group)
        best = choice.topk(2, dim=-1)[0].sum(dim=-1).topk(self.topk_group, dim=-1, sorted=False)[1]
        kept = torch.zeros(choice.shape[:2], dtype=torch.bool, device=choice.device).scatter(1, best, True)
        choice = choice.masked_fill(~kept[..., None], float("-inf")).view(-1, self.num_experts)
        return choice.topk(self.top_k, dim=-1, sorted=False)[1]

    def forward(self, hidden_states):
        logits = F.linear(hidden_states.view(-1, self.hidden_dim).float(), self.weight.float())
        scores = lrp_sigmoid(logits)
        index = self.choose(scores.detach())
        weights = scores.gather(1, index)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return logits, weights * self.routed_scaling_factor, index
