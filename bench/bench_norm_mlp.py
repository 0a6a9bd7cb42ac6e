#!/usr/bin/env python
"""Benchmark the fused norm / MLP relevance ops against the same LRP rules written in plain PyTorch
the way the reference library lxt does them: forward+backward time and peak memory.

Ops and shapes (LLaMA-7B: hidden 4096, intermediate 11008; T tokens, bf16 by default):
  rms_norm    x [T, 4096], w [4096]              identity rule (rms held constant)
  layer_norm  x [T, 4096], w, b [4096]           std held constant
  glu         gate, up [T, 11008], SiLU          identity rule on act, uniform rule on the product
  activation  x [T, 11008], GELU (erf)           identity rule

Methods:
  lrp_triton   lrp_triton.ops, backend="triton"
  lrp_torch    lrp_triton.ops, backend="torch" (the PyTorch fallback of this package)
  lxt          the lxt 2.x "efficient" patches written out here (lxt itself does not import under
               transformers 5): RMSNorm upcast to float32 with stop_gradient(rsqrt); LayerNorm in the
               input dtype with stop_gradient(std); activations via identity_rule_implicit, which
               saves act(x) / (x + 1e-10) in the input dtype; the product via divide_gradient(., 2)
  lxt_fp32     the same rules with every op upcast to float32 first (so f(x)/x is saved in float32)
               and the result cast back: lxt's approach at float32 precision
  autograd     the plain HuggingFace forward with the ordinary gradient (not LRP): a speed reference

Weights are frozen (no weight gradients), inputs require grad; the backward is
torch.autograd.grad(out, inputs, grad_out) with a random grad_out.

Run on a CUDA machine:  python bench/bench_norm_mlp.py [--quick] [--tokens 4096 8192 ...] [--out DIR]
Without a GPU it prints "needs a CUDA GPU" and exits with status 2.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common` beside this file

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import (cuda_time_ms, env_record, finish_run, free_cuda, is_oom, markdown_table,  # noqa: E402
                    peak_memory_bytes, require_cuda, result_paths, write_json, write_markdown)

SCRIPT = "bench_norm_mlp"
DEVICE = "cuda"
MiB = 2 ** 20
OPS = ("rms_norm", "layer_norm", "glu", "activation")
METHODS = ("lrp_triton", "lrp_torch", "lxt", "lxt_fp32", "autograd")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

CONVENTIONS = {
    "time": "median of CUDA-event timings of single calls, L2 flushed before each repeat, after warm-up "
            "(Triton compile and autotune excluded)",
    "fwdbwd": "out = op(inputs); torch.autograd.grad(out, inputs, grad_out)",
    "memory": "peak torch.cuda.max_memory_allocated during one forward+backward minus what was allocated "
              "before it (inputs, weights and grad_out are not counted; the output and the gradients are)",
    "saved": "memory still allocated after the forward, minus the output itself: what the autograd graph "
             "keeps for the backward beyond the inputs",
    "bandwidth": "minimum bytes a fused forward+backward must move (read inputs, write output; read grad_out "
                 "and the inputs again, write the input gradients) / time",
    "check": "relevance sum over inputs of x * grad (float64) of lrp_triton and lxt_fp32 at the smallest T: "
             "max |difference| / max |lxt_fp32|",
}


# --------------------------------------------------------------------------------------------- #
# lxt's rules, written out (lxt.efficient.rules / lxt.efficient.patches, 2.x)
# --------------------------------------------------------------------------------------------- #
class _IdentityRuleImplicit(torch.autograd.Function):
    """lxt identity_rule_implicit: saves act(x) / (x + eps) and multiplies the gradient by it."""

    @staticmethod
    def forward(ctx, fn, x, eps=1e-10):
        out = fn(x)
        if x.requires_grad:
            ctx.save_for_backward(out / (x + eps))
        return out

    @staticmethod
    def backward(ctx, g):
        return None, ctx.saved_tensors[0] * g, None


class _DivideGradient(torch.autograd.Function):
    """lxt divide_gradient: identity forward, gradient / factor."""

    @staticmethod
    def forward(ctx, x, factor=2):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.factor, None


def lxt_rms_norm(x, w, eps):  # patches.rms_norm_forward (upcasts already)
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps).detach()
    return w * h.to(x.dtype)


def lxt_layer_norm(x, w, b, eps, upcast=False):  # patches.layer_norm_forward
    xi = x.float() if upcast else x
    mean = xi.mean(dim=-1, keepdim=True)
    var = ((xi - mean) ** 2).mean(dim=-1, keepdim=True)
    std = (var + eps).sqrt()
    y = (xi - mean) / std.detach()
    y = y * (w.float() if upcast else w) + (b.float() if upcast else b)
    return y.to(x.dtype)


def lxt_glu(gate, up, act, upcast=False):  # patches.gated_mlp_forward, without the projections
    if upcast:
        gate, up, dtype = gate.float(), up.float(), gate.dtype
    a = _IdentityRuleImplicit.apply(act, gate)
    y = _DivideGradient.apply(a * up, 2)
    return y.to(dtype) if upcast else y


def lxt_activation(x, act, upcast=False):  # patches.mlp_forward / non_linear_forward
    y = _IdentityRuleImplicit.apply(act, x.float() if upcast else x)
    return y.to(x.dtype)


def hf_rms_norm(x, w, eps):  # LlamaRMSNorm.forward, ordinary autograd
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


# --------------------------------------------------------------------------------------------- #
# Cases
# --------------------------------------------------------------------------------------------- #
def make_inputs(op, tokens, hidden, intermediate, dtype):
    """(inputs requiring grad, frozen params dict, grad_out)."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rnd(*shape, scale=1.0, shift=0.0, grad=False):
        t = torch.randn(*shape, device=DEVICE, dtype=torch.float32, generator=gen) * scale + shift
        return t.to(dtype).requires_grad_(grad)

    if op in ("rms_norm", "layer_norm"):
        x = rnd(tokens, hidden, grad=True)
        params = {"w": rnd(hidden, scale=0.3, shift=1.0), "b": rnd(hidden, scale=0.1)}
        return (x,), params, rnd(tokens, hidden)
    if op == "glu":
        return (rnd(tokens, intermediate, scale=2.0, grad=True), rnd(tokens, intermediate, grad=True)), {}, \
            rnd(tokens, intermediate)
    return (rnd(tokens, intermediate, scale=2.0, grad=True),), {}, rnd(tokens, intermediate)


def make_fn(op, method, params):
    """fn(*inputs) -> output for one (op, method)."""
    from lrp_triton.ops import lrp_activation, lrp_glu, lrp_layer_norm, lrp_rms_norm

    w, b = params.get("w"), params.get("b")
    if method in ("lrp_triton", "lrp_torch"):
        be = method[len("lrp_"):]
        return {
            "rms_norm": lambda x: lrp_rms_norm(x, w, 1e-6, backend=be),
            "layer_norm": lambda x: lrp_layer_norm(x, w, b, 1e-5, backend=be),
            "glu": lambda gate, up: lrp_glu(gate, up, "silu", backend=be),
            "activation": lambda x: lrp_activation(x, "gelu", backend=be),
        }[op]
    if method in ("lxt", "lxt_fp32"):
        up32 = method == "lxt_fp32"
        return {
            "rms_norm": lambda x: lxt_rms_norm(x, w, 1e-6),  # lxt upcasts RMSNorm in both variants
            "layer_norm": lambda x: lxt_layer_norm(x, w, b, 1e-5, upcast=up32),
            "glu": lambda gate, up: lxt_glu(gate, up, F.silu, upcast=up32),
            "activation": lambda x: lxt_activation(x, F.gelu, upcast=up32),
        }[op]
    return {
        "rms_norm": lambda x: hf_rms_norm(x, w, 1e-6),
        "layer_norm": lambda x: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5),
        "glu": lambda gate, up: F.silu(gate) * up,
        "activation": lambda x: F.gelu(x),
    }[op]


def min_bytes(op, inputs, out_elems, elem):
    """Minimum HBM traffic of a fused forward+backward (see CONVENTIONS['bandwidth'])."""
    n_in = sum(t.numel() for t in inputs)
    # forward: read inputs, write output; backward: read grad_out, read inputs, write input grads
    # (the norms' backward needs only grad_out and the per-row rstd, not x)
    reread = 0 if op in ("rms_norm", "layer_norm") else n_in
    return (n_in + out_elems + out_elems + reread + n_in) * elem


# --------------------------------------------------------------------------------------------- #
# One measurement
# --------------------------------------------------------------------------------------------- #
def measure(fn, inputs, g, *, target_ms, max_repeats):
    t0 = time.perf_counter()
    torch.autograd.grad(fn(*inputs), inputs, g)  # first call: compile + autotune
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - t0

    def fwd():
        with torch.no_grad():
            return fn(*inputs)

    def fwdbwd():
        return torch.autograd.grad(fn(*inputs), inputs, g)

    kw = dict(warmup=1, repeats=None, target_ms=target_ms, max_repeats=max_repeats)
    r_fwd = cuda_time_ms(fwd, **kw)
    r_fb = cuda_time_ms(fwdbwd, **kw)
    free_cuda()
    mem_fb, _ = peak_memory_bytes(fwdbwd)
    free_cuda()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    out = fn(*inputs)  # with the graph: what it keeps for the backward
    torch.cuda.synchronize()
    saved = torch.cuda.memory_allocated() - base - out.numel() * out.element_size()
    del out
    free_cuda()
    return dict(fwd_ms=r_fwd["median_ms"], fwdbwd_ms=r_fb["median_ms"], fwdbwd_min_ms=r_fb["min_ms"],
                fwdbwd_max_ms=r_fb["max_ms"], repeats=[r_fwd["repeats"], r_fb["repeats"]],
                mem_fwdbwd_MiB=mem_fb / MiB, saved_MiB=saved / MiB, first_call_s=first_call_s)


def autotune_choice(op):
    try:
        from lrp_triton.kernels import activations, layer_norm, rms_norm
    except Exception:  # noqa: BLE001
        return None
    kernels = {"rms_norm": (rms_norm, ("_rms_norm_fwd", "_rms_norm_bwd")),
               "layer_norm": (layer_norm, ("_layer_norm_fwd", "_layer_norm_bwd")),
               "glu": (activations, ("_glu_fwd", "_glu_bwd")),
               "activation": (activations, ("_act_fwd", "_act_bwd"))}[op]
    out = {}
    for name in kernels[1]:
        cfg = getattr(getattr(kernels[0], name, None), "best_config", None)
        if cfg is not None:
            out[name] = str(cfg)
    return out or None


def relevance_check(op, tokens, args, dtype):
    """lrp_triton vs lxt_fp32 relevance (sum over inputs of x * grad) at one size."""
    inputs, params, g = make_inputs(op, tokens, args.hidden, args.intermediate, dtype)
    rel = {}
    for method in ("lrp_triton", "lxt_fp32"):
        grads = torch.autograd.grad(make_fn(op, method, params)(*inputs), inputs, g)
        rel[method] = sum(t.double() * gr.double() for t, gr in zip(inputs, grads))
    ref = rel["lxt_fp32"]
    err = ((rel["lrp_triton"] - ref).abs().max() / ref.abs().max()).item()
    del inputs, params, g, rel, ref
    free_cuda()
    return {"op": op, "T": tokens, "max_abs_diff_over_max": err, "finite": math.isfinite(err)}


# --------------------------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------------------------- #
RESULT_COLS = ["op", "T", "shape", "method", "status", "fwd_ms", "fwdbwd_ms", "fwdbwd_GBps",
               "mem_fwdbwd_MiB", "saved_MiB", "note"]
RATIO_COLS = ["op", "T", "vs", "time_fwdbwd_ratio", "mem_fwdbwd_ratio", "saved_ratio"]


def ratio_rows(rows):
    by = {r["method"]: r for r in rows if r.get("status") == "ok"}
    lrp = by.get("lrp_triton")
    out = []
    for other in ("lxt", "lxt_fp32", "lrp_torch", "autograd"):
        if lrp is None or other not in by:
            continue
        o = by[other]
        out.append({"op": lrp["op"], "T": lrp["T"], "vs": other,
                    "time_fwdbwd_ratio": lrp["fwdbwd_ms"] / o["fwdbwd_ms"],
                    "mem_fwdbwd_ratio": (lrp["mem_fwdbwd_MiB"] / o["mem_fwdbwd_MiB"]
                                         if o["mem_fwdbwd_MiB"] > 0 else None),
                    "saved_ratio": lrp["saved_MiB"] / o["saved_MiB"] if o["saved_MiB"] > 0 else None})
    return out


def write_all(paths, record):
    json_path, md_path = paths
    write_json(json_path, record)
    sections = [
        ("lrp_triton / other method (same run; < 1 means lrp_triton is faster / smaller)",
         markdown_table(record["ratios"], RATIO_COLS)),
        ("All measurements", markdown_table(record["results"], RESULT_COLS)),
        ("Relevance check (lrp_triton vs lxt_fp32)", markdown_table(record["checks"])),
    ]
    if record.get("skipped"):
        sections.append(("Skipped", markdown_table(record["skipped"])))
    notes = [f"{k_}: {v_}" for k_, v_ in CONVENTIONS.items()]
    notes.append(f"dtype: {record['dtype']}; elapsed: {record.get('elapsed_s', 0):.0f} s; "
                 f"complete: {record.get('complete')}")
    write_markdown(md_path, "lrp norm / MLP ops benchmark", record["env"], sections, notes)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark lrp_rms_norm, lrp_layer_norm, lrp_glu and lrp_activation (Triton) against the "
                    "same LRP rules in plain PyTorch as lxt writes them: forward+backward time and peak "
                    "memory at LLaMA-7B shapes. Needs a CUDA GPU.")
    p.add_argument("--quick", action="store_true", help="T = 4096 and 16384 only (smoke run)")
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536],
                   help="token counts T (default 4096 8192 16384 32768 65536)")
    p.add_argument("--hidden", type=int, default=4096, help="hidden size (default 4096, LLaMA-7B)")
    p.add_argument("--intermediate", type=int, default=11008, help="MLP size (default 11008, LLaMA-7B)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="activation dtype (default bf16)")
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to run (default all)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods to run (default all)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                   help="output folder for JSON and markdown (default: bench/results)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new cases when one would end after this many seconds "
                        "(default 240, quick 90)")
    p.add_argument("--no-check", action="store_true", help="skip the relevance check")
    args = p.parse_args(argv)

    require_cuda(SCRIPT)
    dtype = DTYPES[args.dtype]
    tokens = args.tokens
    if args.quick:
        tokens = [t for t in tokens if t in (4096, 16384)] or tokens[:1]
    budget = args.budget_s if args.budget_s is not None else (90.0 if args.quick else 240.0)
    start = time.perf_counter()
    env = env_record()
    paths = result_paths(SCRIPT, args.out)
    record = {"script": SCRIPT, "env": env, "args": vars(args), "dtype": str(dtype), "budget_s": budget,
              "conventions": CONVENTIONS, "results": [], "ratios": [], "checks": [], "skipped": [],
              "complete": False}
    print(f"{SCRIPT}: {env.get('gpu')} | torch {env['torch']} | triton {env['triton']} | T={tokens} "
          f"| ops {args.ops} -> {paths[0]}", flush=True)

    if not args.no_check:
        for op in args.ops:
            try:
                record["checks"].append(relevance_check(op, min(tokens), args, dtype))
            except Exception as e:  # noqa: BLE001
                record["checks"].append({"op": op, "error": f"{type(e).__name__}: {e}"[:300]})
            free_cuda()
            print(f"check: {record['checks'][-1]}", flush=True)
        write_all(paths, record)

    last_cost = {}  # op -> (seconds, tokens) of its last case, to predict the next one
    for t in sorted(tokens):
        for op in args.ops:
            elapsed = time.perf_counter() - start
            predicted = last_cost[op][0] * t / last_cost[op][1] if op in last_cost else 0.0
            if elapsed + predicted > budget:
                record["skipped"].append({"op": op, "T": t, "reason": f"time budget ({elapsed:.0f} s + "
                                          f"predicted {predicted:.0f} s > {budget:.0f} s)"})
                print(f"skip {op} T={t}: budget", flush=True)
                continue
            t0 = time.perf_counter()
            rows = []
            big = t >= 32768
            for method in args.methods:
                row = {"op": op, "T": t, "method": method}
                failure = None
                try:
                    inputs, params, g = make_inputs(op, t, args.hidden, args.intermediate, dtype)
                    row["shape"] = "x".join(str(s) for s in inputs[0].shape)
                    fn = make_fn(op, method, params)
                    res = measure(fn, inputs, g, target_ms=100.0 if big else 200.0,
                                  max_repeats=10 if big else 30)
                    row.update(res, status="ok")
                    out_elems = inputs[0].numel()
                    row["fwdbwd_GBps"] = min_bytes(op, inputs, out_elems, inputs[0].element_size()) / (
                        res["fwdbwd_ms"] * 1e-3) / 1e9
                    if method == "lrp_triton":
                        row["autotune"] = autotune_choice(op)
                except Exception as e:  # noqa: BLE001 - record and go on
                    failure = ("oom" if is_oom(e)
                               else f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                inputs = params = g = fn = None
                if failure is not None:
                    row["status"] = failure
                free_cuda()
                rows.append(row)
                if row["status"] == "ok":
                    print(f"{op:>10} T={t:<6} {method:<10} fwd {row['fwd_ms']:8.3f} ms  "
                          f"f+b {row['fwdbwd_ms']:8.3f} ms ({row['fwdbwd_GBps']:7.1f} GB/s)  "
                          f"peak {row['mem_fwdbwd_MiB']:9.1f} MiB  "
                          f"saved {row['saved_MiB']:9.1f} MiB", flush=True)
                else:
                    print(f"{op:>10} T={t:<6} {method:<10} {row['status']}", flush=True)
            last_cost[op] = (time.perf_counter() - t0, t)
            record["results"] += rows
            record["ratios"] += ratio_rows(rows)
            record["elapsed_s"] = time.perf_counter() - start
            write_all(paths, record)  # after every case: a killed run still leaves its numbers

    return finish_run(record, paths, start, write_all, RATIO_COLS)


if __name__ == "__main__":
    sys.exit(main())
