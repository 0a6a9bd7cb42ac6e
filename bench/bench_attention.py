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
DEV = dict(device="cuda", dtype=torch.bfloat16, precompile_n=1024, backend="triton")  # --cpu-smoke: cpu, float32,
# 32, torch (the Triton kernel of these cases is tested in tests/; the smoke runs it once, in the precompile task)
CONVENTIONS = {
    "flops": "forward 2*B*H*P*(D + D_v) (= 4*B*H*N*M*D when D_v = D), P the visible (query, key) pairs: N*M, N*M/2 "
             "when causal, N*w - w*(w-1)/2 with a causal window w; backward 2.5x forward (FlashAttention convention, "
             "recomputation not counted); forward+backward 3.5x; the same count for every method",
    "time": "median of CUDA-event timings of single calls, L2 flushed before each, after a first call (compile, "
            "autotune); bwd = torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True) on a saved forward",
    "memory": "peak allocated during the timed calls above what was allocated before (q, k, v, grad_out and, for "
              "bwd, the saved forward not counted)",
    "ratios": "lrp_triton / sdpa_best in the same run; sdpa_best = the fastest SDPA method of the case by fwdbwd time",
    "softcap": "SDPA has no soft-capping: in softcap cases its rows are the same shape without softcap",
    "mla": "DeepSeek-V3's multi-head latent attention shape: H 128, D_qk 192 (128 no-rope + 64 rope), D_v 128, causal, "
           "B 1; SDPA takes D_v != D_qk as it is (a backend that refuses it says so in its row), plus sdpa_efficient",
    "sink": "gpt-oss's attention: H 64, Hkv 8, D 64, sinks [H] (N(0, 4) logits), causal, full and sliding window 128 "
            "(its layers alternate); baselines: sdpa_sink = lrp_sdpa_attention(mode='gradient', sinks=...), the exact "
            "construction of lrp_triton's SDPA path (one extra key scored s_h through an extra coordinate, D + 1 = 65, "
            "an explicit mask; backend picked by torch, the note lists those that take it), and eager = HF's gpt-oss "
            "eager attention (sink logit concatenated to the scores, float32 softmax, sink column dropped)",
}
BASE = ("lrp_triton", "sdpa_flash", "sdpa_cudnn", "eager", "lrp_torch")
KIND_METHODS = {"mla": BASE[:3] + ("sdpa_efficient",) + BASE[3:], "sink": ("lrp_triton", "sdpa_sink", "eager",
                                                                           "lrp_torch")}
KINDS = ("mha", "gqa", "softcap", "mla", "sink")


def make_case(args, kind, n, d, causal, h=None, hkv=None, softcap=None, dv=None, window=None, b=None):
    h = h or 2048 // d
    methods = [m for m in KIND_METHODS.get(kind, BASE) if m != "lrp_torch" or n <= args.torch_max_n]
    shape = f"d{d}" + (f"-{dv}" if dv else "") + (f"/w{window}" if window else "")
    return dict(label=f"{kind}/{shape}/{'causal' if causal else 'full'}/N={n}", case=kind, N=n, D=d, Dv=dv or d,
                B=b or max(1, args.tokens // n), H=h, Hkv=hkv or h, causal=causal, softcap=softcap, window=window,
                sinks=kind == "sink", methods=methods)


def make_cases(args):
    """Priority order: everything up to 16k, then 32k, then 64k (a budget cut drops the largest only).
    B = max(1, tokens // N); H * D = 2048 (MLA: H 128, B 1; sinks: H 64 / 8)."""
    def case(*a, **kw):
        return make_case(args, *a, **kw)

    new = [case("mla", n, 192, True, h=128, dv=128, b=1) for n in (4096, 16384)] + [
        case("sink", n, 64, True, h=64, hkv=8, window=w) for n in (4096, 16384) for w in (None, 128)]
    if args.quick:
        cases = [case("mha", 1024, 128, True), case("mha", 4096, 128, True), case("mha", 4096, 128, False),
                 case("gqa", 4096, 128, True, h=32, hkv=8), case("softcap", 4096, 128, True, softcap=50.0)]
        cases += [c for c in new if c["N"] == 4096]
    else:
        cases = []
        for phase, ns in enumerate(([1 << p for p in range(10, 15)], [32768], [65536])):
            cases += [case("mha", n, d, c) for d, c in ((128, True), (128, False), (64, True), (64, False)) for n in ns]
            if phase == 0:
                cases += [case("gqa", n, 128, True, h=32, hkv=8) for n in (4096, 16384)]
                cases += [case("softcap", n, 128, True, softcap=50.0) for n in (4096, 16384)] + new
    return [c for c in cases if c["N"] <= args.max_n and c["case"] in args.cases]


_INPUTS = {}


def inputs(c):
    """q, k, v (requiring grad), grad_out and the sinks (or None) of the case, kept while its methods run (not counted
    as memory)."""
    if _INPUTS.get("label") != c["label"]:
        _INPUTS.clear()
        torch.manual_seed(0)
        ts = [torch.randn(c["B"], h, c["N"], d, device=DEV["device"], dtype=DEV["dtype"], requires_grad=i < 3)
              for i, (h, d) in enumerate(((c["H"], c["D"]), (c["Hkv"], c["D"]), (c["Hkv"], c["Dv"]), (c["H"], c["Dv"])))]
        sinks = 2.0 * torch.randn(c["H"], device=DEV["device"]) if c["sinks"] else None
        _INPUTS.update(label=c["label"], xs=ts + [sinks])
    return _INPUTS["xs"]


def pairs(c):
    n, w = c["N"], c["window"]
    return n * w - w * (w - 1) / 2 if w else n * n / (2 if c["causal"] else 1)


def job(c, fn, note=None):
    q, k, v, g, _ = inputs(c)
    saved = {}
    flops = 2.0 * c["B"] * c["H"] * pairs(c) * (c["D"] + c["Dv"])

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


def lrp(backend=None):  # None: DEV["backend"]
    from lrp_triton.ops import lrp_attention

    return lambda c: job(c, lambda q, k, v: lrp_attention(q, k, v, causal=c["causal"], softcap=c["softcap"],
                                                          sliding_window=c["window"], sinks=inputs(c)[4],
                                                          mode="attnlrp", backend=backend or DEV["backend"]))


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
                probe(c, f)
                note = " ".join(x for x in (variant, "no softcap" if c["softcap"] else "") if x)
                return job(c, f, note)
            except RuntimeError as e:
                if common.is_oom(e):
                    raise
                errors.append(f"{variant}: {str(e).splitlines()[0][:160]}")
        raise RuntimeError("unsupported: " + " | ".join(errors))
    return build


def probe(c, f, n=None):
    """One forward + backward of f (warnings silenced) on the case's inputs, or at N = n: raises what SDPA raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xs = inputs(c)[:3] if n is None else [torch.randn(1, h, n, d, device=DEV["device"], dtype=DEV["dtype"],
                                                          requires_grad=True) for h, d in
                                              ((c["H"], c["D"]), (c["Hkv"], c["D"]), (c["Hkv"], c["Dv"]))]
        out = f(*xs)
        torch.autograd.grad(out, xs, torch.ones_like(out))


def sdpa_sink(c):
    """lrp_sdpa_attention(mode='gradient', sinks=...): exact attention with sinks through SDPA (CONVENTIONS['sink']);
    the note: the backends that take its shape (probed at N = 256: they refuse by head dim and mask, not length)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lrp_triton.ops.sdpa_attention import lrp_sdpa_attention

    def f(q, k, v):
        return lrp_sdpa_attention(q, k, v, causal=c["causal"], sliding_window=c["window"], sinks=inputs(c)[4],
                                  mode="gradient")
    taken = []
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                probe(c, f, n=256)
            taken.append(name.split("_")[0].lower())
        except RuntimeError:
            pass
    return job(c, f, "backends taking it: " + (", ".join(taken) or "none"))


def eager(c):
    g, scale = c["H"] // c["Hkv"], c["D"] ** -0.5
    n, dev = c["N"], DEV["device"]
    mask = torch.ones(n, n, dtype=torch.bool, device=dev).triu_(1) if c["causal"] else None
    if c["window"]:
        mask = mask | torch.ones(n, n, dtype=torch.bool, device=dev).tril_(-c["window"])

    def f(q, k, v):
        if g > 1:
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        s = torch.matmul(q, k.transpose(-1, -2)) * scale
        if c["softcap"] is not None:
            s = c["softcap"] * torch.tanh(s / c["softcap"])
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        sinks = inputs(c)[4]
        if sinks is not None:  # HF's gpt-oss eager attention: the sink logit one more softmax column, then dropped
            s = torch.cat([s, sinks.to(s.dtype).view(1, -1, 1, 1).expand(*s.shape[:3], 1)], -1)
        p = torch.softmax(s.float(), dim=-1).to(q.dtype)
        return torch.matmul(p if sinks is None else p[..., :-1], v)
    return job(c, f, ", ".join(x for x in ("mask precomputed, not counted" if c["causal"] else "",
                                           "repeat_kv" if g > 1 else "") if x) or None)


METHODS = {"lrp_triton": lrp(), "sdpa_flash": sdpa("FLASH_ATTENTION"), "sdpa_cudnn": sdpa("CUDNN_ATTENTION"),
           "sdpa_efficient": sdpa("EFFICIENT_ATTENTION"), "sdpa_sink": sdpa_sink, "eager": eager,
           "lrp_torch": lrp("torch")}
KEYS = ("case", "B", "H", "Hkv", "N", "D", "Dv", "causal", "softcap", "window")


SDPAS = ("sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "sdpa_sink")
CHECKS = {"mha": dict(), "mla": dict(b=1, n=2048, d=192, dv=128),  # (the correctness spot checks, by case kind)
          "sink": dict(b=1, h=64, hkv=8, n=2048, d=64, dv=64, window=128, sinks=True)}


def ratios(run):
    out = []
    for label in dict.fromkeys(r["label"] for r in run.rows):
        lrp_row = run.ok("lrp_triton", label=label)
        sdpas = [r for r in (run.ok(m, label=label) for m in SDPAS) if r]
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
        row["lrp_fwdbwd_tflops"] = lrp_row["fwdbwd_tflops"]
        out.append(row)
    checks, pc = run.extra.get("correctness") or {}, run.extra.get("precompile")
    rows = [dict(check=name, passed=c.get("passed"), **r) for name, c in checks.items() for r in c.get("rows", [dict(
        error=c.get("error"))])]
    return [("ratios", "lrp_triton / SDPA (same run; < 1: lrp is faster / smaller)", out, None),
            (None, "Correctness spot checks (shapes in the JSON: correctness)", rows, None),
            (None, "Triton precompile", [{k: v for k, v in pc.items() if k != "errors"}] if pc else [], None)]


def correctness_check(b=2, h=16, hkv=None, n=4096, d=128, dv=None, causal=True, window=None, sinks=False):
    """lrp_attention output and its AttnLRP gradients undone to exact ones (4 dQ, 4 dK, 2 dV) against float32 exact
    attention on the same inputs (SDPA; with sinks lrp_sdpa_attention's construction, mode 'gradient'), next to
    the same SDPA call's own error in the benchmark dtype; pass when lrp's error <= max(2 x SDPA's, 1e-2)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lrp_triton.ops import lrp_attention
    from lrp_triton.ops.sdpa_attention import lrp_sdpa_attention

    torch.manual_seed(1)
    dev, dtype, dv, hkv = DEV["device"], DEV["dtype"], dv or d, hkv or h
    q, k, v, g = (torch.randn(b, hh, n, dd, device=dev, dtype=dtype) for hh, dd in ((h, d), (hkv, d), (hkv, dv), (h, dv)))
    kw = dict(causal=causal, sliding_window=window, sinks=2.0 * torch.randn(h, device=dev) if sinks else None)

    def run(fn, dtype):
        xs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*xs)
        return [out.detach().float()] + [t.float() for t in torch.autograd.grad(out, xs, g.to(dtype))]

    def sdpa_(*xs):
        return lrp_sdpa_attention(*xs, mode="gradient", **kw)  # (plain: F.scaled_dot_product_attention(is_causal))

    fast = [SDPBackend.MATH] if dev == "cpu" else [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                                                   SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        ref = run(sdpa_, torch.float32)
    with sdpa_kernel(fast):
        base = run(sdpa_, dtype)
    lrp_out = run(lambda *xs: lrp_attention(*xs, mode="attnlrp", backend=DEV["backend"], **kw), dtype)
    lrp_out = [lrp_out[0], 4 * lrp_out[1], 4 * lrp_out[2], 2 * lrp_out[3]]
    rows, ok = [], True
    for i, name in enumerate(("out", "dq_x4", "dk_x4", "dv_x2")):
        e_lrp = ((lrp_out[i] - ref[i]).norm() / ref[i].norm()).item()
        e_sdpa = ((base[i] - ref[i]).norm() / ref[i].norm()).item()
        finite = bool(torch.isfinite(lrp_out[i]).all())
        rows.append(dict(tensor=name, lrp_vs_ref=e_lrp, sdpa_vs_ref=e_sdpa, finite=finite,
                         lrp_max_abs_vs_sdpa=(lrp_out[i] - base[i]).abs().max().item()))
        ok &= finite and e_lrp <= max(2.0 * e_sdpa, 1e-2)
    return dict(shape=dict(B=b, H=h, Hkv=hkv, N=n, D=d, Dv=dv, causal=causal, window=window, sinks=sinks,
                           dtype=str(dtype)), rows=rows, passed=bool(ok), backend=DEV["backend"],
                reference="float32 exact attention (SDPA efficient/math) on the same rounded inputs; relative "
                          "Frobenius errors")


def combo(c):  # what one Triton specialisation of a case depends on
    return c["H"], c["Hkv"], c["D"], c["Dv"], c["causal"], c["softcap"], c["window"], c["sinks"]


def check_combo(b=2, h=16, hkv=None, n=4096, d=128, dv=None, causal=True, window=None, sinks=False):
    return h, hkv or h, d, dv or d, causal, None, window, sinks  # (correctness_check's defaults)


def _precompile_task(task):
    """Worker: one lrp_attention forward+backward at N = 1024 (the same Triton specialisation as every
    power-of-two N of the sweep) with every autotuner pinned to config `index`."""
    (h, hkv, d, dv, causal, softcap, window, sinks), index = task
    t0, error = time.perf_counter(), None
    try:
        common.ensure_lrp_triton()
        from lrp_triton.ops import lrp_attention

        common.pin_autotuners(index, BLOCK_D=max(16, 1 << (d - 1).bit_length()),
                              BLOCK_DV=max(16, 1 << (dv - 1).bit_length()))
        n, dev, dtype = DEV["precompile_n"], DEV["device"], DEV["dtype"]
        xs = [torch.randn(1, hh, n, dd, device=dev, dtype=dtype, requires_grad=True)
              for hh, dd in ((h, d), (hkv, d), (hkv, dv))]
        out = lrp_attention(*xs, causal=causal, softcap=softcap, sliding_window=window, mode="attnlrp",
                            sinks=torch.randn(h, device=dev) if sinks else None, backend="triton")
        torch.autograd.grad(out, xs, torch.randn_like(out))
        if dev == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - e.g. a config whose tiles do not fit: the autotuner skips it
        error = common.short_error(e)
    return task, time.perf_counter() - t0, error


def cpu_smoke(args):
    """Tiny MLA and sink cases on the CPU (float32): every method's phases through the runner (lrp_triton on the
    PyTorch backend), each method's forward against lrp_torch's, the MLA and sink correctness checks, and one
    precompile task in-process (the Triton kernel, under TRITON_INTERPRET=1)."""
    from lrp_triton.backend import interpreter_requested

    DEV.update(device="cpu", dtype=torch.float32, precompile_n=32, backend="torch")
    out_dir = common.smoke_dir(SCRIPT)  # (never bench/results)
    run = common.Runner(SCRIPT, "lrp_attention benchmark (CPU smoke)", args, budget_s=600.0, out=out_dir, device="cpu",
                        smoke=True, tables=ratios, info=dict(conventions=CONVENTIONS))
    args.torch_max_n = 48
    cases = [make_case(args, "mla", 48, 24, True, h=4, dv=16, b=1)] + [
        make_case(args, "sink", 48, 16, True, h=4, hkv=2, window=w, b=1) for w in (None, 8)]
    failures = []
    for c in cases:
        run.run([c], METHODS)
        ref = METHODS["lrp_torch"](c)["phases"]["fwd"]()
        for m in c["methods"]:
            row = next(r for r in run.rows if r["label"] == c["label"] and r["method"] == m)
            if row["status"] != "ok":
                if "unsupported" not in row["status"]:
                    failures.append(f"{c['label']} {m}: {row['status']}")
                continue
            diff = common.rel_diff(METHODS[m](c)["phases"]["fwd"](), ref)
            print(f"cpu-smoke: {c['label']} {m}: forward vs lrp_torch {diff:.2e}; note {row['note']}")
            if diff > 1e-4:
                failures.append(f"{c['label']} {m}: its forward differs from lrp_torch's by {diff:.2e}")
    run.extra["correctness"] = {k: correctness_check(**kw) for k, kw in dict(
        mla=dict(b=1, h=4, n=40, d=24, dv=16), sink=dict(b=1, h=4, hkv=2, n=40, d=16, window=8, sinks=True)).items()}
    failures += [f"correctness {k}: {c}" for k, c in run.extra["correctness"].items() if not c["passed"]]
    if interpreter_requested():  # the Triton kernel on the last case's specialisation
        task = _precompile_task((combo(cases[-1]), 0))
        print(f"cpu-smoke: precompile task (lrp_attention, backend='triton', TRITON_INTERPRET=1): {task[2] or 'ok'}")
        failures += [f"precompile task: {task[2]}"] if task[2] else []
    else:
        print("cpu-smoke: TRITON_INTERPRET is not 1: the Triton backend was not exercised")
    run.write(complete=True)
    failures += run.files_problem(("cpu_smoke", "results", "ratios"))
    return common.smoke_result(failures, f"{len(cases)} cases ({', '.join(c['label'] for c in cases)}): every "
                                         "method's forward equals lrp_torch's (tol 1e-4); correctness checks pass")


def main(argv=None):
    p = common.parser("Benchmark lrp_attention (AttnLRP, Triton) against torch SDPA (flash, cuDNN), eager attention "
                      "and the PyTorch LRP path: time, TFLOP/s, peak memory.", BUDGETS, precompile=True,
                      smoke="CPU only: tiny MLA and sink cases through every method, the correctness checks, one "
                            "precompile task (Triton under TRITON_INTERPRET=1); writes only to a temp dir")
    p.add_argument("--cases", default=",".join(KINDS), help=f"comma-separated kinds (default all: {','.join(KINDS)})")
    p.add_argument("--max-n", type=int, default=65536, help="largest sequence length (default 65536)")
    p.add_argument("--tokens", type=int, default=16384, help="B = max(1, tokens // N) (default 16384)")
    p.add_argument("--torch-max-n", type=int, default=2048, help="largest N of lrp_torch (default 2048)")
    p.add_argument("--no-check", action="store_true", help="skip the correctness spot checks")
    args = p.parse_args(argv)
    args.cases = args.cases.split(",")
    if set(args.cases) - set(KINDS):
        p.error(f"--cases: unknown {sorted(set(args.cases) - set(KINDS))}; choose from {', '.join(KINDS)}")
    if args.cpu_smoke:
        common.ensure_lrp_triton()
        args.cases = ["mla", "sink"]
        return cpu_smoke(args)
    common.require_cuda(SCRIPT)
    common.ensure_lrp_triton()
    budget = common.budget_of(args, BUDGETS)
    run = common.Runner(SCRIPT, "lrp_attention benchmark", args, budget_s=budget, out=args.out,
                        info=dict(conventions=CONVENTIONS, dtype="bfloat16", mode="attnlrp"), tables=ratios,
                        columns=["label", "B", "method", "status", "fwd_ms", "bwd_ms", "fwdbwd_ms", "fwd_tflops",
                                 "bwd_tflops", "fwdbwd_tflops", "fwd_peak_MiB", "fwdbwd_peak_MiB", "note"])
    cases = make_cases(args)
    checks = {k: kw for k, kw in CHECKS.items() if k == "mha" or k in args.cases} if not args.no_check else {}
    print(f"{SCRIPT}: {run.env.get('gpu')} | {len(cases)} cases, budget {budget:.0f} s -> {run.paths[0]}", flush=True)
    if not args.no_precompile and args.jobs > 1:
        combos = sorted({combo(c) for c in cases} | {check_combo(**kw) for kw in checks.values()}, key=str)
        n_cfg = max(len(t.configs) for t in common.autotuners("attention"))
        run.extra["precompile"] = common.precompile(_precompile_task, [(c, i) for c in combos for i in range(n_cfg)],
                                                    args.jobs, max(30.0, budget / 2))
    run.extra["correctness"] = {}
    for name, kw in checks.items():
        try:
            run.extra["correctness"][name] = correctness_check(**kw)
        except Exception as e:  # noqa: BLE001
            run.extra["correctness"][name] = dict(passed=False, error=common.short_error(e))
        common.free_cuda()
        print(f"correctness {name}: passed={run.extra['correctness'][name]['passed']}", flush=True)
    for c in cases:  # the big shapes take fewer repeats
        big = c["N"] >= 32768
        run.target_ms, run.max_repeats = (60.0 if args.quick else 150.0 if big else 300.0), (5 if big else 25)
        run.run([c], METHODS)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
