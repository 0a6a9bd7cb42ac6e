"""Mixture-of-experts layer (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, PhiMoE, GLM4-MoE, DeepSeek-V2 / V3) with
the AttnLRP routing rules.

    y = sum_k w_k E_k(x),   w = renorm(topk(softmax(router(x))))

The router softmax (softmax rule) and the top-k renormalisation (epsilon rule; absent where
norm_topk_prob is off) keep their exact gradients: the router is left untouched (PhiMoE's
sparsemixer too; GLM4-MoE's sigmoid router: see moe_gates.py). Each routing product w_k * E_k(x) takes the uniform
rule (gradient halved for both factors); each expert is a gated MLP with the identity + uniform
rules. CP-LRP treats the routing weights as constants (like the gate branch of a gated MLP).
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_triton.modules.mlp import activation_name, gated_product
from lrp_triton.ops.elementwise import lrp_uniform_product
from lrp_triton.options import LRPOptions
from lrp_triton.rules import cp_lrp_constant


class LRPMoEExperts(nn.Module):
    """Drop-in for MixtralExperts and the other families' experts of the same layout: 3-D gate_up_proj /
    down_proj parameters."""

    def __init__(self, gate_up_proj, down_proj, activation: str, *, mode: str, backend: str):
        super().__init__()
        self.gate_up_proj, self.down_proj = gate_up_proj, down_proj  # the replaced module's Parameters
        self.num_experts = gate_up_proj.shape[0]
        self.activation, self.mode, self.backend = activation, mode, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.gate_up_proj, module.down_proj, activation_name(module.act_fn), mode=options.mode,
                   backend=options.backend)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        top_k_weights = cp_lrp_constant(top_k_weights, self.mode)
        for expert in torch.unique(top_k_index).tolist():
            token, slot = torch.where(top_k_index == expert)
            gate, up = nn.functional.linear(hidden_states[token], self.gate_up_proj[expert]).chunk(2, dim=-1)
            expert_out = nn.functional.linear(gated_product(gate, up, self.activation, self.mode, self.backend),
                                              self.down_proj[expert])
            weight = top_k_weights[token, slot, None]
            # in the dtype HF's product promotes to (float32 routing weights: a bfloat16 model's product is
            # float32, rounded once by the sum below), so that the forward is unchanged in every dtype
            weighted = expert_out * weight if self.mode == "cp-lrp" else lrp_uniform_product(expert_out, weight)
            out.index_add_(0, token, weighted.to(out.dtype))
        return out
