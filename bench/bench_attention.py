#!/usr/bin/env python
"""`lrp_attention` (AttnLRP, Triton) against torch SDPA (flash, cuDNN), eager attention and the PyTorch
LRP path: forward, backward and forward+backward time, TFLOP/s and peak memory (bf16).

Methods: lrp_triton = lrp_attention(mode="attnlrp", backend="triton"); sdpa_flash / sdpa_cudnn =
F.scaled_dot_product_attention under sdpa_kernel(FLASH_ATTENTION / CUDNN_ATTENTION) (GQA: enable_gqa
where the backend takes it, else K/V repeated; `note` says which); eager = matmul + float32 softmax +
matmul; lrp_torch = backend="torch" (N <= --torch-max-n). Cases: see make_cases.

  python bench/bench_attention.py [--quick] [--max-n N] [--out DIR]
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402

SCRIPT = "bench_attention"
BUDGETS = (330.0, 150.0)
CONVENTIONS = {
    "flops": "forward 4*B*H*N*M*D, halved when causal; backward 2.5x forward (FlashAttention convention, "
             "recomputation not counted); forward+backward 3.5x; the same count for every method",
    "time": "median of CUDA-event timings of single calls, L2 flushed before each, after a first call (compile, "
            "autotune); bwd = torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True) on a saved forward",
    "memory": "peak allocated during the timed calls above what was allocated before (q, k, v, grad_out and, for "
              "bwd, the saved forward not counted)",
    "ratios": "lrp_triton / sdpa_best in the same run; sdpa_best = faster of sdpa_flash, sdpa_cudnn by fwdbwd time",
    "softcap": "SDPA has no soft-capping: in softcap cases its rows are the same shape without softcap",
}


def make_cases(args):
    """Priority order: everything up to 16k, then 32k, then 64k (a budget cut drops the largest only).
    B = max(1, tokens // N); H * D = 2048."""
    def case(kind, n, d, causal, h=None, hkv=None, softcap=None):
        h = h or 2048 // d
        methods = list(METHODS) if n <= args.torch_max_n else [m for m in METHODS if m != "lrp_torch"]
        return dict(label=f"{kind}/d{d}/{'causal' if causal else 'full'}/N={n}", case=kind, B=max(1, args.tokens // n),
                    H=h, Hkv=hkv or h, N=n, D=d, causal=causal, softcap=softcap, methods=methods)

    if args.quick:
        cases = [case("mha", 1024, 128, True), case("mha", 4096, 128, True), case("mha", 4096, 128, False),
                 case("gqa", 4096, 128, True, h=32, hkv=8), case("softcap", 4096, 128, True, softcap=50.0)]
    else:
        cases = []
        for phase, ns in enumerate(([1 << p for p in range(10, 15)], [32768], [65536])):
            cases += [case("mha", n, d, c) for d, c in ((128, True), (128, False), (64, True), (64, False)) for n in ns]
            if phase == 0:
                cases += [case("gqa", n, 128, True, h=32, hkv=8) for n in (4096, 16384)]
                cases += [case("softcap", n, 128, True, softcap=50.0) for n in (4096, 16384)]
    return [c for c in cases if c["N"] <= args.max_n]


_INPUTS = {}


def inputs(c):
    """q, k, v (requiring grad), grad_out of the case, kept while its methods run (not counted as memory)."""
    if _INPUTS.get("label") != c["label"]:
        _INPUTS.clear()
        torch.manual_seed(0)
        ts = [torch.randn(c["B"], h, c["N"], c["D"], device="cuda", dtype=torch.bfloat16, requires_grad=i < 3)
              for i, h in enumerate((c["H"], c["Hkv"], c["Hkv"], c["H"]))]
        _INPUTS.update(label=c["label"], xs=ts)
    return _INPUTS["xs"]


def job(c, fn, note=None):
    q, k, v, g = inputs(c)
    saved = {}
    flops = 4.0 * c["B"] * c["H"] * c["N"] * c["N"] * c["D"] / (2 if c["causal"] else 1)

    def after(row):
        saved.clear()
        for phase, mult in (("fwd", 1.0), ("bwd", 2.5), ("fwdbwd", 3.5)):
            row[f"{phase}_tflops"] = mult * flops / (row[f"{phase}_ms"] * 1e-3) / 1e12
        if row["method"] == "lrp_triton":
            row["autotune"] = common.autotune_choices("attention")

    return dict(note=note, after=after, phases={
        "fwd": lambda: fn(q, k, v),
        "bwd": (lambda: saved.update(out=fn(q, k, v)),
                lambda: torch.autograd.grad(saved["out"], (q, k, v), g, retain_graph=True)),
        "fwdbwd": lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), g)})


def lrp(backend):
    from lrp_triton.ops import lrp_attention

    return lambda c: job(c, lambda q, k, v: lrp_attention(q, k, v, causal=c["causal"], softcap=c["softcap"],
                                                          mode="attnlrp", backend=backend))


def sdpa(backend_name):
    """enable_gqa, else repeated K/V, whichever the backend runs (forward and backward); else 'unsupported'."""
    def build(c):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend, g = getattr(SDPBackend, backend_name), c["H"] // c["Hkv"]
        errors = []
        for variant in (["plain"] if g == 1 else ["enable_gqa", "repeat_kv"]):
            def f(q, k, v, variant=variant):
                with sdpa_kernel(backend):
                    if variant == "repeat_kv":
                        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
                    return F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"],
                                                          enable_gqa=variant == "enable_gqa")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    q, k, v, _ = inputs(c)
                    out = f(q, k, v)
                    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
                del out
                note = " ".join(x for x in (variant, "no softcap" if c["softcap"] else "") if x)
                return job(c, f, note)
            except RuntimeError as e:
                if common.is_oom(e):
                    raise
                errors.append(f"{variant}: {str(e).splitlines()[0][:160]}")
        raise RuntimeError("unsupported: " + " | ".join(errors))
    return build


def eager(c):
    g, scale = c["H"] // c["Hkv"], c["D"] ** -0.5
    mask = torch.ones(c["N"], c["N"], dtype=torch.bool, device="cuda").triu_(1) if c["causal"] else None

    def f(q, k, v):
        if g > 1:
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        s = torch.matmul(q, k.transpose(-1, -2)) * scale
        if c["softcap"] is not None:
            s = c["softcap"] * torch.tanh(s / c["softcap"])
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        return torch.matmul(torch.softmax(s.float(), dim=-1).to(q.dtype), v)
    return job(c, f, ", ".join(x for x in ("mask precomputed, not counted" if c["causal"] else "",
                                           "repeat_kv" if g > 1 else "") if x) or None)


METHODS = {"lrp_triton": lrp("triton"), "sdpa_flash": sdpa("FLASH_ATTENTION"), "sdpa_cudnn": sdpa("CUDNN_ATTENTION"),
           "eager": eager, "lrp_torch": lrp("torch")}
KEYS = ("case", "B", "H", "Hkv", "N", "D", "causal", "softcap")


def ratios(run):
    out = []
    for label in dict.fromkeys(r["label"] for r in run.rows):
        lrp_row = run.ok("lrp_triton", label=label)
        sdpas = [r for r in (run.ok(m, label=label) for m in ("sdpa_flash", "sdpa_cudnn")) if r]
        if lrp_row is None or not sdpas:
            continue
        best, eager_row = min(sdpas, key=lambda r: r["fwdbwd_ms"]), run.ok("eager", label=label)
        row = {k: lrp_row[k] for k in KEYS}
        row["sdpa_best"] = best["method"]
        for p in ("fwd", "bwd", "fwdbwd"):
            row[f"time_{p}_ratio"] = lrp_row[f"{p}_ms"] / best[f"{p}_ms"]
        for p in ("fwd", "fwdbwd"):
            a, b = lrp_row.get(f"{p}_peak_MiB"), best.get(f"{p}_peak_MiB")
            row[f"mem_{p}_ratio"] = a / b if a is not None and b else None
        row["time_fwdbwd_vs_eager"] = eager_row and lrp_row["fwdbwd_ms"] / eager_row["fwdbwd_ms"]
        out.append(row)
    corr, pc = run.extra.get("correctness") or {}, run.extra.get("precompile")
    return [("ratios", "lrp_triton / SDPA (same run; < 1: lrp is faster / smaller)", out, None),
            (None, f"Correctness spot check ({corr.get('shape')}; pass={corr.get('passed')})", corr.get("rows", []), None),
            (None, "Triton precompile", [{k: v for k, v in pc.items() if k != "errors"}] if pc else [], None)]


def correctness_check(b=2, h=16, n=4096, d=128, causal=True):
    """bf16 lrp_attention output and its AttnLRP gradients undone to exact ones (4 dQ, 4 dK, 2 dV) against float32
    SDPA on the same inputs, next to bf16 SDPA's own error; pass when lrp's error <= max(2 x SDPA's, 1e-2)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lrp_triton.ops import lrp_attention

    torch.manual_seed(1)
    q, k, v, g = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))

    def run(fn, dtype):
        xs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*xs)
        return [out.detach().float()] + [t.float() for t in torch.autograd.grad(out, xs, g.to(dtype))]

    def sdpa_(*xs):
        return F.scaled_dot_product_attention(*xs, is_causal=causal)

    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        ref = run(sdpa_, torch.float32)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        base = run(sdpa_, torch.bfloat16)
    lrp_out = run(lambda *xs: lrp_attention(*xs, causal=causal, mode="attnlrp", backend="triton"), torch.bfloat16)
    lrp_out = [lrp_out[0], 4 * lrp_out[1], 4 * lrp_out[2], 2 * lrp_out[3]]
    rows, ok = [], True
    for i, name in enumerate(("out", "dq_x4", "dk_x4", "dv_x2")):
        e_lrp = ((lrp_out[i] - ref[i]).norm() / ref[i].norm()).item()
        e_sdpa = ((base[i] - ref[i]).norm() / ref[i].norm()).item()
        finite = bool(torch.isfinite(lrp_out[i]).all())
        rows.append(dict(tensor=name, lrp_vs_ref=e_lrp, sdpa_bf16_vs_ref=e_sdpa, finite=finite,
                         lrp_max_abs_vs_sdpa_bf16=(lrp_out[i] - base[i]).abs().max().item()))
        ok &= finite and e_lrp <= max(2.0 * e_sdpa, 1e-2)
    return dict(shape=dict(B=b, H=h, N=n, D=d, causal=causal, dtype="bfloat16"), rows=rows, passed=bool(ok),
                reference="fp32 SDPA (efficient/math) on the same bf16-rounded inputs; relative Frobenius errors")


def _precompile_task(task):
    """Worker: one lrp_attention forward+backward at N = 1024 (the same Triton specialisation as every
    power-of-two N of the sweep) with every autotuner pinned to config `index`."""
    (h, hkv, d, causal, softcap), index = task
    t0, error = time.perf_counter(), None
    try:
        common.ensure_lrp_triton()
        from lrp_triton.ops import lrp_attention

        common.pin_autotuners(index, BLOCK_D=max(16, 1 << (d - 1).bit_length()))
        xs = [torch.randn(1, hh, 1024, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
              for hh in (h, hkv, hkv)]
        out = lrp_attention(*xs, causal=causal, softcap=softcap, mode="attnlrp", backend="triton")
        torch.autograd.grad(out, xs, torch.randn_like(out))
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - e.g. a config whose tiles do not fit: the autotuner skips it
        error = common.short_error(e)
    return task, time.perf_counter() - t0, error


def main(argv=None):
    p = common.parser("Benchmark lrp_attention (AttnLRP, Triton) against torch SDPA (flash, cuDNN), eager attention "
                      "and the PyTorch LRP path: time, TFLOP/s, peak memory.", BUDGETS, precompile=True)
    p.add_argument("--max-n", type=int, default=65536, help="largest sequence length (default 65536)")
    p.add_argument("--tokens", type=int, default=16384, help="B = max(1, tokens // N) (default 16384)")
    p.add_argument("--torch-max-n", type=int, default=2048, help="largest N of lrp_torch (default 2048)")
    p.add_argument("--no-check", action="store_true", help="skip the correctness spot check")
    args = p.parse_args(argv)
    common.require_cuda(SCRIPT)
    common.ensure_lrp_triton()
    budget = common.budget_of(args, BUDGETS)
    run = common.Runner(SCRIPT, "lrp_attention benchmark", args, budget_s=budget, out=args.out,
                        info=dict(conventions=CONVENTIONS, dtype="bfloat16", mode="attnlrp"), tables=ratios,
                        columns=["label", "B", "method", "status", "fwd_ms", "bwd_ms", "fwdbwd_ms", "fwd_tflops",
                                 "bwd_tflops", "fwdbwd_tflops", "fwd_peak_MiB", "fwdbwd_peak_MiB", "note"])
    cases = make_cases(args)
    print(f"{SCRIPT}: {run.env.get('gpu')} | {len(cases)} cases, budget {budget:.0f} s -> {run.paths[0]}", flush=True)
    if not args.no_precompile and args.jobs > 1:
        combos = sorted({(c["H"], c["Hkv"], c["D"], c["causal"], c["softcap"]) for c in cases}
                        | ({(16, 16, 128, True, None)} if not args.no_check else set()), key=str)
        n_cfg = max(len(t.configs) for t in common.autotuners("attention"))
        run.extra["precompile"] = common.precompile(_precompile_task, [(c, i) for c in combos for i in range(n_cfg)],
                                                    args.jobs, max(30.0, budget / 2))
    if not args.no_check:
        try:
            run.extra["correctness"] = correctness_check()
        except Exception as e:  # noqa: BLE001
            run.extra["correctness"] = dict(passed=False, error=common.short_error(e))
        common.free_cuda()
        print(f"correctness: {run.extra['correctness']}", flush=True)
    for c in cases:  # the big shapes take fewer repeats
        big = c["N"] >= 32768
        run.target_ms, run.max_repeats = (60.0 if args.quick else 150.0 if big else 300.0), (5 if big else 25)
        run.run([c], METHODS)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
