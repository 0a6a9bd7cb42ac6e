"""lrp_glu and lrp_activation (Triton under the interpreter, and PyTorch) against explicit float64
relevance formulas and against the HuggingFace MLP they replace."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import LlamaMLP

from lrp_triton.ops import ACTIVATIONS, lrp_activation, lrp_glu
from scaled_close import assert_close_scaled

BACKENDS = ("triton", "torch")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HF_NAMES = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "quick_gelu": "quick_gelu"}
# (rtol, atol relative to the largest reference value). bf16 is loosest: gradients are stored in
# bf16 and the Triton interpreter rounds fp32 -> bf16 by truncation (the GPU rounds to nearest).
REL_TOL = {
    torch.float64: (1e-12, 1e-13),
    torch.float32: (1e-5, 1e-7),
    torch.float16: (3e-3, 1e-4),
    torch.bfloat16: (2e-2, 1e-3),
}
FWD_TOL = {
    torch.float64: (1e-12, 1e-13),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 1e-4),
    torch.bfloat16: (2.5e-2, 1e-3),
}

pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest: NaN-filled output buffers


def randn(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).to(dtype)


def with_special_values(x, large=False):
    """x with exact zeros (both signs), tiny and subnormal values (and, if `large`, values whose
    exponentials or cubes overflow float32) written into its first elements."""
    special = [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-3, -1e-3]
    if x.dtype == torch.float32:  # subnormals (the interpreter flushes bf16 subnormals to zero on load)
        special += [1e-40, -1e-42]
    if large:
        special += [30.0, -30.0, 90.0, -90.0, 1e4, -1e4, 1e15, -1e15]
    special = torch.tensor(special, dtype=torch.float64)
    x = x.clone()
    flat = x.view(-1)
    flat[:special.numel()] = special.to(x.dtype)
    return x


# ----------------------------------------------------------------------------------------------
# Explicit float64 references (the activations by their textbook definitions, in float64)
# ----------------------------------------------------------------------------------------------
def act64(x, activation):
    x = x.double()
    if activation == "silu":
        return x / (1.0 + torch.exp(-x))
    if activation == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if activation == "gelu_tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if activation == "relu":
        return x.clamp_min(0.0)
    if activation == "quick_gelu":
        return x / (1.0 + torch.exp(-1.702 * x))
    raise AssertionError(activation)


def ratio64(x, activation):
    """act(x) / x by division in float64, with its limit at x = 0 (1/2, or 0 for ReLU)."""
    x = x.double()
    limit = 0.0 if activation == "relu" else 0.5
    nonzero = x != 0
    safe = torch.where(nonzero, x, torch.ones_like(x))
    return torch.where(nonzero, act64(safe, activation) / safe, torch.full_like(x, limit))


def glu_reference(gate, up, g, activation):
    """(y, R_gate, R_up): identity rule on act, uniform rule on the product: R_gate = R_up = R_y/2."""
    y = act64(gate, activation) * up.double()
    r_y = y * g.double()
    return y, r_y / 2, r_y / 2


def activation_reference(x, g, activation):
    """(y, R_x): identity rule R_x = R_y = act(x) * g."""
    y = act64(x, activation)
    return y, y * g.double()


# ----------------------------------------------------------------------------------------------
# Gated MLP product
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_glu_relevance(backend, dtype, activation):
    hidden = 4097 if dtype == torch.float32 else 123
    gate = with_special_values(randn(3, 5, hidden, dtype=dtype, scale=2.0))
    up = randn(3, 5, hidden, dtype=dtype)
    gate_g, up_g = gate.clone().requires_grad_(True), up.clone().requires_grad_(True)
    y = lrp_glu(gate_g, up_g, activation, backend=backend)
    g = randn(*y.shape, dtype=dtype)
    y.backward(g)
    y_ref, r_gate_ref, r_up_ref = glu_reference(gate, up, g, activation)
    assert y.dtype == dtype and gate_g.grad.dtype == dtype and up_g.grad.dtype == dtype
    assert_close_scaled(y, y_ref, dtype, FWD_TOL, "y")
    assert_close_scaled(gate.double() * gate_g.grad.double(), r_gate_ref, dtype, REL_TOL, "R_gate")
    assert_close_scaled(up.double() * up_g.grad.double(), r_up_ref, dtype, REL_TOL, "R_up")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float64_glu_and_activation_run_in_float64_on_the_torch_path(activation):
    """float64 inputs ("auto" picks the PyTorch path) stay float64: relevance to float64 rounding."""
    dtype = torch.float64
    gate = with_special_values(randn(3, 5, 123, dtype=dtype, scale=2.0))
    up = randn(3, 5, 123, dtype=dtype)
    g = randn(3, 5, 123, dtype=dtype)
    gate_g, up_g = gate.clone().requires_grad_(True), up.clone().requires_grad_(True)
    y = lrp_glu(gate_g, up_g, activation)
    y.backward(g)
    y_ref, r_gate_ref, r_up_ref = glu_reference(gate, up, g, activation)
    assert y.dtype == gate_g.grad.dtype == up_g.grad.dtype == dtype
    assert_close_scaled(y, y_ref, dtype, FWD_TOL, "glu y")
    assert_close_scaled(gate * gate_g.grad, r_gate_ref, dtype, REL_TOL, "R_gate")
    assert_close_scaled(up * up_g.grad, r_up_ref, dtype, REL_TOL, "R_up")
    xg = gate.clone().requires_grad_(True)
    y = lrp_activation(xg, activation)
    y.backward(g)
    y_ref, r_ref = activation_reference(gate, g, activation)
    assert y.dtype == xg.grad.dtype == dtype
    assert_close_scaled(y, y_ref, dtype, FWD_TOL, "activation y")
    assert_close_scaled(gate * xg.grad, r_ref, dtype, REL_TOL, "R_x")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_glu_gradient_at_zero_and_tiny_gates(backend, activation):
    """No NaN/inf at gate == 0 and g_gate = g * up * act(gate)/gate / 2 with the ratio's limit there."""
    gate = with_special_values(randn(2, 40), large=True)
    up = randn(2, 40)
    gate_g, up_g = gate.clone().requires_grad_(True), up.clone().requires_grad_(True)
    y = lrp_glu(gate_g, up_g, activation, backend=backend)
    g = randn(2, 40)
    y.backward(g)
    assert torch.isfinite(gate_g.grad).all() and torch.isfinite(up_g.grad).all()
    # float32 ratio: a few ulp, plus 1e-7 absolute for Phi(x) = (1 + erf(x/sqrt2))/2 at negative x,
    # plus an absolute floor for results in float32's subnormal range (fixed absolute precision)
    ratio = ratio64(gate, activation)
    expected_gate = g.double() * up.double() * ratio / 2
    expected_up = g.double() * act64(gate, activation) / 2
    for name, grad, expected, other in (("g_gate", gate_g.grad, expected_gate, up),
                                        ("g_up", up_g.grad, expected_up, gate)):
        err = (grad.double() - expected).abs()
        bound = 2e-6 * expected.abs() + 1e-7 * (g.double() * other.double()).abs() + 1e-43
        assert (err <= bound).all(), f"{name} wrong at gate = {gate[err > bound].tolist()}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_glu_matches_llama_mlp(backend, dtype, activation):
    """act_fn(gate_proj(x)) * up_proj(x) of a LlamaMLP with random weights, and the whole MLP."""
    config = LlamaConfig(hidden_size=48, intermediate_size=123, num_attention_heads=4, num_key_value_heads=2,
                         hidden_act=HF_NAMES[activation])
    mlp = LlamaMLP(config).to(dtype)
    x = randn(3, 5, 48, dtype=dtype)
    with torch.no_grad():
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        ref = mlp.act_fn(gate) * up
        ours = lrp_glu(gate, up, activation, backend=backend)
        assert ours.dtype == ref.dtype
        assert_close_scaled(ours, ref, dtype, FWD_TOL, "act(gate) * up")
        # RTNE everywhere: act(gate) is rounded before the product, as in torch. HF's QuickGELU also rounds
        # 1.702 x and its sigmoid in fp16; the kernel computes act in float32 and rounds once (closer to exact)
        if dtype == torch.float16 and activation != "quick_gelu":
            same = (ours == ref).double().mean().item()
            assert same > 0.98, f"only {same:.3f} of the fp16 products are bit-identical"
        if dtype == torch.float32:  # in bf16, down_proj sums 123 rounded products: compare those only
            assert_close_scaled(mlp.down_proj(ours), mlp(x), dtype, FWD_TOL, "LlamaMLP")


# ----------------------------------------------------------------------------------------------
# Plain activation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_relevance(backend, dtype, activation):
    hidden = 4097 if dtype == torch.float32 else 123
    x = with_special_values(randn(3, 5, hidden, dtype=dtype, scale=2.0))
    xg = x.clone().requires_grad_(True)
    y = lrp_activation(xg, activation, backend=backend)
    g = randn(*y.shape, dtype=dtype)
    y.backward(g)
    y_ref, r_ref = activation_reference(x, g, activation)
    assert y.dtype == dtype and xg.grad.dtype == dtype
    assert_close_scaled(y, y_ref, dtype, FWD_TOL, "y")
    assert_close_scaled(x.double() * xg.grad.double(), r_ref, dtype, REL_TOL, "R_x")
    # the gradient itself, including at x == 0 where the relevance is trivially 0: the float32 ratio
    # is exact to a few ulp, or 1e-7 absolute for Phi(x) = (1 + erf(x/sqrt2))/2 at negative x
    rtol, atol = REL_TOL[dtype]
    expected = g.double() * ratio64(x, activation)
    err = (xg.grad.double() - expected).abs()
    fi = torch.finfo(dtype)
    subnormal_step = fi.tiny * fi.eps  # absolute precision of results below the smallest normal
    bound = rtol * expected.abs() + max(atol, 2e-7) * g.double().abs() + 2 * subnormal_step
    assert (err <= bound).all(), f"g_x wrong at x = {x[err > bound].tolist()[:10]}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_matches_huggingface(backend, activation):
    fn = ACT2FN[HF_NAMES[activation]]
    x = with_special_values(randn(7, 130, scale=3.0), large=True)
    with torch.no_grad():
        ours = lrp_activation(x, activation, backend=backend)
    torch.testing.assert_close(ours, fn(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Saved state, weights, errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_ops_save_only_their_inputs(backend):
    gate, up = randn(4, 33).requires_grad_(True), randn(4, 33).requires_grad_(True)
    y = lrp_glu(gate, up, "silu", backend=backend)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 2
    assert saved[0].data_ptr() == gate.data_ptr() and saved[1].data_ptr() == up.data_ptr()
    x = randn(4, 33).requires_grad_(True)
    saved = lrp_activation(x, "gelu", backend=backend).grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()


@pytest.mark.parametrize("backend", BACKENDS)
def test_glu_gradient_only_where_required(backend):
    gate = randn(3, 17).requires_grad_(True)
    up = randn(3, 17)  # a frozen input: no gradient requested
    lrp_glu(gate, up, "gelu", backend=backend).sum().backward()
    assert gate.grad is not None and up.grad is None


def test_mlp_backends_agree_on_non_contiguous_inputs():
    base = randn(2, 129, 6)
    gate, up = base[..., :3].transpose(1, 2), base[..., 3:].transpose(1, 2)  # [2, 3, 129], strided
    grads = {}
    for backend in BACKENDS:
        gg, ug = gate.detach().requires_grad_(True), up.detach().requires_grad_(True)
        lrp_glu(gg, ug, "gelu_tanh", backend=backend).backward(torch.ones(2, 3, 129))
        grads[backend] = (gg.grad, ug.grad)
    torch.testing.assert_close(grads["triton"], grads["torch"], rtol=1e-6, atol=1e-7)


def test_mlp_errors():
    a = randn(2, 8)
    with pytest.raises(ValueError, match="same shape"):
        lrp_glu(a, randn(2, 9))
    with pytest.raises(TypeError, match="share a dtype"):
        lrp_glu(a, a.half())
    with pytest.raises(TypeError, match="share a dtype"):
        lrp_glu(a.double(), a)
    with pytest.raises(TypeError, match="Triton kernels take float32, float16 or bfloat16"):
        lrp_glu(a.double(), a.double(), backend="triton")
    with pytest.raises(TypeError, match="unsupported dtype"):
        lrp_activation(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        lrp_activation([1.0, 2.0])
    with pytest.raises(ValueError, match="unknown activation"):
        lrp_glu(a, a, "swiglu")
    with pytest.raises(ValueError, match="unknown activation"):
        lrp_activation(a, "tanh")
    with pytest.raises(ValueError, match="is on meta"):
        lrp_glu(a, torch.empty(2, 8, device="meta"))
    with pytest.raises(ValueError, match="unknown backend"):
        lrp_activation(a, backend="gpu")


# ----------------------------------------------------------------------------------------------
# Compiled kernels on a CUDA GPU (skipped without one): autotuned configs, real bf16 rounding
# ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_mlp_ops_on_gpu(dtype, activation):
    gate = with_special_values(randn(4, 9, 11008, dtype=dtype))
    up = randn(4, 9, 11008, dtype=dtype)
    g = randn(4, 9, 11008, dtype=dtype)
    fn = ACT2FN[HF_NAMES[activation]]
    gate_c, up_c = gate.cuda().requires_grad_(True), up.cuda().requires_grad_(True)
    y = lrp_glu(gate_c, up_c, activation, backend="triton")
    y.backward(g.cuda())
    x_c = gate.cuda().requires_grad_(True)
    a = lrp_activation(x_c, activation, backend="triton")
    a.backward(g.cuda())
    with torch.no_grad():
        refs = (("glu", y, fn(gate.cuda()) * up.cuda()), ("activation", a, fn(gate.cuda())))
    for name, ours, ref in refs:
        assert ours.dtype == ref.dtype
        assert_close_scaled(ours.cpu(), ref.cpu(), dtype, FWD_TOL, f"{name} forward")
        if dtype != torch.float32:  # round to nearest even on the GPU: the rounding order must match
            # (not every element: at negative inputs 1 + erf and 1 + tanh cancel, which magnifies the
            # last-bit differences of erf / tanh implementations; ours writes 1 + tanh as a sigmoid)
            same = (ours == ref).double().mean().item()
            assert same > 0.95, f"{name}: only {same:.3f} of the outputs are bit-identical"
    _, r_gate, r_up = glu_reference(gate, up, g, activation)
    assert_close_scaled(gate.double() * gate_c.grad.cpu().double(), r_gate, dtype, REL_TOL, "R_gate")
    assert_close_scaled(up.double() * up_c.grad.cpu().double(), r_up, dtype, REL_TOL, "R_up")
    _, r_x = activation_reference(gate, g, activation)
    assert_close_scaled(gate.double() * x_c.grad.cpu().double(), r_x, dtype, REL_TOL, "R_x")
