"""The sigmoid gates of mixture-of-experts layers on their own (the whole families are checked by the
model contract, tests/test_model_contract.py, against the explicit reference in reference_lrp.py)."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeTopkRouter

from lrp_triton.modules import LRPSigmoidTopkRouter, lrp_sigmoid


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lrp_sigmoid_splits_off_the_constant_half(dtype):
    """sigmoid(x) = 1/2 + tanh(x / 2) / 2: R_x = x * g_x equals (y - 1/2) / y * R_y, R_y = y * g_y (the
    constant 1/2 absorbs the rest); finite where x = 0 (the ratio's limit 1/4), and at large |x|."""
    x = torch.randn(7, 33, dtype=dtype) * 3
    x[0, :5] = 0.0
    x[1, :4] = torch.tensor([1e-6, -1e-6, 40.0, -40.0], dtype=dtype)
    x.requires_grad_()
    y = lrp_sigmoid(x)
    assert torch.equal(y, torch.sigmoid(x))
    g = torch.randn_like(y)
    y.backward(g)
    r_y = (y * g).detach()
    explicit = (y.detach() - 0.5) / y.detach() * r_y
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(x * x.grad, explicit, rtol=tol, atol=tol * r_y.abs().max().item())
    torch.testing.assert_close(x.grad[0, :5], g[0, :5] / 4, rtol=tol, atol=0)


@pytest.mark.parametrize("config_class, router_class", [(transformers.Glm4MoeConfig, Glm4MoeTopkRouter),
                                                         (transformers.DeepseekV3Config, DeepseekV3TopkRouter)])
def test_sigmoid_router_forward_equals_hf_router(config_class, router_class):
    """Same logits, weights and chosen experts as HF's router (bias-corrected, grouped, renormalised, scaled):
    GLM4-MoE's and DeepSeek-V3's."""
    config = config_class(hidden_size=24, n_routed_experts=12, num_experts_per_tok=3, n_group=4,
                          topk_group=2, routed_scaling_factor=1.7, norm_topk_prob=True)
    hf = router_class(config)
    with torch.no_grad():
        hf.weight.normal_()
        hf.e_score_correction_bias.normal_(std=0.2)
    ours = LRPSigmoidTopkRouter(hf)
    x = torch.randn(2, 29, 24)
    with torch.no_grad():
        expected = hf(x)
    got = ours(x)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    with torch.no_grad():  # the bias changes the choice of some tokens: the check above covers it
        hf.e_score_correction_bias.zero_()
        unbiased = hf(x)[2]
    assert not torch.equal(unbiased.sort(-1).values, expected[2].sort(-1).values)


@pytest.mark.parametrize("family", ["mixtral", "glm4_moe"])
def test_bfloat16_forward_equals_hf_eager_experts(family):
    """float32 routing weights times bfloat16 expert outputs: the product in float32, as HF's, then one
    rounding in the sum (the model zoo checks the forward in float32 only)."""
    import lrp_triton
    from model_zoo import tiny_model

    model = tiny_model(family).to(torch.bfloat16)
    model.set_experts_implementation("eager")  # the default grouped_mm kernel rounds differently
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        expected = model(ids).logits
        with lrp_triton.apply(model):
            assert any(type(m).__name__ == "LRPMoEExperts" for m in model.modules())
            assert torch.equal(model(ids).logits, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clamped_swiglu_rule_is_the_explicit_one(dtype):
    """gpt-oss's (clamp(up) + 1) * a(gate): the forward is HF's `_apply_gate` bit for bit, and x * g_x is the
    explicit relevance: R_gate = R_y / 2 (identity rule on the clamped activation, also where the gate
    clips), R_up = u / (u + 1) * R_y / 2 where up is not clipped (epsilon rule on u + 1), 0 where it is."""
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    from lrp_triton.modules import lrp_clamped_swiglu

    hf = GptOssExperts(transformers.GptOssConfig(hidden_size=8, intermediate_size=4, num_local_experts=1,
                                                 swiglu_limit=1.5))
    gate, up = (2.0 * torch.randn(5, 41, dtype=dtype)).requires_grad_(), (2.0 * torch.randn(5, 41, dtype=dtype))
    up.requires_grad_()
    y = lrp_clamped_swiglu(gate, up, hf.alpha, hf.limit)
    interleaved = torch.stack([gate, up], -1).flatten(-2)
    assert torch.equal(y, hf._apply_gate(interleaved))
    assert (gate > hf.limit).any() and (up.abs() > hf.limit).any()  # both clamps clip somewhere
    g = torch.randn_like(y)
    y.backward(g)
    r_y = (y * g).detach()
    u = up.detach().clamp(-hf.limit, hf.limit)
    explicit_up = torch.where(up.detach().abs() <= hf.limit, u / (u + 1) * r_y / 2, torch.zeros_like(r_y))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(gate * gate.grad, r_y / 2, rtol=tol, atol=tol * r_y.abs().max().item())
    torch.testing.assert_close(up * up.grad, explicit_up, rtol=tol, atol=tol * r_y.abs().max().item())


def test_gpt_oss_experts_bfloat16_forward_equals_hf_eager():
    """LRPGptOssExperts' forward is GptOssExperts' (eager) bit for bit in bfloat16 (the zoo checks float32)."""
    from model_zoo import tiny_model

    from lrp_triton.modules import LRPGptOssExperts

    model = tiny_model("gpt_oss").to(torch.bfloat16)
    model.set_experts_implementation("eager")
    hf = model.model.layers[0].mlp.experts
    x = torch.randn(23, 64, dtype=torch.bfloat16)
    _, weights, index = model.model.layers[0].mlp.router(x)
    with torch.no_grad():
        expected = hf(x, index, weights)
    for mode in ("attnlrp", "cp-lrp"):
        assert torch.equal(LRPGptOssExperts(hf, mode=mode)(x, index, weights), expected)
