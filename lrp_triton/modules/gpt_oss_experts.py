"""gpt-oss's experts: a clamped SwiGLU with biases, in their own weight layout, with the AttnLRP rules.

Expert e on a token x (gate_up_proj [E, hidden, 2 I] applied as x @ W, gate and up interleaved in its
columns: gate = columns 0, 2, 4, ..., up = columns 1, 3, 5, ...):

    gate, up = (x @ W_e + b_e)[..., ::2], (x @ W_e + b_e)[..., 1::2]
    a(gate)  = g * sigmoid(alpha * g),  g = min(gate, limit)      the clamped activation
    u        = clamp(up, -limit, limit)
    y        = (u + 1) * a(gate)                                   the gate product
    E_e(x)   = y @ D_e + d_e,  and the block sums w_k * E_k(x) over the routed experts

Rules (gradient form; g_y is the gradient arriving at y):
- the clamped activation is one elementwise function of the gate: identity rule R_gate = R_a, so
  g_gate = g_a * a(gate) / gate (= g_a * sigmoid(alpha * gate) where gate <= limit, never a division by
  0 there; a(limit) / gate above it, gate > limit > 0);
- the gate product: uniform rule R_a = R_(u + 1) = R_y / 2: g_a = g_y (u + 1) / 2, g_(u+1) = g_y a / 2;
- u + 1: epsilon rule (the constant 1 absorbs its share): the exact gradient, g_u = g_(u+1);
- up's clamp: linear where it does not clip (R passes), a clipped entry is the constant +-limit, which
  absorbs its relevance like a bias (g_up = 0 there): the exact gradient, as OLMo's clip_qkv;
- the projections and their biases: epsilon rule (exact gradients; each bias absorbs its share);
- each routing weight x expert output: the uniform rule (`lrp_uniform_product`), as for every MoE here.
CP-LRP makes the activation branch a constant (g_gate = 0, g_up = g_y a) and the routing weights
constants. The router (top-k of x W_r + b_r, softmax over the selected logits) is left untouched:
softmax rule on the selected logits (the others take nothing), epsilon rule on the router.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_triton.backend import upcast
from lrp_triton.ops.elementwise import lrp_uniform_product
from lrp_triton.ops.streams import refuse_batched_inputs
from lrp_triton.options import LRPOptions
from lrp_triton.rules import cp_lrp_constant


def clamped_swiglu(gate: torch.Tensor, up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """HF's forward, operation for operation (so that the output is bit-identical)."""
    gate = gate.clamp(min=None, max=limit)
    up = up.clamp(min=-limit, max=limit)
    return (up + 1) * (gate * torch.sigmoid(gate * alpha))


class _ClampedSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(gate, up, alpha, limit):
        return clamped_swiglu(gate, up, alpha, limit)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.alpha, ctx.limit = inputs[2], inputs[3]

    vmap = refuse_batched_inputs("lrp_clamped_swiglu")  # its backward is batched by vmap (several targets)

    @staticmethod
    def backward(ctx, g):
        gate, up = (upcast(t) for t in ctx.saved_tensors)
        alpha, limit = ctx.alpha, ctx.limit
        g32 = upcast(g)
        clipped = gate.clamp(max=limit)
        act = clipped * torch.sigmoid(clipped * alpha)
        safe = torch.where(gate > limit, gate, torch.ones_like(gate))
        ratio = torch.where(gate > limit, act / safe, torch.sigmoid(gate * alpha))  # a(gate) / gate
        u1 = up.clamp(-limit, limit) + 1
        inside = (up >= -limit) & (up <= limit)
        d_gate = g32 * u1 / 2 * ratio
        d_up = torch.where(inside, g32 * act / 2, torch.zeros_like(g32))
        return d_gate.to(g.dtype), d_up.to(g.dtype), None, None


def lrp_clamped_swiglu(gate: torch.Tensor, up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """(clamp(up, -limit, limit) + 1) * a(gate), a(x) = min(x, limit) sigmoid(alpha min(x, limit)), with the
    identity rule on a and the uniform rule on the product (module docstring):
    g_gate = g (u + 1) / 2 * a(gate) / gate, g_up = g a(gate) / 2 where up is not clipped, else 0."""
    return _ClampedSwiGLU.apply(gate, up, float(alpha), float(limit))


class LRPGptOssExperts(nn.Module):
    """Drop-in for GptOssExperts: gate_up_proj [E, hidden, 2 I] (interleaved), gate_up_proj_bias [E, 2 I],
    down_proj [E, I, hidden], down_proj_bias [E, hidden], alpha, limit."""

    def __init__(self, module, *, mode: str):
        super().__init__()
        self.gate_up_proj, self.gate_up_proj_bias = module.gate_up_proj, module.gate_up_proj_bias  # shared Parameters
        self.down_proj, self.down_proj_bias = module.down_proj, module.down_proj_bias
        self.num_experts, self.alpha, self.limit, self.mode = module.num_experts, module.alpha, module.limit, mode

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module, mode=options.mode)

    def gated(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        if self.mode == "cp-lrp":  # the activation branch a constant
            clipped = gate.clamp(min=None, max=self.limit)
            act = clipped * torch.sigmoid(clipped * self.alpha)
            return (up.clamp(min=-self.limit, max=self.limit) + 1) * act.detach()
        return lrp_clamped_swiglu(gate, up, self.alpha, self.limit)

    def forward(self, hidden_states, router_indices, routing_weights):
        out = torch.zeros_like(hidden_states)
        routing_weights = cp_lrp_constant(routing_weights, self.mode)
        for expert in torch.unique(router_indices).tolist():
            token, slot = torch.where(router_indices == expert)
            gate_up = hidden_states[token] @ self.gate_up_proj[expert] + self.gate_up_proj_bias[expert]
            expert_out = self.gated(gate_up) @ self.down_proj[expert] + self.down_proj_bias[expert]
            weight = routing_weights[token, slot, None]
            weighted = expert_out * weight if self.mode == "cp-lrp" else lrp_uniform_product(expert_out, weight)
            out.index_add_(0, token, weighted.to(out.dtype))
        return out


class LRPGptOssMLP(nn.Module):
    """Drop-in for GptOssMLP (the sparse block): its router untouched, its experts `LRPGptOssExperts`;
    returns (output, router scores) as GptOssMLP does."""

    def __init__(self, router, experts):
        super().__init__()
        self.router, self.experts = router, experts

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.router, LRPGptOssExperts.from_hf(module.experts, options))

    def forward(self, hidden_states):
        batch, length, hidden = hidden_states.shape
        flat = hidden_states.reshape(-1, hidden)
        _, scores, index = self.router(flat)
        return self.experts(flat, index, scores).reshape(batch, length, hidden), scores
