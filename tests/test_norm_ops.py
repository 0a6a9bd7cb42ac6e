"""lrp_rms_norm and lrp_layer_norm (Triton under the interpreter, and PyTorch) against explicit
float64 relevance formulas and against the HuggingFace / torch modules they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from lrp_triton.ops import lrp_layer_norm, lrp_rms_norm
from scaled_close import assert_close_scaled

BACKENDS = ("triton", "torch")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# (rtol, atol relative to the largest reference value) for relevance and forward outputs. bf16 is
# loosest: the gradient itself is stored in bf16, and the Triton interpreter rounds fp32 -> bf16 by
# truncation (on the GPU it rounds to nearest even).
REL_TOL = {
    torch.float64: (1e-12, 1e-13),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (4e-3, 1e-3),
    torch.bfloat16: (2e-2, 8e-3),
}
FWD_TOL = {
    torch.float64: (1e-12, 1e-13),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 1e-4),
    torch.bfloat16: (2.5e-2, 1e-2),
}

pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest: NaN-filled output buffers


def randn(*shape, dtype=torch.float32, scale=1.0, shift=0.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale + shift).to(dtype)


# ----------------------------------------------------------------------------------------------
# Explicit float64 relevance (never the gradient trick)
# ----------------------------------------------------------------------------------------------
def rms_norm_reference(x, w, g, eps, offset):
    """(y, R_x) in float64. RMSNorm identity rule: z_ij = delta_ij y_i, so R_x_i = R_y_i = y_i g_i."""
    x, w, g = x.double(), w.double(), g.double()
    y = (offset + w) * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y, y * g


def layer_norm_reference(x, w, b, g, eps, cols=None, chunk=256):
    """(y, R_x) in float64 by the explicit LayerNorm rule with std constant.

    z_ij = w_i (delta_ij - 1/n) x_j / std is the contribution of x_j to y_i (b_i absorbs its share),
    R_x_j = sum_i z_ij / y_i * R_y_i with R_y = y * g. The j axis is walked in chunks; `cols`
    restricts R_x to those columns j (R_x[..., cols]) for long rows.
    """
    x, g = x.double(), g.double()
    n = x.shape[-1]
    w = torch.ones(n, dtype=torch.float64) if w is None else w.double()
    b = torch.zeros(n, dtype=torch.float64) if b is None else b.double()
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt((x - mean).pow(2).mean(-1, keepdim=True) + eps)
    y = w * (x - mean) / std + b
    r_over_y = (y * g) / y  # R_y_i / y_i
    cols = torch.arange(n) if cols is None else cols
    rows = torch.arange(n)
    r_x = []
    for j0 in range(0, cols.numel(), chunk):
        j = cols[j0:j0 + chunk]
        centre = (rows[:, None] == j[None, :]).double() - 1.0 / n  # delta_ij - 1/n, [i, j]
        z = w[:, None] * centre * x[..., None, j] / std[..., None]  # [..., i, j]
        r_x.append(torch.einsum("...ij,...i->...j", z, r_over_y))
    return y, torch.cat(r_x, dim=-1)


# ----------------------------------------------------------------------------------------------
# RMSNorm
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", [123, 4097])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_rms_norm_relevance(backend, dtype, hidden, offset):
    eps = 1e-6
    x = randn(3, 5, hidden, dtype=dtype, scale=2.0, shift=0.3)
    w = randn(hidden, dtype=dtype, scale=0.5, shift=0.5 - offset)
    xg = x.clone().requires_grad_(True)
    y = lrp_rms_norm(xg, w, eps, offset=offset, backend=backend)
    g = randn(*y.shape, dtype=y.dtype)
    y.backward(g)
    y_ref, r_ref = rms_norm_reference(x, w, g, eps, offset)
    assert y.dtype == dtype and xg.grad.dtype == dtype
    assert_close_scaled(y, y_ref, dtype, FWD_TOL, "y")
    assert_close_scaled(x.double() * xg.grad.double(), r_ref, dtype, REL_TOL, "R_x")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_hidden_16384(backend):
    x = randn(2, 16384, scale=3.0)
    w = randn(16384)
    xg = x.clone().requires_grad_(True)
    y = lrp_rms_norm(xg, w, 1e-5, backend=backend)
    g = randn(2, 16384)
    y.backward(g)
    y_ref, r_ref = rms_norm_reference(x, w, g, 1e-5, 0.0)
    assert_close_scaled(y, y_ref, torch.float32, FWD_TOL, "y")
    assert_close_scaled(x.double() * xg.grad.double(), r_ref, torch.float32, REL_TOL, "R_x")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_norm_matches_huggingface(backend, dtype):
    """Forward against LlamaRMSNorm (cast, then weight) and Gemma2/3RMSNorm ((1 + w) in float32)."""
    hidden = 4097
    x = randn(3, 5, hidden, dtype=dtype, scale=2.0)
    cases = []
    llama = LlamaRMSNorm(hidden, eps=1e-6).to(dtype)
    gemma3 = Gemma3RMSNorm(hidden, eps=1e-6).to(dtype)
    gemma2 = Gemma2RMSNorm(hidden, eps=1e-5).to(dtype)
    with torch.no_grad():
        for module in (llama, gemma3, gemma2):
            module.weight.copy_(randn(hidden, scale=0.7))
        cases.append(("llama", llama(x), lrp_rms_norm(x, llama.weight, 1e-6, backend=backend)))
        cases.append(("gemma3", gemma3(x), lrp_rms_norm(x, gemma3.weight, 1e-6, offset=1.0, backend=backend)))
        cases.append(("gemma2", gemma2(x), lrp_rms_norm(x, gemma2.weight, 1e-5, offset=1.0, backend=backend)))
    for name, ref, ours in cases:
        assert ours.dtype == ref.dtype, name
        assert_close_scaled(ours, ref, dtype, FWD_TOL, name)
        if dtype == torch.float16:  # RTNE everywhere: the rounding order must match bit for bit
            same = (ours == ref).double().mean().item()
            assert same > 0.98, f"{name}: only {same:.3f} of the fp16 outputs are bit-identical"


def test_rms_norm_llama_weight_dtype_promotion():
    """LlamaRMSNorm with float32 weights on bf16 activations returns float32 (torch promotion)."""
    hidden = 123
    llama = LlamaRMSNorm(hidden)
    with torch.no_grad():
        llama.weight.copy_(randn(hidden))
    x = randn(4, hidden, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = llama(x)
        for backend in BACKENDS:
            ours = lrp_rms_norm(x, llama.weight, backend=backend)
            assert ours.dtype == ref.dtype == torch.float32
            # x / rms(x) is rounded to bf16 before the float32 weight multiplies it
            assert_close_scaled(ours, ref, torch.bfloat16, FWD_TOL, backend)
    xg = x.clone().requires_grad_(True)
    lrp_rms_norm(xg, llama.weight, backend="triton").sum().backward()
    assert xg.grad.dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", [123, 4097])
def test_layer_norm_relevance(backend, dtype, hidden):
    eps = 1e-5
    x = randn(2, 3, hidden, dtype=dtype, scale=1.5, shift=0.7)
    w = randn(hidden, dtype=dtype, scale=0.5, shift=1.0)
    b = randn(hidden, dtype=dtype, scale=0.3)
    xg = x.clone().requires_grad_(True)
    y = lrp_layer_norm(xg, w, b, eps, backend=backend)
    g = randn(*y.shape, dtype=dtype)
    y.backward(g)
    # the explicit rule costs n^2 per row: for long rows, every 4th column plus the block border
    cols = torch.arange(hidden) if hidden < 1024 else torch.cat([torch.arange(0, hidden - 16, 4),
                                                                 torch.arange(hidden - 16, hidden)])
    y_ref, r_ref = layer_norm_reference(x, w, b, g, eps, cols=cols)
    assert y.dtype == dtype and xg.grad.dtype == dtype
    assert_close_scaled(y, y_ref, dtype, FWD_TOL, "y")
    assert_close_scaled((x.double() * xg.grad.double())[..., cols], r_ref, dtype, REL_TOL, "R_x")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("affine", ["weight_only", "none"])
def test_layer_norm_optional_parameters(backend, affine):
    hidden = 77
    x = randn(4, 6, hidden, scale=2.0)
    w = randn(hidden) if affine == "weight_only" else None
    xg = x.clone().requires_grad_(True)
    y = lrp_layer_norm(xg, w, None, 1e-5, backend=backend)
    g = randn(*y.shape)
    y.backward(g)
    y_ref, r_ref = layer_norm_reference(x, w, None, g, 1e-5)
    torch.testing.assert_close(y, F.layer_norm(x, (hidden,), w, None, 1e-5), rtol=1e-5, atol=1e-5)
    assert_close_scaled(y, y_ref, torch.float32, FWD_TOL, "y")
    assert_close_scaled(x.double() * xg.grad.double(), r_ref, torch.float32, REL_TOL, "R_x")


def test_layer_norm_hidden_16384():
    hidden = 16384
    x = randn(1, hidden, scale=2.0, shift=-1.0)
    w, b = randn(hidden), randn(hidden)
    xg = x.clone().requires_grad_(True)
    y = lrp_layer_norm(xg, w, b, backend="triton")
    g = randn(1, hidden)
    y.backward(g)
    # the explicit rule costs n^2 per row: check 1/8 of the columns, chunk borders included
    cols = torch.cat([torch.arange(0, hidden, 8), torch.arange(4090, 4100), torch.arange(hidden - 5, hidden)])
    y_ref, r_ref = layer_norm_reference(x, w, b, g, 1e-5, cols=cols)
    assert_close_scaled(y, y_ref, torch.float32, FWD_TOL, "y")
    assert_close_scaled((x.double() * xg.grad.double())[..., cols], r_ref, torch.float32, REL_TOL, "R_x")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_matches_torch_module(backend, dtype):
    hidden = 4097
    ln = torch.nn.LayerNorm(hidden, eps=1e-5).to(dtype)
    with torch.no_grad():
        ln.weight.copy_(randn(hidden, scale=0.5, shift=1.0))
        ln.bias.copy_(randn(hidden, scale=0.5))
    x = randn(3, 5, hidden, dtype=dtype, scale=3.0, shift=2.0)
    with torch.no_grad():
        ref = ln(x)
        ours = lrp_layer_norm(x, ln.weight, ln.bias, ln.eps, backend=backend)
    assert ours.dtype == ref.dtype
    assert_close_scaled(ours, ref, dtype, FWD_TOL, "LayerNorm")


# ----------------------------------------------------------------------------------------------
# Shared behaviour: no weight gradient, tiny saved state, errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_norms_save_only_per_row_state_and_no_weight_grad(backend):
    hidden = 123
    x = randn(3, 5, hidden).requires_grad_(True)
    w = torch.nn.Parameter(randn(hidden))
    b = torch.nn.Parameter(randn(hidden))
    for y in (lrp_rms_norm(x, w, backend=backend), lrp_layer_norm(x, w, b, backend=backend)):
        saved = [t for t in y.grad_fn.saved_tensors if t is not None]
        # the weight (shared with the module) and one float32 number per row: no activation-sized buffer
        assert sum(t.numel() for t in saved) == hidden + 15
        y.backward(torch.randn_like(y))
    assert w.grad is None and b.grad is None
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_float64_norms_run_in_float64_on_the_torch_path(offset):
    """float64 x and parameters ("auto" picks the PyTorch path) stay float64 end to end: the
    relevance matches the float64 formulas to float64 rounding."""
    x = randn(3, 5, 123, dtype=torch.float64, scale=2.0, shift=0.3)
    w = randn(123, dtype=torch.float64, scale=0.5, shift=0.5 - offset)
    b = randn(123, dtype=torch.float64, scale=0.3)
    g = randn(3, 5, 123, dtype=torch.float64)
    cases = (("RMSNorm", lambda t: lrp_rms_norm(t, w, 1e-6, offset=offset), rms_norm_reference(x, w, g, 1e-6, offset)),
             ("LayerNorm", lambda t: lrp_layer_norm(t, w, b, 1e-5), layer_norm_reference(x, w, b, g, 1e-5)))
    for name, op, (y_ref, r_ref) in cases:
        xg = x.clone().requires_grad_(True)
        y = op(xg)
        y.backward(g)
        assert y.dtype == xg.grad.dtype == torch.float64
        assert_close_scaled(y, y_ref, torch.float64, FWD_TOL, f"{name} y")
        assert_close_scaled(x * xg.grad, r_ref, torch.float64, REL_TOL, f"{name} R_x")


def test_norm_backends_agree_on_a_non_contiguous_input():
    hidden = 130
    base = randn(5, hidden, 3)
    x = base.transpose(1, 2)  # [5, 3, hidden], last dim strided
    w, b = randn(hidden), randn(hidden)
    out = {}
    for backend in BACKENDS:
        xg = x.clone().requires_grad_(True)  # clone keeps the strides
        g = torch.linspace(-1, 1, xg.numel()).view(5, 3, hidden)
        (lrp_rms_norm(xg, w, backend=backend) * g).sum().backward()
        out[backend] = xg.grad.clone()
        xg.grad = None
        (lrp_layer_norm(xg, w, b, backend=backend) * g).sum().backward()
        out[backend + "_ln"] = xg.grad
    torch.testing.assert_close(out["triton"], out["torch"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["triton_ln"], out["torch_ln"], rtol=1e-5, atol=1e-6)


def test_norm_errors():
    x = randn(2, 3, 8)
    w = randn(8)
    with pytest.raises(ValueError, match="weight must have shape"):
        lrp_rms_norm(x, randn(7))
    with pytest.raises(ValueError, match="weight must have shape"):
        lrp_layer_norm(x, randn(2, 8), None)
    with pytest.raises(ValueError, match="bias must have shape"):
        lrp_layer_norm(x, w, randn(9))
    with pytest.raises(TypeError, match="float64 runs only with float64 x and parameters"):
        lrp_rms_norm(x.double(), w)
    with pytest.raises(TypeError, match="float64 runs only with float64 x and parameters"):
        lrp_layer_norm(x, w.double(), None)
    with pytest.raises(TypeError, match="Triton kernels take float32, float16 or bfloat16"):
        lrp_rms_norm(x.double(), w.double(), backend="triton")
    with pytest.raises(TypeError, match="unsupported dtype"):
        lrp_rms_norm(torch.ones(2, 8, dtype=torch.int32), w)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        lrp_rms_norm(x, [1.0] * 8)
    with pytest.raises(ValueError, match="is on meta"):
        lrp_rms_norm(x, torch.empty(8, device="meta"))
    with pytest.raises(ValueError, match="is on meta"):
        lrp_layer_norm(x, w, torch.empty(8, device="meta"))
    with pytest.raises(ValueError, match="eps"):
        lrp_rms_norm(x, w, eps=-1.0)
    with pytest.raises(ValueError, match="unknown backend"):
        lrp_layer_norm(x, w, None, backend="cuda")
    with pytest.raises(ValueError, match="at least one dimension"):
        lrp_rms_norm(torch.tensor(1.0), torch.ones(1))


# ----------------------------------------------------------------------------------------------
# Compiled kernels on a CUDA GPU (skipped without one): autotuned configs, real bf16 rounding
# ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", [123, 4096, 4097, 16384])
def test_norms_on_gpu(dtype, hidden):
    x = randn(4, 9, hidden, dtype=dtype, scale=2.0, shift=0.3)
    g = randn(4, 9, hidden, dtype=dtype)
    llama, gemma = LlamaRMSNorm(hidden).to(dtype).cuda(), Gemma3RMSNorm(hidden).to(dtype).cuda()
    ln = torch.nn.LayerNorm(hidden).to(dtype).cuda()
    with torch.no_grad():
        llama.weight.copy_(randn(hidden, scale=0.5, shift=0.5))
        gemma.weight.copy_(randn(hidden, scale=0.5, shift=-0.5))
        ln.weight.copy_(randn(hidden, scale=0.5, shift=1.0))
        ln.bias.copy_(randn(hidden, scale=0.3))
    cols = torch.arange(hidden) if hidden < 1024 else torch.cat([torch.arange(0, hidden - 16, 16),
                                                                 torch.arange(hidden - 16, hidden)])
    cases = [("llama", llama, lambda t: lrp_rms_norm(t, llama.weight, 1e-6, backend="triton")),
             ("gemma3", gemma, lambda t: lrp_rms_norm(t, gemma.weight, 1e-6, offset=1.0, backend="triton")),
             ("layer_norm", ln, lambda t: lrp_layer_norm(t, ln.weight, ln.bias, 1e-5, backend="triton"))]
    for name, module, op in cases:
        xg = x.cuda().requires_grad_(True)
        y = op(xg)
        y.backward(g.cuda())
        with torch.no_grad():
            ref = module(x.cuda())
        assert y.dtype == ref.dtype, name
        assert_close_scaled(y.cpu(), ref.cpu(), dtype, FWD_TOL, f"{name} forward")
        if dtype != torch.float32:  # round to nearest even on the GPU: the rounding order must match
            same = (y == ref).double().mean().item()
            assert same > 0.98, f"{name}: only {same:.3f} of the outputs are bit-identical"
        w = module.weight.detach().cpu()
        if name == "layer_norm":
            _, r_ref = layer_norm_reference(x, w, module.bias.detach().cpu(), g, 1e-5, cols=cols)
            r = (x.double() * xg.grad.cpu().double())[..., cols]
        else:
            _, r_ref = rms_norm_reference(x, w, g, 1e-6, 1.0 if name == "gemma3" else 0.0)
            r = x.double() * xg.grad.cpu().double()
        assert_close_scaled(r, r_ref, dtype, REL_TOL, f"{name} relevance")
