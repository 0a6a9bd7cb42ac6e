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

Weights are frozen, inputs require grad; backward = torch.autograd.grad(out, inputs, grad_out).

  python bench/bench_norm_mlp.py [--quick] [--tokens 4096 8192 ...] [--out DIR]
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common` beside this file

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402

SCRIPT = "bench_norm_mlp"
DEVICE = "cuda"
BUDGETS = (240.0, 90.0)
OPS = ("rms_norm", "layer_norm", "glu", "activation")
METHOD_NAMES = ("lrp_triton", "lrp_torch", "lxt", "lxt_fp32", "autograd")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

CONVENTIONS = {
    "time": "median of CUDA-event timings of single calls, L2 flushed before each repeat, after a first call "
            "(Triton compile and autotune excluded); fwd under torch.no_grad()",
    "fwdbwd": "out = op(inputs); torch.autograd.grad(out, inputs, grad_out)",
    "memory": "peak allocated during the timed calls minus what was allocated before them (inputs, weights and "
              "grad_out are not counted; the output and the gradients are)",
    "saved": "memory still allocated after the forward, minus the output itself: what the autograd graph "
             "keeps for the backward beyond the inputs",
    "bandwidth": "minimum bytes a fused forward+backward must move (read inputs, write output; read grad_out "
                 "and the inputs again, write the input gradients) / time",
    "check": "relevance sum over inputs of x * grad (float64) of lrp_triton and lxt_fp32 at the smallest T: "
             "max |difference| / max |lxt_fp32|",
}


# --- lxt's rules, written out (lxt.efficient.rules / lxt.efficient.patches, 2.x) ------------------
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
    from lrp_triton.ops.sdpa_attention import scale_gradient  # lxt's divide_gradient(., 2): identity, grad / 2

    y = scale_gradient(_IdentityRuleImplicit.apply(act, gate) * up, 0.5)
    return y.to(dtype) if upcast else y


def lxt_activation(x, act, upcast=False):  # patches.mlp_forward / non_linear_forward
    y = _IdentityRuleImplicit.apply(act, x.float() if upcast else x)
    return y.to(x.dtype)


def hf_rms_norm(x, w, eps):  # LlamaRMSNorm.forward, ordinary autograd
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


# --- Cases x methods ------------------------------------------------------------------------------
def make_inputs(op, tokens, hidden, intermediate, dtype):
    """(inputs requiring grad, frozen params dict, grad_out)."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rnd(*shape, scale=1.0, shift=0.0, grad=False):
        t = torch.randn(*shape, device=DEVICE, dtype=torch.float32, generator=gen) * scale + shift
        return t.to(dtype).requires_grad_(grad)

    if op in ("rms_norm", "layer_norm"):
        x = rnd(tokens, hidden, grad=True)
        return (x,), {"w": rnd(hidden, scale=0.3, shift=1.0), "b": rnd(hidden, scale=0.1)}, rnd(tokens, hidden)
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
        return {"rms_norm": lambda x: lrp_rms_norm(x, w, 1e-6, backend=be),
                "layer_norm": lambda x: lrp_layer_norm(x, w, b, 1e-5, backend=be),
                "glu": lambda gate, up: lrp_glu(gate, up, "silu", backend=be),
                "activation": lambda x: lrp_activation(x, "gelu", backend=be)}[op]
    if method in ("lxt", "lxt_fp32"):
        up32 = method == "lxt_fp32"
        return {"rms_norm": lambda x: lxt_rms_norm(x, w, 1e-6),  # lxt upcasts RMSNorm in both variants
                "layer_norm": lambda x: lxt_layer_norm(x, w, b, 1e-5, upcast=up32),
                "glu": lambda gate, up: lxt_glu(gate, up, F.silu, upcast=up32),
                "activation": lambda x: lxt_activation(x, F.gelu, upcast=up32)}[op]
    return {"rms_norm": lambda x: hf_rms_norm(x, w, 1e-6),
            "layer_norm": lambda x: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5),
            "glu": lambda gate, up: F.silu(gate) * up,
            "activation": lambda x: F.gelu(x)}[op]


def method(name):
    def build(c):
        inputs, params, g = make_inputs(c["op"], c["T"], *c["dims"], c["dtype"])
        fn = make_fn(c["op"], name, params)

        def fwd():
            with torch.no_grad():
                return fn(*inputs)

        def after(row):
            n_in, n_out, elem = sum(t.numel() for t in inputs), inputs[0].numel(), inputs[0].element_size()
            # minimum traffic of a fused fwd+bwd: read inputs, write output; read grad_out (and the inputs
            # again, except for the norms: they need grad_out and the per-row statistics), write input grads
            moved = (n_in + 2 * n_out + (0 if c["op"] in ("rms_norm", "layer_norm") else n_in) + n_in) * elem
            row["fwdbwd_GBps"] = moved / (row["fwdbwd_ms"] * 1e-3) / 1e9
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            out = fn(*inputs)  # with the graph: what it keeps for the backward
            torch.cuda.synchronize()
            row["saved_MiB"] = (torch.cuda.memory_allocated() - base - out.numel() * out.element_size()) / common.MiB
            if name == "lrp_triton":
                row["autotune"] = common.autotune_choices({"rms_norm": "rms_norm", "layer_norm": "layer_norm"}.get(
                    c["op"], "activations"))

        return dict(phases={"fwd": fwd, "fwdbwd": lambda: torch.autograd.grad(fn(*inputs), inputs, g)}, after=after)
    return build


METHODS = {m: method(m) for m in METHOD_NAMES}


def relevance_check(op, tokens, args, dtype):
    """lrp_triton vs lxt_fp32 relevance (sum over inputs of x * grad) at one size."""
    inputs, params, g = make_inputs(op, tokens, args.hidden, args.intermediate, dtype)
    rel = {}
    for m in ("lrp_triton", "lxt_fp32"):
        grads = torch.autograd.grad(make_fn(op, m, params)(*inputs), inputs, g)
        rel[m] = sum(t.double() * gr.double() for t, gr in zip(inputs, grads))
    err = ((rel["lrp_triton"] - rel["lxt_fp32"]).abs().max() / rel["lxt_fp32"].abs().max()).item()
    return {"op": op, "T": tokens, "max_abs_diff_over_max": err, "finite": math.isfinite(err)}


def ratios(run):
    out = []
    for label in dict.fromkeys(r["label"] for r in run.rows):
        lrp = run.ok("lrp_triton", label=label)
        for other in ("lxt", "lxt_fp32", "lrp_torch", "autograd"):
            o = run.ok(other, label=label)
            if lrp and o:
                out.append(dict(op=lrp["op"], T=lrp["T"], vs=other, time_fwdbwd_ratio=lrp["fwdbwd_ms"] / o["fwdbwd_ms"],
                                mem_fwdbwd_ratio=lrp["fwdbwd_peak_MiB"] / o["fwdbwd_peak_MiB"]
                                if o.get("fwdbwd_peak_MiB") else None,
                                saved_ratio=lrp["saved_MiB"] / o["saved_MiB"] if o["saved_MiB"] > 0 else None))
    return [("ratios", "lrp_triton / other method (same run; < 1: lrp_triton is faster / smaller)", out, None),
            (None, "Relevance check (lrp_triton vs lxt_fp32)", run.extra.get("checks", []), None)]


def main(argv=None):
    p = common.parser("Benchmark lrp_rms_norm, lrp_layer_norm, lrp_glu and lrp_activation (Triton) against the "
                      "same LRP rules in plain PyTorch as lxt writes them: forward+backward time and peak memory "
                      "at LLaMA-7B shapes.", BUDGETS)
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536],
                   help="token counts T (default 4096 8192 16384 32768 65536; --quick: 4096 and 16384)")
    p.add_argument("--hidden", type=int, default=4096, help="hidden size (default 4096, LLaMA-7B)")
    p.add_argument("--intermediate", type=int, default=11008, help="MLP size (default 11008, LLaMA-7B)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="activation dtype (default bf16)")
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to run (default all)")
    p.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=list(METHOD_NAMES), help="default all")
    p.add_argument("--no-check", action="store_true", help="skip the relevance check")
    args = p.parse_args(argv)
    common.require_cuda(SCRIPT)
    common.ensure_lrp_triton()
    dtype = DTYPES[args.dtype]
    tokens = sorted(args.tokens)
    if args.quick:
        tokens = [t for t in tokens if t in (4096, 16384)] or tokens[:1]
    run = common.Runner(SCRIPT, "lrp norm / MLP ops benchmark", args, budget_s=common.budget_of(args, BUDGETS),
                        out=args.out, info=dict(conventions=CONVENTIONS, dtype=str(dtype)), tables=ratios,
                        columns=["op", "T", "shape", "method", "status", "fwd_ms", "fwdbwd_ms", "fwdbwd_GBps",
                                 "fwdbwd_peak_MiB", "saved_MiB"])
    if not args.no_check:
        run.extra["checks"] = []
        for op in args.ops:
            try:
                run.extra["checks"].append(relevance_check(op, tokens[0], args, dtype))
            except Exception as e:  # noqa: BLE001
                run.extra["checks"].append({"op": op, "error": common.short_error(e)})
            common.free_cuda()
            print(f"check: {run.extra['checks'][-1]}", flush=True)
    for t in tokens:
        big = t >= 32768
        run.target_ms, run.max_repeats = (100.0, 10) if big else (200.0, 30)
        run.run([dict(label=f"{op}/T={t}", op=op, T=t, dims=(args.hidden, args.intermediate), dtype=dtype,
                      shape=f"{t}x{args.hidden if op in ('rms_norm', 'layer_norm') else args.intermediate}",
                      methods=args.methods) for op in args.ops], METHODS)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
