"""lrp_attention on a CUDA GPU (compiled Triton, not the interpreter) against the float64 references.

Every test here is marked `gpu`: without CUDA, conftest skips them.

- Relevance (x * x.grad) of q, k, v in AttnLRP mode for bfloat16 and float16 (float32 in three
  D = 64 cases) at shapes the CPU tests cannot afford: odd lengths (1000, 1531, 517), GQA/MQA, causal and not, a cached prefix
  (N != M), key padding, a sliding window (causal, and the symmetric band without causality),
  soft-capping, head dims 64/80/128/256, and inputs in the [B, N, H, D]-transposed layout
  transformers hands over. Compared with the explicit float64
  relevance of tests/reference_attention.py, relative to the reference's largest magnitude.
- CP-LRP and the gradient mode once each.
- Long context: N = 16384 (bf16, H = 8, D = 128): the peak memory of forward + backward rules out
  any N x N buffer, and the result agrees with torch SDPA in float32 as closely as bf16 SDPA does.

Compile time: the Triton autotuner would compile and time every config for every new set of
compile-time flags, which makes a matrix of cases slow. The correctness cases therefore pin one
config per kernel, a different one per case, so that together they cover the config lists (a
config whose tiles do not fit in shared memory falls back to ordinary autotuning); the long-context
test runs the autotuner as users do.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from lrp_triton.ops import lrp_attention
from reference_attention import attention_forward_reference, attention_gradient_reference, attention_relevance_reference
from scaled_close import assert_rel_close
from test_attention import run_op

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("poisoned_outputs")]  # conftest: NaN-filled buffers

DEVICE = "cuda"
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# (max |error| / max |reference|, ||error|| / ||reference||) per dtype
TOLERANCES = {torch.float32: (1e-4, 2e-5), torch.float16: (2e-2, 1e-2), torch.bfloat16: (6e-2, 3e-2)}

# name: (B, H, Hkv, N, M, D, kwargs, extra) -- the float64 reference holds a few [B, H, N, M, D]
# tensors at once, so B * H * N * M * D stays near 2.6e8 (2 GB each): run_gpu.sh runs 6 test
# processes side by side on one GPU.
GPU_CASES = {
    "causal_odd_bnhd": (1, 4, 4, 1000, 1000, 64, dict(causal=True), dict(layout="bnhd")),
    "cross_gqa_noncausal": (1, 2, 1, 1531, 600, 128, dict(causal=False), {}),
    "cached_prefix_gqa_d80": (1, 4, 2, 517, 1531, 80, dict(causal=True), {}),
    "padding_mqa": (2, 2, 1, 1000, 1000, 64, dict(causal=True), dict(padding=True)),
    "window": (1, 2, 2, 1531, 1531, 64, dict(causal=True, sliding_window=200), {}),
    "softcap_d256": (1, 1, 1, 1000, 1000, 256, dict(causal=True, softcap=5.0), dict(q_scale=4.0)),
    # ModernBERT's local layers: the symmetric band |i - j| < 129 without causality, N != M, padding
    "local_window_padding": (1, 2, 1, 1000, 1300, 64, dict(causal=False, sliding_window=129), dict(padding=True)),
}


def make_gpu_case(name, dtype, device=None):
    """Fresh random inputs (q, k, v, grad_out, kwargs) for one named case, in `dtype` on `device`."""
    device = device or DEVICE
    b, h, hkv, n, m, d, kw, extra = GPU_CASES[name]
    kw = dict(kw)

    def randn(bb, hh, ll):
        if extra.get("layout") == "bnhd":  # what transformers hands over: [B, N, H, D] transposed
            return torch.randn(bb, ll, hh, d, device=device).transpose(1, 2)
        return torch.randn(bb, hh, ll, d, device=device)

    q = randn(b, h, n) * extra.get("q_scale", 1.0)
    k, v, grad_out = randn(b, hkv, m), randn(b, hkv, m), randn(b, h, n)
    if extra.get("padding"):
        mask = torch.ones(b, m, dtype=torch.bool, device=device)
        mask[-1, : m // 3] = False  # left padding in the last row
        mask[0, torch.randperm(m, device=device)[: m // 20]] = False  # scattered holes
        kw["key_padding_mask"] = mask
    return q.to(dtype), k.to(dtype), v.to(dtype), grad_out.to(dtype), kw


@contextlib.contextmanager
def pinned_configs(index, head_dim, small_tiles=False):
    """Restrict each attention autotuner to one config (chosen by `index`) while the block runs;
    `small_tiles`: choose among configs of at most 64 x 64 tiles (quick to compile in float32)."""
    from lrp_triton.kernels import attention as ka

    block_d = max(16, 1 << (head_dim - 1).bit_length())
    on_gpu = {"Q": torch.empty(0, device="cuda")}  # each kernel's own pruning, for this GPU's architecture
    saved = {}
    try:
        for j, name in enumerate(("_attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq")):
            tuner = getattr(ka, name, None)
            configs = list(getattr(tuner, "configs", None) or [])
            if len(configs) < 2:
                continue
            prune = getattr(tuner, "early_config_prune", None)
            valid = prune(configs, on_gpu, BLOCK_D=block_d) if prune is not None else configs
            if small_tiles:
                valid = [c for c in valid if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64] or valid
            saved[name] = tuner.configs
            tuner.configs = [valid[(index + 2 * j) % len(valid)]]
        yield {name: str(getattr(ka, name).configs[0]) for name in saved}
    finally:
        for name, configs in saved.items():
            getattr(ka, name).configs = configs


def run_op_pinned(index, q, k, v, grad_out, mode, **kw):
    """run_op on the Triton backend with pinned configs; plain autotuning if a pinned one does not fit."""
    from triton.runtime.errors import OutOfResources

    try:
        with pinned_configs(index, q.shape[-1], small_tiles=q.dtype == torch.float32) as chosen:
            return run_op(q, k, v, grad_out, "triton", mode, **kw), chosen
    except OutOfResources as e:
        print(f"pinned config does not fit ({e}); autotuning instead")
        return run_op(q, k, v, grad_out, "triton", mode, **kw), "autotuned"


def rel_fro(actual, expected):
    expected = expected.to(torch.float64)
    return ((actual.to(torch.float64) - expected).norm() / expected.norm()).item()


def check_close(actual, expected, dtype, name):
    max_tol, fro_tol = TOLERANCES[dtype]
    assert_rel_close(actual, expected, max_tol, name)
    err = rel_fro(actual, expected)
    assert err <= fro_tol, f"{name}: relative Frobenius error {err:.3e} > {fro_tol}"


def check_attnlrp_case(name, dtype, index, device=None):
    """One case in AttnLRP mode: output and R_q, R_k, R_v against the float64 references."""
    q, k, v, grad_out, kw = make_gpu_case(name, dtype, device)
    (out, rq, rk, rv), chosen = run_op_pinned(index, q, k, v, grad_out, "attnlrp", **kw)
    assert out.dtype == dtype and rq.dtype == dtype and rk.dtype == dtype and rv.dtype == dtype
    for t, what in ((out, "out"), (rq, "R_q"), (rk, "R_k"), (rv, "R_v")):
        assert torch.isfinite(t).all(), f"{what}: non-finite values (configs {chosen})"
    ref_out = attention_forward_reference(q, k, v, **kw)["out"]
    check_close(out, ref_out, dtype, f"out (configs {chosen})")
    del ref_out
    eq, ek, ev = attention_relevance_reference(q, k, v, grad_out, mode="attnlrp", **kw)
    for actual, expected, what in ((rq, eq, "R_q"), (rk, ek, "R_k"), (rv, ev, "R_v")):
        check_close(actual, expected, dtype, f"{what} (configs {chosen})")
    return chosen


# float32 runs its dots in IEEE mode (no tensor cores), which compiles slowly (seen AOT for sm_90 on a
# 2-core CPU: 11 to 46 s per forward config at D = 64, up to 174 s at D = 128): three D = 64 cases,
# with small tiles
FP32_CASES = ("causal_odd_bnhd", "padding_mqa", "window")
_CASE_IDS = [(name, dtype) for name in GPU_CASES for dtype in DTYPES
             if dtype != torch.float32 or name in FP32_CASES]


@pytest.mark.parametrize("name, dtype", _CASE_IDS, ids=[f"{n}-{str(d)[6:]}" for n, d in _CASE_IDS])
def test_attnlrp_relevance_gpu(name, dtype):
    check_attnlrp_case(name, dtype, index=_CASE_IDS.index((name, dtype)))
    torch.cuda.empty_cache()


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=("bfloat16", "float32"))
def test_gradient_mode_gpu(dtype):
    """mode='gradient': x * x.grad equals Input x Gradient through the float64 eager reference."""
    name = "causal_odd_bnhd"
    q, k, v, grad_out, kw = make_gpu_case(name, dtype)
    # the same pinned configs as the AttnLRP test of this case: its forward binary is reused
    (_, rq, rk, rv), chosen = run_op_pinned(_CASE_IDS.index((name, dtype)), q, k, v, grad_out, "gradient", **kw)
    eq, ek, ev = attention_gradient_reference(q, k, v, grad_out, **kw)
    for actual, expected, what in ((rq, eq, "R_q"), (rk, ek, "R_k"), (rv, ev, "R_v")):
        check_close(actual, expected, dtype, f"{what} (configs {chosen})")


def test_cp_lrp_gpu():
    """CP-LRP: relevance only through V, none through Q and K."""
    dtype = torch.bfloat16
    q, k, v, grad_out, kw = make_gpu_case("padding_mqa", dtype)
    (_, rq, rk, rv), chosen = run_op_pinned(2, q, k, v, grad_out, "cp-lrp", **kw)
    _, _, ev = attention_relevance_reference(q, k, v, grad_out, mode="cp-lrp", **kw)
    check_close(rv, ev, dtype, f"R_v (configs {chosen})")
    assert rq.abs().max() == 0 and rk.abs().max() == 0


LONG_CONTEXT = (1, 8, 16384, 128)  # B, H, N, D


def _peak_extra_bytes(fn):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base, result


@pytest.mark.parametrize("causal", (True, False), ids=("causal", "noncausal"))
def test_long_context_memory_and_accuracy(causal):
    """N = 16384, bf16, H = 8, D = 128: O(N) memory, and SDPA-level accuracy at long range."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, n, d = LONG_CONTEXT
    q, k, v, g = (torch.randn(b, h, n, d, device=DEVICE, dtype=torch.bfloat16) for _ in range(4))
    xs = [t.clone().requires_grad_() for t in (q, k, v)]

    def fwd_bwd():
        out = lrp_attention(*xs, causal=causal, mode="attnlrp", backend="triton")
        return (out.detach(),) + torch.autograd.grad(out, xs, g)

    fwd_bwd()  # compile and autotune first: the autotuner's own buffers are not the op's memory
    torch.cuda.empty_cache()
    peak, (out, dq, dk, dv) = _peak_extra_bytes(fwd_bwd)
    nxn_fp32_per_head = h * n * n * 4  # one N x N float32 matrix per head: 8 GiB here
    print(f"peak extra memory of forward + backward: {peak / 2**20:.1f} MiB "
          f"(N x N fp32 per head: {nxn_fp32_per_head / 2**20:.0f} MiB)")
    assert peak < nxn_fp32_per_head / 8, f"peak {peak / 2**20:.1f} MiB: an N x N buffer is being stored"
    assert peak < 16 * q.nbytes, f"peak {peak / 2**20:.1f} MiB is more than 16 [B, H, N, D] buffers"

    # accuracy: exact gradient = (4 dQ, 4 dK, 2 dV) of AttnLRP; reference = float32 SDPA
    def sdpa_run(dtype, backends):
        ys = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        with sdpa_kernel(backends):
            o = F.scaled_dot_product_attention(*ys, is_causal=causal)
        return (o.detach(),) + torch.autograd.grad(o, ys, g.to(dtype))

    ref = sdpa_run(torch.float32, [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    base = sdpa_run(torch.bfloat16, [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                                     SDPBackend.EFFICIENT_ATTENTION])
    ours = (out, 4 * dq.float(), 4 * dk.float(), 2 * dv.float())
    for name, a, bb, r in zip(("out", "4 dQ", "4 dK", "2 dV"), ours, base, ref):
        assert torch.isfinite(a).all(), f"{name}: non-finite"
        e_ours, e_sdpa = rel_fro(a, r), rel_fro(bb, r)
        print(f"{name}: lrp bf16 {e_ours:.2e}, SDPA bf16 {e_sdpa:.2e} (vs float32 SDPA)")
        assert e_ours <= max(2 * e_sdpa, 1e-2), f"{name}: {e_ours:.2e} vs SDPA bf16 {e_sdpa:.2e}"
