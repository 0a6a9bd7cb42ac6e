#!/usr/bin/env python
"""Benchmark `lrp_attention` (AttnLRP, Triton) against torch SDPA, eager attention and the
PyTorch LRP path: forward, backward and forward+backward time, TFLOP/s and peak memory.

Methods (bf16 throughout):
  lrp_triton   lrp_attention(mode="attnlrp", backend="triton")
  sdpa_flash   F.scaled_dot_product_attention under sdpa_kernel(FLASH_ATTENTION)
  sdpa_cudnn   F.scaled_dot_product_attention under sdpa_kernel(CUDNN_ATTENTION)
               (GQA: enable_gqa=True where the backend takes it, else K/V repeated; the JSON says which)
  eager        matmul + softmax(float32) + matmul in PyTorch; "oom" where it does not fit
  lrp_torch    lrp_attention(mode="attnlrp", backend="torch"), small N only

FLOP convention (stated again in the JSON): forward 4*B*H*N*M*D, halved when causal; backward
2.5x forward (the FlashAttention convention: 5 matmuls instead of 2, recomputation not counted);
forward+backward 3.5x forward. The same count is used for every method, so TFLOP/s compare time.

Run on a CUDA machine:  python bench/bench_attention.py [--quick] [--max-n N] [--out DIR]
Without a GPU it prints "needs a CUDA GPU" and exits with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common` beside this file

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import (cuda_time_ms, env_record, finish_run, free_cuda, is_oom, markdown_table,  # noqa: E402
                    peak_memory_bytes, require_cuda, result_paths, run_in_processes, write_json,
                    write_markdown)

SCRIPT = "bench_attention"
DEVICE = "cuda"
MiB = 2 ** 20

CONVENTIONS = {
    "flops_forward": "4*B*H*N*M*D, halved when causal (N == M here)",
    "flops_backward": "2.5 x forward (FlashAttention convention; recomputation not counted)",
    "flops_fwd_bwd": "3.5 x forward",
    "flops_note": "same useful-FLOP count for every method (eager computes the full N x N even when causal)",
    "time": "median of CUDA-event timings of single calls, L2 flushed (4x L2 buffer overwritten) before "
            "each repeat, after warm-up (Triton compile and autotune excluded)",
    "backward_time": "torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True) on a saved forward",
    "memory": "peak torch.cuda.max_memory_allocated during one forward+backward (resp. forward) minus "
              "memory allocated before it; q, k, v, grad_out are not counted, outputs and grads are",
    "ratios": "lrp_triton / sdpa_best measured in the same run; sdpa_best = faster of sdpa_flash and "
              "sdpa_cudnn by forward+backward time (its memory is used for the memory ratio)",
    "softcap": "SDPA has no logit soft-capping: in softcap cases the SDPA rows are the same shape without "
               "softcap (eager and lrp do apply it)",
}


# --------------------------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------------------------- #
def make_cases(quick: bool, max_n: int, tokens: int):
    """Cases in priority order: everything up to 16k first, then 32k, then 64k.

    B = max(1, tokens // N) keeps B*N (total tokens) constant at small N so the GPU is filled;
    H * D = 2048 (H=16 at D=128, H=32 at D=64).
    """
    def case(name, n, d, causal, h=None, hkv=None, softcap=None):
        h = h or (2048 // d)
        return dict(case=name, B=max(1, tokens // n), H=h, Hkv=hkv or h, N=n, M=n, D=d,
                    causal=causal, softcap=softcap, series=f"{name}/d{d}/{'causal' if causal else 'full'}")

    if quick:
        cases = [case("mha", 1024, 128, True), case("mha", 4096, 128, True),
                 case("mha", 4096, 128, False), case("gqa", 4096, 128, True, h=32, hkv=8),
                 case("softcap", 4096, 128, True, softcap=50.0)]
        return [c for c in cases if c["N"] <= max_n]
    ns = [1 << p for p in range(10, 17)]  # 1k .. 64k
    series = [(128, True), (128, False), (64, True), (64, False)]
    phases = [[n for n in ns if n <= 16384], [32768], [65536]]
    cases = []
    for phase_i, phase in enumerate(phases):
        for d, causal in series:
            cases += [case("mha", n, d, causal) for n in phase]
        if phase_i == 0:
            cases += [case("gqa", n, 128, True, h=32, hkv=8) for n in (4096, 16384)]
            cases += [case("softcap", n, 128, True, softcap=50.0) for n in (4096, 16384)]
    return [c for c in cases if c["N"] <= max_n]


def flops_forward(c) -> float:
    f = 4.0 * c["B"] * c["H"] * c["N"] * c["M"] * c["D"]
    return f / 2 if c["causal"] else f


# --------------------------------------------------------------------------------------------- #
# Methods: each returns fn(q, k, v) -> out, or raises; `note` says what was used
# --------------------------------------------------------------------------------------------- #
def lrp_fn(c, backend):
    from lrp_triton.ops import lrp_attention

    def f(q, k, v):
        return lrp_attention(q, k, v, causal=c["causal"], softcap=c["softcap"], mode="attnlrp",
                             backend=backend)
    return f


def sdpa_fn(c, sdp_backend, q, k, v):
    """Probe enable_gqa, then repeated K/V; returns (fn, note) or raises RuntimeError."""
    from torch.nn.attention import sdpa_kernel

    g = c["H"] // c["Hkv"]
    errors = []
    variants = ["plain"] if g == 1 else ["enable_gqa", "repeat_kv"]
    for variant in variants:
        def f(q, k, v, variant=variant):
            with sdpa_kernel(sdp_backend):
                if variant == "repeat_kv":
                    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
                return F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"],
                                                      enable_gqa=(variant == "enable_gqa"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = f(q, k, v)
                torch.autograd.grad(out, (q, k, v), torch.ones_like(out))  # the backward must exist too
            torch.cuda.synchronize()
            return f, variant
        except RuntimeError as e:
            if is_oom(e):
                raise
            errors.append(f"{variant}: {str(e).splitlines()[0][:160]}")
    raise RuntimeError("unsupported: " + " | ".join(errors))


def eager_fn(c):
    g = c["H"] // c["Hkv"]
    scale = c["D"] ** -0.5
    mask = None
    if c["causal"]:
        mask = torch.ones(c["N"], c["M"], dtype=torch.bool, device=DEVICE).triu_(1 + c["M"] - c["N"])

    def f(q, k, v):
        if g > 1:
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        s = torch.matmul(q, k.transpose(-1, -2)) * scale
        if c["softcap"] is not None:
            s = c["softcap"] * torch.tanh(s / c["softcap"])
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        p = torch.softmax(s.float(), dim=-1).to(q.dtype)
        return torch.matmul(p, v)
    return f


# --------------------------------------------------------------------------------------------- #
# One (case, method) measurement
# --------------------------------------------------------------------------------------------- #
def measure(fn, q, k, v, g, *, target_ms, max_repeats):
    """fwd / bwd / fwd+bwd times and peak memory of fn. Raises on OOM or other errors."""
    inputs = (q, k, v)
    t0 = time.perf_counter()
    out = fn(q, k, v)  # first call: compile + autotune (forward), then backward
    torch.autograd.grad(out, inputs, g)
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - t0
    del out

    def fwd():
        return fn(q, k, v)

    def fwdbwd():
        return torch.autograd.grad(fn(q, k, v), inputs, g)

    kw = dict(warmup=1, repeats=None, target_ms=target_ms, max_repeats=max_repeats)
    r_fwd = cuda_time_ms(fwd, **kw)
    saved = fn(q, k, v)
    r_bwd = cuda_time_ms(lambda: torch.autograd.grad(saved, inputs, g, retain_graph=True), **kw)
    del saved
    r_fb = cuda_time_ms(fwdbwd, **kw)
    free_cuda()
    mem_fwd, _ = peak_memory_bytes(fwd)
    free_cuda()
    mem_fb, _ = peak_memory_bytes(fwdbwd)
    return dict(fwd_ms=r_fwd["median_ms"], bwd_ms=r_bwd["median_ms"], fwdbwd_ms=r_fb["median_ms"],
                fwdbwd_min_ms=r_fb["min_ms"], fwdbwd_max_ms=r_fb["max_ms"],
                repeats=[r_fwd["repeats"], r_bwd["repeats"], r_fb["repeats"]],
                mem_fwd_MiB=mem_fwd / MiB, mem_fwdbwd_MiB=mem_fb / MiB, first_call_s=first_call_s)


def autotune_choice():
    """The configs the Triton autotuner picked last (the shape just measured)."""
    try:
        from lrp_triton.kernels import attention as ka
    except Exception:
        return None
    out = {}
    for name in ("_attn_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"):
        cfg = getattr(getattr(ka, name, None), "best_config", None)
        if cfg is not None:
            out[name] = str(cfg)
    return out or None


def run_case(c, args, torch_max_n):
    """All methods on one case; returns result rows."""
    rows = []
    fl = flops_forward(c)
    torch.manual_seed(0)
    q = torch.randn(c["B"], c["H"], c["N"], c["D"], device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(c["B"], c["Hkv"], c["M"], c["D"], device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(c["B"], c["Hkv"], c["M"], c["D"], device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(c["B"], c["H"], c["N"], c["D"], device=DEVICE, dtype=torch.bfloat16)
    big = c["N"] >= 32768
    target_ms = 60.0 if args.quick else (150.0 if big else 300.0)
    max_repeats = 5 if big else 25

    from torch.nn.attention import SDPBackend
    eager_note = ", ".join(x for x in ("mask precomputed, not counted" if c["causal"] else "",
                                       "repeat_kv" if c["H"] != c["Hkv"] else "") if x) or None
    methods = [("lrp_triton", lambda: (lrp_fn(c, "triton"), None)),
               ("sdpa_flash", lambda: sdpa_fn(c, SDPBackend.FLASH_ATTENTION, q, k, v)),
               ("sdpa_cudnn", lambda: sdpa_fn(c, SDPBackend.CUDNN_ATTENTION, q, k, v)),
               ("eager", lambda: (eager_fn(c), eager_note))]
    if c["N"] <= torch_max_n:
        methods.append(("lrp_torch", lambda: (lrp_fn(c, "torch"), None)))

    for name, build in methods:
        row = {k_: c[k_] for k_ in ("case", "B", "H", "Hkv", "N", "D", "causal", "softcap")}
        row["method"] = name
        failure = None
        try:
            fn, note = build()
            row["note"] = note
            if name.startswith("sdpa") and c["softcap"] is not None:
                row["note"] = ((note or "") + " no softcap").strip()
            res = measure(fn, q, k, v, g, target_ms=target_ms, max_repeats=max_repeats)
            row.update(res)
            row["status"] = "ok"
            row["fwd_tflops"] = fl / (res["fwd_ms"] * 1e-3) / 1e12
            row["bwd_tflops"] = 2.5 * fl / (res["bwd_ms"] * 1e-3) / 1e12
            row["fwdbwd_tflops"] = 3.5 * fl / (res["fwdbwd_ms"] * 1e-3) / 1e12
            if name == "lrp_triton":
                row["autotune"] = autotune_choice()
        except Exception as e:  # noqa: BLE001 - record and go on
            failure = "oom" if is_oom(e) else f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if failure is not None:
            row["status"] = failure
            fn = None
            free_cuda()  # after the except block: the traceback no longer pins tensors
        rows.append(row)
        fn = None
        free_cuda()
    del q, k, v, g
    free_cuda()
    return rows


def ratio_row(rows):
    """lrp_triton / best SDPA for one case."""
    by = {r["method"]: r for r in rows if r.get("status") == "ok"}
    lrp = by.get("lrp_triton")
    sdpas = [by[m] for m in ("sdpa_flash", "sdpa_cudnn") if m in by]
    if lrp is None or not sdpas:
        return None
    best = min(sdpas, key=lambda r: r["fwdbwd_ms"])
    out = {k_: lrp[k_] for k_ in ("case", "B", "H", "Hkv", "N", "D", "causal", "softcap")}
    out["sdpa_best"] = best["method"]
    for t in ("fwd_ms", "bwd_ms", "fwdbwd_ms"):
        out[f"time_{t[:-3]}_ratio"] = lrp[t] / best[t]
    out["mem_fwdbwd_ratio"] = lrp["mem_fwdbwd_MiB"] / best["mem_fwdbwd_MiB"] if best["mem_fwdbwd_MiB"] > 0 else None
    out["mem_fwd_ratio"] = lrp["mem_fwd_MiB"] / best["mem_fwd_MiB"] if best["mem_fwd_MiB"] > 0 else None
    if "eager" in by:
        out["time_fwdbwd_vs_eager"] = lrp["fwdbwd_ms"] / by["eager"]["fwdbwd_ms"]
    return out


# --------------------------------------------------------------------------------------------- #
# Parallel pre-compilation
# --------------------------------------------------------------------------------------------- #
_KERNELS = ("_attn_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq")
PRECOMPILE_N = 1024  # a power of two >= 16, like every N of the sweep: the same Triton specialisation


def _precompile_task(task):
    """Worker: compile config `index` of each attention kernel for one flag combination by running
    lrp_attention once with the autotuners pinned to it (N = 1024: the same integer specialisation
    as every power-of-two N of the sweep). Triton's on-disk cache keeps the binaries."""
    (h, hkv, d, causal, softcap), index, device, n = task
    t0 = time.perf_counter()
    import torch

    from lrp_triton.kernels import attention as ka
    from lrp_triton.ops import lrp_attention

    block_d = max(16, 1 << (d - 1).bit_length())
    prune = getattr(ka, "_prune_for_head_dim", None)
    saved = {}
    error = None
    try:
        for j, name in enumerate(_KERNELS):
            tuner = getattr(ka, name)
            configs = list(tuner.configs)
            valid = prune(configs, {}, BLOCK_D=block_d) if prune is not None else configs
            saved[name] = tuner.configs
            tuner.configs = [valid[index % len(valid)]]
        xs = [torch.randn(1, hh, n, d, device=device, dtype=torch.bfloat16, requires_grad=True)
              for hh in (h, hkv, hkv)]
        out = lrp_attention(*xs, causal=causal, softcap=softcap, mode="attnlrp", backend="triton")
        torch.autograd.grad(out, xs, torch.randn_like(out))
        if device != "cpu":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - e.g. a config whose tiles do not fit: the autotuner skips it
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
    finally:
        for name, configs in saved.items():
            getattr(ka, name).configs = configs
    return task, time.perf_counter() - t0, error


def precompile(cases, jobs, timeout_s):
    """Compile every config of every flag combination of `cases` in `jobs` processes at once
    (the autotuner would compile them one after another). Returns a summary for the JSON."""
    combos = sorted({(c["H"], c["Hkv"], c["D"], c["causal"], c["softcap"]) for c in cases},
                    key=lambda x: (x[0], x[1], x[2], x[3], x[4] or 0.0))
    try:
        from lrp_triton.kernels import attention as ka
        n_cfg = max(len(getattr(ka, name).configs) for name in _KERNELS)
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    tasks = [(combo, i, DEVICE, PRECOMPILE_N) for combo in combos for i in range(n_cfg)]
    return {"combos": [list(c) for c in combos], **run_in_processes(_precompile_task, tasks, jobs, timeout_s)}


# --------------------------------------------------------------------------------------------- #
# Correctness spot check
# --------------------------------------------------------------------------------------------- #
def correctness_check(b=2, h=16, n=4096, d=128, causal=True):
    """bf16 lrp_attention vs bf16 SDPA, both against an fp32 SDPA reference (outputs and, for
    AttnLRP, 4*dQ, 4*dK, 2*dV against the exact gradient)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lrp_triton.ops import lrp_attention

    torch.manual_seed(1)
    q, k, v, g = (torch.randn(b, h, n, d, device=DEVICE, dtype=torch.bfloat16) for _ in range(4))

    def run(fn, dtype):
        xs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*xs)
        grads = torch.autograd.grad(out, xs, g.to(dtype))
        return [out.detach().float()] + [t.float() for t in grads]

    def sdpa(*xs):
        return F.scaled_dot_product_attention(*xs, is_causal=causal)

    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        ref = run(sdpa, torch.float32)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        base = run(sdpa, torch.bfloat16)
    lrp = run(lambda *xs: lrp_attention(*xs, causal=causal, mode="attnlrp", backend="triton"), torch.bfloat16)
    lrp = [lrp[0], 4 * lrp[1], 4 * lrp[2], 2 * lrp[3]]  # AttnLRP factors undone: exact gradient

    def rel(a, e):
        return ((a - e).norm() / e.norm()).item()

    res = {"shape": dict(B=b, H=h, N=n, D=d, causal=causal, dtype="bfloat16"),
           "reference": "fp32 SDPA (efficient/math backend) on the same bf16-rounded inputs",
           "metric": "relative Frobenius error ||x - ref|| / ||ref||"}
    ok = True
    for i, name in enumerate(("out", "dq_x4", "dk_x4", "dv_x2")):
        e_lrp, e_sdpa = rel(lrp[i], ref[i]), rel(base[i], ref[i])
        res[name] = {"lrp_vs_ref": e_lrp, "sdpa_bf16_vs_ref": e_sdpa,
                     "lrp_max_abs_vs_sdpa_bf16": (lrp[i] - base[i]).abs().max().item(),
                     "finite": bool(torch.isfinite(lrp[i]).all())}
        ok &= res[name]["finite"] and e_lrp <= max(2.0 * e_sdpa, 1e-2)
    res["pass"] = bool(ok)
    res["criterion"] = "finite and lrp_vs_ref <= max(2 * sdpa_bf16_vs_ref, 1e-2) for each tensor"
    del q, k, v, g, ref, base, lrp
    free_cuda()
    return res


# --------------------------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------------------------- #
RESULT_COLS = ["case", "B", "H", "Hkv", "N", "D", "causal", "softcap", "method", "status", "fwd_ms", "bwd_ms",
               "fwdbwd_ms", "fwd_tflops", "bwd_tflops", "fwdbwd_tflops", "mem_fwd_MiB", "mem_fwdbwd_MiB", "note"]
RATIO_COLS = ["case", "B", "H", "Hkv", "N", "D", "causal", "sdpa_best", "time_fwd_ratio", "time_bwd_ratio",
              "time_fwdbwd_ratio", "mem_fwd_ratio", "mem_fwdbwd_ratio", "time_fwdbwd_vs_eager"]


def write_all(paths, record):
    json_path, md_path = paths
    write_json(json_path, record)
    corr = record.get("correctness") or {}
    corr_rows = [dict(tensor=k_, **v_) for k_, v_ in corr.items() if isinstance(v_, dict) and "lrp_vs_ref" in v_]
    sections = [
        ("lrp_triton / SDPA (same run; < 1 means lrp is faster / smaller)",
         markdown_table(record["ratios"], RATIO_COLS)),
        ("All measurements", markdown_table(record["results"], RESULT_COLS)),
        (f"Correctness spot check ({corr.get('shape')}; pass={corr.get('pass')})", markdown_table(corr_rows)),
    ]
    if record.get("skipped"):
        sections.append(("Skipped", markdown_table(record["skipped"])))
    notes = [f"{k_}: {v_}" for k_, v_ in CONVENTIONS.items()]
    pc = record.get("precompile")
    if pc:
        notes.append(f"precompile: {pc.get('done')}/{pc.get('tasks')} Triton config tasks in "
                     f"{pc.get('seconds', 0):.0f} s with {pc.get('jobs')} processes; "
                     f"errors: {len(pc.get('errors', []))}")
    notes.append(f"elapsed: {record.get('elapsed_s', 0):.0f} s; complete: {record.get('complete')}")
    write_markdown(md_path, "lrp_attention benchmark", record["env"], sections, notes)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark lrp_attention (AttnLRP, Triton) against torch SDPA (flash, cuDNN), eager "
                    "attention and the PyTorch LRP path: time, TFLOP/s, peak memory. Needs a CUDA GPU.")
    p.add_argument("--quick", action="store_true", help="a few shapes only (smoke run, ~2 min)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                   help="output folder for JSON and markdown (default: bench/results)")
    p.add_argument("--max-n", type=int, default=65536, help="largest sequence length (default 65536)")
    p.add_argument("--tokens", type=int, default=16384,
                   help="B = max(1, tokens // N): total tokens per call at small N (default 16384)")
    p.add_argument("--torch-max-n", type=int, default=2048,
                   help="largest N for the pure-PyTorch LRP path (default 2048)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new shapes when one would end after this many seconds "
                        "(default 330 full, 150 quick)")
    p.add_argument("--no-check", action="store_true", help="skip the correctness spot check")
    p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 4),
                   help="processes that pre-compile the Triton configs in parallel (default: CPUs, at most 16)")
    p.add_argument("--no-precompile", action="store_true",
                   help="let the autotuner compile each config when first used (one at a time)")
    args = p.parse_args(argv)

    require_cuda(SCRIPT)
    budget = args.budget_s if args.budget_s is not None else (150.0 if args.quick else 330.0)
    start = time.perf_counter()
    env = env_record()
    paths = result_paths(SCRIPT, args.out)
    cases = make_cases(args.quick, args.max_n, args.tokens)
    record = {"script": SCRIPT, "env": env, "args": vars(args), "budget_s": budget,
              "conventions": CONVENTIONS, "dtype": "bfloat16", "mode": "attnlrp",
              "correctness": None, "results": [], "ratios": [], "skipped": [], "complete": False}
    print(f"{SCRIPT}: {env.get('gpu')} | torch {env['torch']} | triton {env['triton']} | "
          f"{len(cases)} cases, budget {budget:.0f} s -> {paths[0]}", flush=True)

    if not args.no_precompile and args.jobs > 1:
        check_case = [dict(H=16, Hkv=16, D=128, causal=True, softcap=None)] if not args.no_check else []
        record["precompile"] = precompile(cases + check_case, args.jobs, timeout_s=max(30.0, budget / 2))
        pc = record["precompile"]
        print(f"precompile: {pc.get('done')}/{pc.get('tasks')} tasks in {pc.get('seconds', 0):.0f} s "
              f"with {pc.get('jobs')} processes; {len(pc.get('errors', []))} errors", flush=True)
        for err in pc.get("errors", [])[:10]:
            print(f"  {err}", flush=True)
        write_all(paths, record)

    if not args.no_check:
        try:
            record["correctness"] = correctness_check()
        except Exception as e:  # noqa: BLE001
            record["correctness"] = {"pass": False, "error": f"{type(e).__name__}: {e}"[:500]}
        free_cuda()
        print(f"correctness: {record['correctness']}", flush=True)
        write_all(paths, record)

    last_cost = {}  # series -> (seconds, flops) of its last case, to predict the next one
    for c in cases:
        elapsed = time.perf_counter() - start
        fl = flops_forward(c)
        predicted = 0.0
        if c["series"] in last_cost:
            secs, prev_fl = last_cost[c["series"]]
            predicted = secs * fl / prev_fl
        if elapsed + predicted > budget:
            record["skipped"].append({k_: c[k_] for k_ in ("case", "N", "D", "causal")}
                                     | {"reason": f"time budget ({elapsed:.0f} s + predicted {predicted:.0f} s "
                                                  f"> {budget:.0f} s)"})
            print(f"skip {c['series']} N={c['N']}: budget", flush=True)
            continue
        t0 = time.perf_counter()
        rows = run_case(c, args, args.torch_max_n)
        # cost for predicting the next shape of this series: without first calls (compilation);
        # the Triton autotuning inside lrp's first call scales with the shape, so it counts,
        # except in a series' first case where it is mostly compilation
        first_calls = sum(r.get("first_call_s", 0.0) for r in rows)
        tune = next((r.get("first_call_s", 0.0) for r in rows if r["method"] == "lrp_triton"), 0.0)
        cost = time.perf_counter() - t0 - first_calls + (tune if c["series"] in last_cost else 0.0)
        last_cost[c["series"]] = (max(cost, 0.0), fl)
        record["results"] += rows
        rr = ratio_row(rows)
        if rr:
            record["ratios"].append(rr)
        for r in rows:
            if r["status"] == "ok":
                print(f"{c['series']:>22} B={c['B']:<3} N={c['N']:<6} {r['method']:<11} "
                      f"fwd {r['fwd_ms']:8.3f} ms  bwd {r['bwd_ms']:8.3f} ms  f+b {r['fwdbwd_ms']:8.3f} ms "
                      f"({r['fwdbwd_tflops']:6.1f} TFLOP/s)  peak {r['mem_fwdbwd_MiB']:9.1f} MiB", flush=True)
            else:
                print(f"{c['series']:>22} B={c['B']:<3} N={c['N']:<6} {r['method']:<11} {r['status']}", flush=True)
        record["elapsed_s"] = time.perf_counter() - start
        write_all(paths, record)  # after every case: a killed run still leaves its numbers

    return finish_run(record, paths, start, write_all, RATIO_COLS)


if __name__ == "__main__":
    sys.exit(main())
