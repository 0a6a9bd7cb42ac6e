#!/usr/bin/env python
"""Static kernel report: every Triton kernel of lrp_triton compiled for sm_90a on a machine without a GPU.

    python bench/kernel_report.py [--quick] [--all-configs] [--only TEXT] [--jobs N] [--out DIR]
                                  [--cache DIR | --no-cache]

Each launcher (attention forward / backward, RMSNorm, LayerNorm, activation, GLU) runs on small CPU
tensors with Triton's launch path replaced by a recorder (`Autotuner.run`, `JITFunction.run`), so the
arguments are exactly those of a real launch. Each autotune config the kernel's own pruning keeps is
bound by Triton's own binder (`create_function_from_signature`, the function `JITFunction.run` uses),
which applies the launch specialisations (ints equal to 1 -> constexpr, 16-divisible ints and
16-byte-aligned pointers -> `tt.divisibility`), and compiled with `triton.compile` for
GPUTarget("cuda", 90, 32) (sm_90a). Figures come from the compile: ptxas -v (registers, spills,
stack), the kernel metadata (shared memory Triton requests), the PTX (wgmma / mma.sync) and the SASS
(cuobjdump -sass: loops by backward branches, instructions per class per iteration). Nothing is run.
Written: <out>/kernel_report_static_sm90a[_quick][_subset].json and .md.
"""

from __future__ import annotations

import os

os.environ.pop("TRITON_INTERPRET", None)  # compiling needs the real triton.jit (workers inherit this)
# the kernels' own pruning as on sm_90 (lrp_triton.kernels.attention_tiles.target_arch); --all-configs: every config
os.environ["LRP_TRITON_TARGET_ARCH"] = "0" if "--all-configs" in __import__("sys").argv else "90"

import argparse, collections, contextlib, datetime, gzip, hashlib, importlib, io, json  # noqa: E401,E402
import math, multiprocessing, pkgutil, platform, re, subprocess, sys, tempfile, time, warnings  # noqa: E401,E402
import concurrent.futures as cf  # noqa: E402
from pathlib import Path  # noqa: E402

KIND = "static, sm_90a, no GPU"
STEM = "kernel_report_static_sm90a"
ARTEFACTS = "v3"  # format of the cached compile artefacts: a change here recompiles everything
# sm_90 (H100 / H200) limits and rates used below (CUDA programming guide, compute capability 9.0)
SM90 = dict(max_shared_per_block=232448, shared_per_sm=233472, reserved_shared_per_block=1024,
            regs_per_sm=65536, reg_alloc_unit_per_warp=256, max_threads_per_block=1024,
            max_warps_per_sm=64, max_ctas_per_sm=32, sub_partitions=4,
            tensor_bf16_fma_per_clk_per_sm=2048, mufu_per_clk_per_sm=16)
CLASSES = {  # SASS opcode (text before the first '.') -> class; U-prefixed uniform ops join their class
    "mma": "HGMMA HMMA QGMMA IMMA BMMA OMMA",
    "ffma": "FFMA", "fmul": "FMUL", "fadd": "FADD",
    "fp_other": "FMNMX FCHK HADD2 HMUL2 HFMA2 HMNMX2 FSWZADD FRND",
    "select": "SEL FSEL",
    "int_addr": "IMAD IADD3 VIADD LEA SHF LOP3 MOV IABS IMNMX VIMNMX PRMT SGXT BMSK POPC FLO BREV IADD "
                "SHL SHR IMUL S2R S2UR CS2R R2UR",
    "predicate": "ISETP FSETP PLOP3 P2R R2P HSETP2 DSETP VOTE",
    "convert": "F2FP F2F I2F F2I I2FP F2IP I2I",
    "load": "LDG LDGSTS UTMALDG UBLKCP LDS LDSM LD",
    "store": "STG STS STSM UTMASTG UTMAREDG RED REDG ATOM ATOMG ATOMS ST",
    "local": "LDL STL",
    "shuffle": "SHFL",
    "sync": "BAR DEPBAR LDGDEPBAR WARPGROUP MEMBAR FENCE SYNCS ERRBAR WARPSYNC ARRIVES CCTL",
    "control": "BRA EXIT BSSY BSYNC CALL RET JMP BRX JMX YIELD NOP BPT",
}
OPCLASS = {op: c for c, ops in CLASSES.items() for op in ops.split()}
NAMES = dict(_attn_fwd="attention forward", attn_bwd_delta="attention delta", attn_bwd_dkdv="attention dK-dV",
             attn_bwd_dq="attention dQ", _rms_norm_fwd="RMSNorm fwd", _rms_norm_bwd="RMSNorm bwd",
             _layer_norm_fwd="LayerNorm fwd", _layer_norm_bwd="LayerNorm bwd", _act_fwd="activation fwd",
             _act_bwd="activation bwd", _glu_fwd="GLU fwd", _glu_bwd="GLU bwd")


# ----------------------------------------------------------------------------------------------
# Cases: which launcher calls, on which small CPU tensors (shapes chosen so that every integer
# argument has the specialisation of a real launch: lengths, heads and rows multiples of 16, > 1)
# ----------------------------------------------------------------------------------------------
def cases(quick):
    out = []
    for d in (128,) if quick else (64, 128):
        for causal in (True,) if quick else (False, True):
            for mode in ("attnlrp",) if quick else ("attnlrp", "cp-lrp", "gradient"):
                out.append(dict(family="attention", dtype="bf16", D=d, causal=causal, mode=mode,
                                B=2, H=16 if d == 128 else 32, Hkv=16 if d == 128 else 32, N=512))
    if not quick:  # GQA (Llama-3: GROUP = 4, a runtime int); gpt-oss's sinks (a forward variant, HAS_SINKS);
        # multi-head latent attention (DeepSeek-V2/V3: query/key head dim 192, value head dim 128)
        out += [dict(family="attention", dtype="bf16", D=128, causal=True, mode="attnlrp", B=2, H=32, Hkv=8, N=512),
                dict(family="attention", dtype="bf16", D=64, causal=True, mode="attnlrp", B=2, H=32, Hkv=8, N=512,
                     sinks=True),
                dict(family="attention", dtype="bf16", D=192, Dv=128, causal=True, mode="attnlrp", B=2, H=16, Hkv=16,
                     N=512)]
        # PaliGemma's bidirectional prefix (256 image + prompt tokens of 512): per-row causal extents (HAS_EXTENT),
        # and the complete 0 / -inf mask as an additive bias (non-causal), the fallback for masks of other forms
        out += [dict(family="attention", dtype="bf16", D=128, causal=True, mode="attnlrp", B=2, H=16, Hkv=16, N=512,
                     prefix=256, mask=m) for m in ("extent", "bias")]
    norms = [("rms", 4096, 0.0), ("layer", 768, None)] if quick else \
        [("rms", 4096, 0.0), ("rms", 2304, 1.0), ("rms", 8192, 0.0), ("layer", 768, None), ("layer", 8192, None)]
    out += [dict(family=f"{k}_norm", dtype="bf16", hidden=h, offset=o, rows=64) for k, h, o in norms]
    out += [dict(family="glu", dtype="bf16", act=a, numel=64 * 14336) for a in
            (("silu",) if quick else ("silu", "gelu_tanh"))]
    out += [dict(family="activation", dtype="bf16", act=a, numel=64 * 3072) for a in
            (("gelu",) if quick else ("silu", "gelu", "gelu_tanh", "relu"))]
    return out


def drive(case):
    """Calls the case's launchers on CPU tensors (no kernel runs: the launch path is recorded)."""
    import torch

    from lrp_triton.kernels import activations, attention, layer_norm, rms_norm
    g = torch.Generator().manual_seed(0)
    dt = torch.bfloat16

    def r(*shape, dtype=dt):
        return torch.randn(*shape, generator=g).to(dtype)
    fam = case["family"]
    if fam == "attention":
        b, h, hkv, n, d = case["B"], case["H"], case["Hkv"], case["N"], case["D"]
        dv = case.get("Dv", d)  # the value head dim
        q, k, v = r(b, h, n, d), r(b, hkv, n, d), r(b, hkv, n, dv)
        kw = dict(causal=case["causal"], scale=d ** -0.5)
        if "prefix" in case:  # query i sees the keys j <= max(i, prefix - 1)
            ext = torch.arange(n).clamp(min=case["prefix"] - 1).expand(b, n).to(torch.int32)
            visible = torch.arange(n)[None] <= ext[0][:, None]
            kw = dict(kw, causal_extent=ext) if case["mask"] == "extent" else \
                dict(kw, causal=False, bias=torch.zeros(b, 1, n, n, dtype=dt).masked_fill(~visible, float("-inf")))
        attention.attention_forward(q, k, v, **kw, **({"sinks": r(h, dtype=torch.float32)} if case.get("sinks") else {}))
        attention.attention_backward(r(b, h, n, dv), q, k, v, r(b, h, n, dv), r(b, h, n, dtype=torch.float32),
                                     mode=case["mode"], **kw)
    elif fam == "rms_norm":
        x, w = r(case["rows"], case["hidden"]), r(case["hidden"])
        rms_norm.rms_norm_forward(x, w, eps=1e-6, offset=case["offset"])
        rms_norm.rms_norm_backward(x, w, r(case["rows"], dtype=torch.float32), offset=case["offset"], dtype=dt)
    elif fam == "layer_norm":
        x, w = r(case["rows"], case["hidden"]), r(case["hidden"])
        layer_norm.layer_norm_forward(x, w, r(case["hidden"]), eps=1e-5)
        layer_norm.layer_norm_backward(x, w, r(case["rows"], dtype=torch.float32), dtype=dt)
    elif fam == "glu":
        a, u = r(case["numel"]), r(case["numel"])
        activations.glu_forward(a, u, activation=case["act"])
        activations.glu_backward(r(case["numel"]), a, u, activation=case["act"])
    else:
        x = r(case["numel"])
        activations.activation_forward(x, activation=case["act"])
        activations.activation_backward(r(case["numel"]), x, activation=case["act"])


@contextlib.contextmanager
def recording():
    """Replaces Triton's launch (autotuned and plain) by a recorder of (kernel, args, kwargs)."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction
    calls, saved = [], (Autotuner.run, JITFunction.run)

    def record(self, *args, **kwargs):
        grid, _ = kwargs.pop("grid", None), kwargs.pop("warmup", None)
        calls.append((self, args, kwargs, grid))
    Autotuner.run = JITFunction.run = record
    try:
        yield calls
    finally:
        Autotuner.run, JITFunction.run = saved


def launches(case):
    """[(kernel name, [(config label dict, JITFunction, args, kwargs incl. the config, traffic), ...])] of one
    case; traffic: the launch's programs (its grid for that config), elements (the largest tensor argument) and the bytes of
    its distinct tensor arguments (each read or written once: the minimum traffic)."""
    from triton.runtime.autotuner import Autotuner
    with recording() as calls:
        drive(case)
    out = []
    for obj, args, kwargs, grid in calls:
        tensors = {a.data_ptr(): a for a in args if hasattr(a, "data_ptr")}.values()
        traffic = dict(elements=max(t.numel() for t in tensors),
                       min_bytes=sum(t.numel() * t.element_size() for t in tensors))

        def programs(meta):
            g = grid(meta) if callable(grid) else grid
            return math.prod(g) if g is not None else None
        if isinstance(obj, Autotuner):
            obj.nargs = dict(zip(obj.arg_names, args))
            configs = obj.prune_configs(kwargs)  # the kernel's own early_config_prune: what can be chosen
            obj.nargs, fn = None, obj.fn
            while not hasattr(fn, "params"):  # (heuristics wrappers)
                fn = fn.fn
            binds = [(dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages), fn, args,
                      dict(kwargs, **c.all_kwargs()),
                      dict(traffic, programs=programs(dict(zip(obj.arg_names, args), **kwargs, **c.kwargs))))
                     for c in configs]
        else:  # a plain @triton.jit launch: Triton's default options
            fn, binds = obj, [({"plain launch": True}, obj, args, kwargs, dict(traffic, programs=programs({})))]
        out.append((fn.fn.__name__, binds))
    return out


_BACKEND = {}


def bind(fn, args, kwargs):
    """Triton's own binder for target sm_90a: (ASTSource, options, specialisation summary)."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    if "backend" not in _BACKEND:
        _BACKEND["target"] = GPUTarget("cuda", 90, 32)
        _BACKEND["backend"] = make_backend(_BACKEND["target"])
    backend = _BACKEND["backend"]
    kwargs = dict(kwargs, debug=kwargs.get("debug", fn.debug) or knobs.runtime.debug,
                  instrumentation_mode=knobs.compilation.instrumentation_mode,
                  fpsan_homomorphic_casts=knobs.compilation.fpsan_homomorphic_casts)  # as JITFunction.run
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
    src = ASTSource(fn, signature, constexprs, attrs)
    names = [p.name for p in fn.params]
    spec_summary = dict(
        ints_equal_1=[names[i[0]] for i in constexprs if not fn.params[i[0]].is_constexpr],
        divisible_16=[names[i[0]] for i, a in attrs.items() if any(x[0] == "tt.divisibility" for x in a)],
        use_tma=bool(kwargs.get("USE_TMA")))  # the launcher's choice: TMA tensor descriptors or pointer loads
    # the compile key: Triton's front-end IR (constexprs folded) + options, so that configs whose constexprs
    # differ without changing the code (SOFTCAP_IDENTITY without softcap: attnlrp and gradient) compile once
    from triton._C.libtriton import ir
    ctx = ir.context()
    ir.load_dialects(ctx)
    backend.load_dialects(ctx)
    module = src.make_ir(_BACKEND["target"], options, backend.get_codegen_implementation(options),
                         backend.get_module_map(), ctx)
    import triton
    key = hashlib.sha256((str(module) + options.hash() + triton.__version__ + ARTEFACTS).encode()).hexdigest()[:32]
    return src, options, spec_summary, key


# ----------------------------------------------------------------------------------------------
# Compiling and reading the results
# ----------------------------------------------------------------------------------------------
def tool(name):
    import triton
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def ptxas_version():
    from triton.backends.nvidia.compiler import get_ptxas
    path = get_ptxas(90).path
    return Path(path).name + ": " + subprocess.run([path, "--version"], capture_output=True,
                                                   text=True).stdout.strip().splitlines()[-1]


PRED = re.compile(r"^@!?U?P[T0-9]+\s+")


def parse_sass(text):
    """[(address, opcode, text with its predicate)] of the (single) function in cuobjdump -sass output."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            out.append((int(m.group(1), 16), PRED.sub("", m.group(2)).split()[0], m.group(2)))
    return out


def mma_fma_per_warp(op):
    """bf16 FMAs one warp's MMA instruction contributes: wgmma m x n x k is shared by 4 warps."""
    m = re.match(r"[HQ]GMMA\.(\d+)x(\d+)x(\d+)", op)
    if m:
        return int(m.group(1)) * int(m.group(2)) * int(m.group(3)) // 4
    m = re.match(r"HMMA\.(\d\d)(\d)(\d+)", op)
    return int(m.group(1)) * int(m.group(2)) * int(m.group(3)) if m else 0


def count(instrs):
    classes = collections.Counter(OPCLASS.get(op.split(".")[0], OPCLASS.get(op.split(".")[0][1:], "other"))
                                  if not op.startswith("MUFU") else ("mufu_ex2" if op.startswith("MUFU.EX2")
                                                                     else "mufu_other") for _, op, _ in instrs)
    fma = sum(mma_fma_per_warp(op) for _, op, _ in instrs)
    n = len(instrs)
    return dict(instructions=n, classes=dict(sorted(classes.items())), tensor_fma_per_warp=fma,
                issue_per_tensor=round(n * 512 / fma, 3) if fma else None,  # (n * warps / 4) / (fma * warps / 2048)
                mufu_per_tensor=round(classes["mufu_ex2"] * 4096 / fma, 3) if fma else None,
                wide_loads_128=sum(".128" in op and OPCLASS.get(op.split(".")[0]) == "load" for _, op, _ in instrs))


def dots_per_loop(ttir):
    """(tt.dot ops, their multiply-adds: the sum of M x N x K read off each dot's operand types, None if one
    is unreadable) per source loop that holds any (each tile run of a kernel is one scf.for with the same
    matmuls): the enclosing scf.for of a dot is the nearest one above it at a smaller indentation."""
    open_fors, owners, ndots, fma = [], set(), 0, 0
    for i, line in enumerate(ttir.splitlines()):
        indent = len(line) - len(line.lstrip())
        open_fors = [(j, d) for j, d in open_fors if d < indent or not line.strip().startswith("}")]
        if "scf.for" in line:
            open_fors.append((i, indent))
        elif "tt.dot " in line:
            ndots += 1
            mnk = re.search(r"tensor<(\d+)x(\d+)x[^>]*> \* tensor<\d+x(\d+)x", line)  # [M, K] * [K, N]
            fma = None if mnk is None or fma is None else fma + int(mnk[1]) * int(mnk[2]) * int(mnk[3])
            inside = [j for j, d in open_fors if d < indent]
            owners.add(inside[-1] if inside else -1)
    return ndots / max(1, len(owners)), fma and fma / max(1, len(owners))


def loops_of(instrs, step_fma, warps):
    """Loops = backward branches (target <= branch); counts per loop exclude nested loops' bodies.
    `step_fma`: the multiply-adds of one source loop step (`dots_per_loop`; 0: no dots)."""
    ends, fwd = {}, []
    for a, op, text in instrs:
        t = re.findall(r"0x[0-9a-f]+", text) if op.startswith("BRA") else []
        if t and int(t[-1], 16) < a:
            ends[int(t[-1], 16)] = max(a, ends.get(int(t[-1], 16), 0))  # several back edges: one loop
        elif t:
            fwd.append((a, int(t[-1], 16)))
    spans = sorted(ends.items())
    out = []
    for lo, hi in spans:
        inner = [s for s in spans if s != (lo, hi) and lo <= s[0] and s[1] <= hi]
        body = [x for x in instrs if lo <= x[0] <= hi and not any(s[0] <= x[0] <= s[1] for s in inner)]
        skip = {x[0] for x in body for b, t in fwd if lo <= b < x[0] < t <= hi + 16}
        loop = dict(start=hex(lo), end=hex(hi), depth=sum(s[0] <= lo and hi <= s[1] for s in spans) - 1,
                    nested_loops=len(inner), skippable_instructions=len(skip), **count(body))
        if step_fma and loop["tensor_fma_per_warp"]:
            loop["tile_iterations"] = round(loop["tensor_fma_per_warp"] * warps / step_fma, 3)
        out.append(loop)
    return out


def compile_one(job):
    """Compiles one (case, kernel, config) for sm_90a; returns the raw artefacts (what the cache keeps)."""
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    import triton
    from triton import knobs
    case, kname, ci = job
    _, fn, args, kwargs, _ = dict(launches_cached(case))[kname][ci]
    src, options, _, _ = bind(fn, args, kwargs)
    knobs.nvidia.dump_ptxas_log = True  # Triton prints the ptxas -v output of this very compile
    knobs.compilation.always_compile = True  # (so that it is never a Triton cache hit without a log)
    buf, t0 = io.StringIO(), time.time()
    try:
        with contextlib.redirect_stdout(buf):
            k = triton.compile(src, target=_BACKEND["target"], options=options.__dict__)
    except Exception as e:  # noqa: BLE001 - a config that does not compile is a finding, not a crash
        return dict(error=f"{type(e).__name__}: {str(e)[:300]}")
    compile_s = time.time() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(k.asm["cubin"])
        sass, res = (subprocess.run([tool("cuobjdump"), flag, str(cubin)], capture_output=True, text=True).stdout
                     for flag in ("-sass", "--dump-resource-usage"))
    ptx = k.asm["ptx"]
    return dict(compile_s=round(compile_s, 2), num_warps=k.metadata.num_warps, num_stages=k.metadata.num_stages,
                shared_bytes=k.metadata.shared,
                ptxas_log=[ln.strip() for ln in buf.getvalue().splitlines() if ln.strip()],
                resources=res.strip().splitlines()[-1].strip(), ptx_wgmma=ptx.count("wgmma.mma_async"),
                ptx_mma_sync=ptx.count("mma.sync"), dots_in_ttir=k.asm["ttir"].count("tt.dot "),
                **dict(zip(("dots_per_ttir_loop", "dot_fma_per_ttir_loop"), dots_per_loop(k.asm["ttir"]))),
                sass=[f"{a:x} {t}" for a, _, t in parse_sass(sass)])


def global_bytes(op):
    """Bytes one thread moves with one global load / store (LDG / STG: width from the opcode suffix), else 0."""
    if not op.startswith(("LDG", "STG")):
        return 0
    width = re.search(r"\.(128|64|U16|S16|16|U8|S8)\b", op)
    return {"128": 16, "64": 8, "U8": 1, "S8": 1}.get(width.group(1), 2) if width else 4


def memory_traffic(r):
    """Norm / GLU / activation rows: global bytes moved per element (SASS LDG / STG widths x threads x programs,
    a loop-free kernel only: a loop's trip count is not static) against the minimum (every tensor argument read or
    written once)."""
    res, t = r["result"], r["traffic"]
    if r["family"] == "attention" or "error" in res:
        return
    t["min_bytes_per_element"] = round(t["min_bytes"] / t["elements"], 3)
    if res["loops"] or not t.get("programs"):
        t["bytes_per_element"] = None
        t["why_none"] = "the kernel loops (trip count not static)" if res["loops"] else "no grid recorded"
        return
    moved = res["global_bytes_per_thread"] * res["num_warps"] * 32 * t["programs"]
    t["bytes_per_element"] = round(moved / t["elements"], 3)
    t["over_minimum"] = round(moved / t["min_bytes"], 3)


def analyse(art, tile):
    """Every figure of one compile, from its artefacts; tile = BLOCK_M * BLOCK_N * BLOCK_D (0: none)."""
    if "error" in art:
        return dict(error=art["error"])
    log = "\n".join(art["ptxas_log"])

    def grab(pat):
        m = re.search(pat, log)
        return int(m.group(1)) if m else None
    instrs = [(int(a, 16), PRED.sub("", t).split()[0], t) for a, t in (x.split(" ", 1) for x in art["sass"])]
    ops = collections.Counter(op.split(".")[0] for _, op, _ in instrs)
    mma = "wgmma (HGMMA)" if ops["HGMMA"] else "mma.sync (HMMA)" if ops["HMMA"] else None
    regs, warps, shared = grab(r"Used (\d+) registers"), art["num_warps"], art["shared_bytes"]
    regs_per_warp = -(-regs * 32 // SM90["reg_alloc_unit_per_warp"]) * SM90["reg_alloc_unit_per_warp"]
    max_threads = min(SM90["max_threads_per_block"], SM90["regs_per_sm"] // regs_per_warp * 32)
    launchable = shared <= SM90["max_shared_per_block"] and warps * 32 <= max_threads
    ctas = min(SM90["max_ctas_per_sm"], SM90["max_warps_per_sm"] // warps,
               SM90["regs_per_sm"] // (regs_per_warp * warps),
               SM90["shared_per_sm"] // (shared + SM90["reserved_shared_per_block"])) if launchable else 0
    # (artefacts cached before dot_fma_per_ttir_loop: BLOCK_D for every dot, right where D = D_v; `stale` recompiles
    # the others)
    loops = loops_of(instrs, art.get("dot_fma_per_ttir_loop") or art["dots_per_ttir_loop"] * tile, warps)
    # hot loop: the most tensor-core work per iteration, the innermost, then the SHORTEST such loop: the
    # kernels walk each tile range in a masked boundary run and an unmasked interior run of the same
    # matmuls, and the interior run is the one that executes all but one or two tiles per block
    hot = max(range(len(loops)), key=lambda i: (loops[i]["tensor_fma_per_warp"], loops[i]["depth"],
                                                 -loops[i]["instructions"]), default=None)
    boundary = max(range(len(loops)), key=lambda i: (loops[i]["tensor_fma_per_warp"], loops[i]["depth"],
                                                      loops[i]["instructions"]), default=None)
    if hot is not None:
        body = [x for x in instrs if int(loops[hot]["start"], 16) <= x[0] <= int(loops[hot]["end"], 16)]
        loops[hot]["opcodes"] = dict(collections.Counter(op for _, op, _ in body).most_common())
    return dict(
        compile_s=art["compile_s"], num_warps=warps, num_stages=art["num_stages"], registers=regs,
        spill_store_bytes=grab(r"(\d+) bytes spill stores"), spill_load_bytes=grab(r"(\d+) bytes spill loads"),
        stack_frame_bytes=grab(r"(\d+) bytes stack frame"), shared_bytes=shared, cuobjdump_resources=art["resources"],
        launchable=launchable, max_threads_by_registers=max_threads, ctas_per_sm=ctas, mma_kind=mma,
        ptx_wgmma=art["ptx_wgmma"], ptx_mma_sync=art["ptx_mma_sync"], dots_in_ttir=art["dots_in_ttir"],
        step_fma=art.get("dot_fma_per_ttir_loop"),
        sass_instructions=len(instrs), whole_kernel=count(instrs), loops=loops, hot_loop=hot,
        global_bytes_per_thread=sum(global_bytes(op) for _, op, _ in instrs),
        boundary_loop=boundary if boundary != hot else None,
        ptxas_log=[ln for ln in art["ptxas_log"] if "registers" in ln or "stack frame" in ln])


_LAUNCHES = {}


def launches_cached(case):
    key = json.dumps(case, sort_keys=True)
    if key not in _LAUNCHES:
        _LAUNCHES[key] = launches(case)
    return _LAUNCHES[key]


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def cfg_label(r):
    cfg, res = r["config"], r["result"]
    parts = [f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']}"] if "BLOCK_M" in cfg else []
    parts += [f"BLOCK {cfg['BLOCK']}"] if "BLOCK" in cfg else []
    parts += ["plain"] if cfg.get("plain launch") else []
    parts += ["TMA"] if r.get("specialisation", {}).get("use_tma") else []
    parts += [f"w{res.get('num_warps', cfg.get('num_warps'))}", f"s{res.get('num_stages', cfg.get('num_stages'))}"]
    return " ".join(parts)


def case_label(case):
    f = case["family"]
    if f == "attention":
        return f"D{case['D']}" + (f"/Dv{case['Dv']}" if "Dv" in case else "") + \
            f" {'causal' if case['causal'] else 'full'}" + \
            (f" GQA {case['H']}/{case['Hkv']}" if case["H"] != case["Hkv"] else "") + (" sinks" if case.get("sinks") else "") + \
            (f" prefix {case['prefix']} as {case['mask']}" if "prefix" in case else "")
    if f.endswith("norm"):
        return f"hidden {case['hidden']}" + (" gemma" if case.get("offset") else "")
    return f"{case['act']} numel {case['numel']}"


def fmt(x, nd=2):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def row_cells(r, att):
    c = r.get("result", {})
    if "error" in c:
        return [c["error"][:80]]
    h = hot(r)
    k = collections.Counter(h["classes"])
    cells = [fmt(c["registers"]), f"{c['spill_store_bytes']}/{c['spill_load_bytes']}",
             f"{c['shared_bytes'] / 1024:.1f}", "yes" if c["launchable"] else "**no**"]
    if att:
        cells += [c["mma_kind"] or "none"]
    cells += [("loop " if c.get("hot_loop") is not None else "kernel ") + str(h["instructions"])
              + (f" ({h['skippable_instructions']} skippable)" if h.get("skippable_instructions") else "")]
    if att:
        cells += [str(k["mma"]), str(k["mufu_ex2"])]
    cells += [str(k["ffma"]), str(k["fmul"]), str(k["fadd"]), str(k["select"]), str(k["int_addr"]),
              str(k["predicate"]), f"{k['load']} ({h['wide_loads_128']})", str(k["local"])]
    if att:
        cells += [fmt(h.get("issue_per_tensor")), fmt(h.get("mufu_per_tensor")), fmt(h.get("tile_iterations"))]
    return cells


def hot(r):
    c = r["result"]
    return c["loops"][c["hot_loop"]] if c.get("hot_loop") is not None else c["whole_kernel"]


def ratio(r):
    return hot(r).get("issue_per_tensor") if "error" not in r["result"] else None


def best_key(r):
    """Best launchable config: no spills first, then the lowest hot-loop issue/tensor ratio."""
    return (r["result"]["spill_store_bytes"] > 0, ratio(r))


def markdown(report):
    env, rows = report["environment"], report["rows"]
    att = [r for r in rows if r["family"] == "attention"]
    head = ("| kernel | case | modes | config | regs | spill st/ld B | smem KiB | launch | MMA | hot instr | MMA | EX2 | "
            "FFMA | FMUL | FADD | select | int/addr | pred | loads (128-bit) | LDL/STL | issue/tensor | MUFU/tensor "
            "| tiles/iter |")

    def table(rs, hd, att_cols, label=None):
        out = [hd, "|" + "---|" * (hd.count("|") - 1)]
        for r in rs:
            out.append("| " + " | ".join([NAMES.get(r["kernel"], r["kernel"]), " / ".join(r["cases"]),
                                          label(r) if label else ", ".join(r["modes"]), cfg_label(r)]
                                         + row_cells(r, att_cols)) + " |")
        return out
    L = [f"# Static kernel report ({KIND})", "",
         f"Every Triton kernel of lrp_triton compiled for sm_90a (GPUTarget(\"cuda\", 90, 32)) on a machine without a "
         f"GPU; nothing was run. {env['utc_date']}, triton {env['triton']}, {env['ptxas']}, torch {env['torch']}.",
         "", f"Command: `{env['command']}` ({report['wall_s']:.0f} s wall, {report['jobs']} jobs on {env['cpus']} "
         f"CPUs; {report['compiled']} compiled, {report['cached']} from the cache).", "",
         "## How the figures are derived", ""]
    L += [f"- {k}: {v}" for k, v in report["conventions"].items()]
    L += ["", "## Findings (attention, every case, mode and config)", ""]
    L += [f"- {k}: {v}" for k, v in report["summary"].items()]
    L += ["", "## Per kernel and case (AttnLRP): first-listed config and best launchable config", "",
          "First-listed = the first config of the kernel's autotune list that its pruning keeps (what `--quick` "
          "compiles); best = the launchable config with the lowest hot-loop issue/tensor ratio (configs that spill "
          "only when every launchable one does).", "",
          "| kernel | case | first config | regs | spill B | smem KiB | launch | MMA | issue/tensor | best config | regs "
          "| spill B | MMA | issue/tensor |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["kernel"], r["cases"][0]) for r in att if "attnlrp" in r["modes"])
    for kname, cl in keys:
        rs = [r for r in att if r["kernel"] == kname and r["cases"][0] == cl and "attnlrp" in r["modes"]
              and "error" not in r["result"]]
        ok = [r for r in rs if r["result"]["launchable"] and ratio(r) is not None]
        if not rs:
            continue
        cells = []
        for i, r in enumerate((rs[0], min(ok, key=best_key) if ok and len(rs) > 1 else None)):
            c = (r or {}).get("result", {})
            cells += [cfg_label(r), fmt(c["registers"]), str(c["spill_store_bytes"])] if r else ["-", "-", "-"]
            cells += [f"{c['shared_bytes'] / 1024:.1f}", "yes" if c["launchable"] else "**no**"] if i == 0 else []
            cells += [c.get("mma_kind") or "none", fmt(ratio(r))] if r else ["-", "-"]
        L.append(f"| {NAMES.get(kname, kname)} | {cl} | " + " | ".join(cells) + " |")
    first = [r for r in att if "D128 causal" in r["cases"] and "attnlrp" in r["modes"]]
    L += ["", "## D = 128, causal, bf16, AttnLRP: first-listed and best launchable config of each kernel", ""]
    pick = []
    for kname in dict.fromkeys(r["kernel"] for r in first):
        rs = [r for r in first if r["kernel"] == kname and "error" not in r["result"]]
        pick += [dict(rs[0], pick="first listed")] if rs else []
        ok = [r for r in rs if r["result"]["launchable"] and ratio(r) is not None]
        if len(rs) > 1 and ok:
            pick.append(dict(min(ok, key=best_key), pick="best launchable"))
    L += table(pick, head.replace("| modes |", "| pick |"), True, label=lambda r: r["pick"])
    L += ["", "## Attention: every case, mode and config (one row per distinct compile)", ""]
    L += table(att, head, True)
    L += ["", "## Norm, GLU and activation kernels (memory-bound: no tensor-core ratio)", "",
          "Hot = the loop with the most instructions, or the whole kernel when it has no loop. These kernels are "
          "used by every mode that applies their rule.", ""]
    hd2 = ("| kernel | case | bytes / element (min) | config | regs | spill st/ld B | smem KiB | launch | hot instr | FFMA "
           "| FMUL | FADD | select | int/addr | pred | loads (128-bit) | LDL/STL |")
    L += table([r for r in rows if r["family"] != "attention"], hd2, False, label=lambda r: (
        f"{fmt(r['traffic'].get('bytes_per_element'))} ({fmt(r['traffic'].get('min_bytes_per_element'))})"))
    return "\n".join(L) + "\n"


def conventions():
    return {
        "binding": "each launcher ran on small CPU tensors with Triton's Autotuner.run / JITFunction.run replaced by "
                   "a recorder; each config kept by the kernel's own prune_configs was bound by Triton's own binder "
                   "(create_function_from_signature + JITFunction._pack_args, as JITFunction.run does), so ints equal "
                   "to 1 became constexprs and 16-divisible ints / 16-byte-aligned pointers got tt.divisibility=16 "
                   "exactly as on a launch (JSON: specialisation). Shapes: attention B 2, H 16 (D 128) / 32 (D 64), "
                   "N = M = 512, contiguous [B, H, N, D]; norms 64 rows; any length that is a multiple of 16 "
                   "specialises alike. The pruning is sm_90's (LRP_TRITON_TARGET_ARCH=90: the kernels' per-"
                   "architecture autotune lists) unless --all-configs",
        "registers, spills, stack": "ptxas -v output of this compile (Triton's own ptxas call, its log captured); "
                                    "cuobjdump --dump-resource-usage recorded beside it",
        "shared memory": "metadata.shared, the dynamic shared memory Triton requests at launch",
        "launchable": f"shared <= {SM90['max_shared_per_block']} B (227 KiB, sm_90 opt-in per block) and "
                      "num_warps*32 <= the threads the register count allows (65536 registers per SM, allocated "
                      "per warp in units of 256); Triton raises OutOfResources at launch otherwise",
        "ctas_per_sm": "resident blocks per SM from registers, shared memory (+1 KiB reserved per block), warps",
        "TMA": "config label 'TMA': the launcher chose TMA tensor descriptors (tl.make_tensor_descriptor) for the Q / "
               "K / V / dO tiles, as on sm_90 (lrp_triton.kernels.attention_tiles.tma_allowed); pointer loads otherwise",
        "MMA kind": "HGMMA in the SASS = Hopper warpgroup MMA (wgmma); HMMA = mma.sync; PTX counts recorded too",
        "loops": "backward branches in cuobjdump -sass (branch target <= branch address); a loop's counts are its "
                 "static instructions from target to branch, nested loops excluded, every instruction once; "
                 "skippable_instructions = those a forward branch inside the loop can jump over (then the count "
                 "is an upper bound on one iteration). Hot loop = the loop with the most tensor-core FMAs per "
                 "iteration, innermost, and of those the shortest: the unmasked interior run, which executes all "
                 "but the one or two boundary tiles of each block (JSON: boundary_loop = the longest such loop, "
                 "the masked boundary run); else the longest loop",
        "classes": "by SASS opcode: " + "; ".join(f"{c}: {ops}" for c, ops in CLASSES.items()) + "; mufu_ex2: "
                   "MUFU.EX2; mufu_other: other MUFU; uniform (U-prefixed) ops join their class; the rest: other",
        "issue/tensor": "issue clocks / tensor-core clocks per loop iteration per SM: issue = instructions x warps "
                        "/ 4 sub-partitions (one instruction per clock each); tensor = bf16 FMAs / 2048 per clock "
                        "(HGMMA mxnxk counted once per warpgroup, HMMA m16n8k16 per warp). Above 1 the loop cannot "
                        "keep the tensor cores busy. HMMA does not reach the wgmma rate on sm_90, so its ratio is "
                        "optimistic",
        "MUFU/tensor": "MUFU.EX2 pipe clocks (16 per clock per SM) / tensor-core clocks, same iteration",
        "tiles/iter": "SASS tensor FMAs per loop iteration / the multiply-adds of one step of its source loop (the "
                      "sum over the TTIR loop's tt.dot ops of M x N x K: BLOCK_D or BLOCK_DV deep, D_v != D in MLA): "
                      "1.0 means one SASS iteration is one tile step of its source loop",
        "bytes / element": "norm, GLU, activation kernels: global bytes one launch moves (per thread: the widths of "
                           "its SASS LDG / STG, x threads x programs of the grid) / the elements of its largest tensor; "
                           "(min): every tensor argument read or written once, same unit. Loop-free kernels only (a "
                           "loop's trip count is not static); masked lanes count as moved, so it is an upper bound",
        "not measured": "no timing, no occupancy effects beyond ctas_per_sm, no latency or dependency model: "
                        "static counts only",
    }


def summarise(rows):
    """Counts over distinct attention compiles, each followed by the compiles it counts."""
    att = [r for r in rows if r["family"] == "attention" and "error" not in r["result"]]

    def which(pred):
        hit = [r for r in att if pred(r["result"])]
        names = collections.Counter(f"{NAMES[r['kernel']]} {cfg_label(r)}" for r in hit)
        return f"{len(hit)}" + (" (" + "; ".join(f"{k} x{n}" for k, n in names.items()) + ")" if hit else "")
    ratios = [ratio(r) for r in att if ratio(r) is not None]
    return {
        "distinct attention compiles": str(len(att)),
        "cannot launch": which(lambda a: not a["launchable"]),
        "launchable and spilling": which(lambda a: a["launchable"] and a["spill_store_bytes"] > 0),
        "on HMMA (mma.sync)": which(lambda a: a["mma_kind"] == "mma.sync (HMMA)"),
        "on HGMMA (wgmma)": str(sum(r["result"]["mma_kind"] == "wgmma (HGMMA)" for r in att)),
        "hot-loop issue/tensor range": f"{min(ratios):.2f} .. {max(ratios):.2f}" if ratios else "-",
        "did not compile": str(sum("error" in r["result"] for r in rows)),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="D 128 causal AttnLRP and one case per other kernel, "
                   "first config of each kernel only")
    p.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="compile processes")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--cache", default=os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                   "lrp_triton", "kernel_report"))
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--all-configs", action="store_true", help="every autotune config, not only those sm_90 keeps")
    p.add_argument("--only", action="append", default=[], metavar="TEXT", help="only the cases whose label holds "
                   "TEXT (repeatable; e.g. 'prefix'); written as <stem>_subset")
    a = p.parse_args(argv)
    t0 = time.time()
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    import torch
    import triton
    cache = None if a.no_cache else Path(a.cache)
    cache and cache.mkdir(parents=True, exist_ok=True)
    rows, jobs, mixed = [], {}, set()
    for case in (c for c in cases(a.quick) if not a.only or any(t in case_label(c) for t in a.only)):
        for kname, binds in launches_cached(case):
            for ci, (cfg, fn, args, kwargs, traffic) in enumerate(binds[:1] if a.quick else binds):
                *_, spec, key = bind(fn, args, kwargs)
                same = [r for r in rows if r["key"] == key]
                if same:  # e.g. the forward of every mode: one compile, one row listing the modes and cases
                    same[0]["modes"] = list(dict.fromkeys(same[0]["modes"] + [case.get("mode", "-")]))
                    same[0]["cases"] = list(dict.fromkeys(same[0]["cases"] + [case_label(case)]))
                    continue
                tile = kwargs.get("BLOCK_M", 0) * kwargs.get("BLOCK_N", 0) * kwargs.get("BLOCK_D", 0)
                rows.append(dict(kernel=kname, family=case["family"], case=case, cases=[case_label(case)],
                                 config=cfg, config_index=ci, modes=[case.get("mode", "-")], key=key, tile=tile,
                                 specialisation=spec, traffic=traffic))
                jobs.setdefault(key, (case, kname, ci))
                if kwargs.get("BLOCK_DV", 0) not in (0, kwargs.get("BLOCK_D")):
                    mixed.add(key)  # D_v != D: its cached artefacts need dot_fma_per_ttir_loop (see analyse)
    arts, n_cached = {}, 0
    for key in list(jobs):
        f = cache / f"{key}.json.gz" if cache else None
        art = json.loads(gzip.decompress(f.read_bytes())) if f and f.exists() else None
        if art is not None and (key not in mixed or "dot_fma_per_ttir_loop" in art):
            arts[key], n_cached = art, n_cached + 1
            del jobs[key]
    print(f"{len(rows)} rows, {len(jobs)} to compile, {n_cached} cached, {a.jobs} jobs", flush=True)
    with cf.ProcessPoolExecutor(max_workers=max(1, a.jobs), mp_context=multiprocessing.get_context("spawn")) as ex:
        futs = {ex.submit(compile_one, job): key for key, job in jobs.items()}
        for i, fut in enumerate(cf.as_completed(futs), 1):
            key = futs[fut]
            arts[key] = fut.result()
            if cache and "error" not in arts[key]:
                (cache / f"{key}.json.gz").write_bytes(gzip.compress(json.dumps(arts[key]).encode()))
            c, kname, ci = jobs[key]
            print(f"[{i}/{len(jobs)}] {kname} {case_label(c)} config {ci}: "
                  f"{arts[key].get('compile_s', arts[key].get('error'))} s", flush=True)
    for r in rows:
        r["result"] = analyse(arts[r["key"]], r["tile"])
        memory_traffic(r)
    from triton.runtime.autotuner import Autotuner

    from lrp_triton import kernels
    autotuned = {name for m in pkgutil.iter_modules(kernels.__path__)
                 for name, obj in vars(importlib.import_module(f"lrp_triton.kernels.{m.name}")).items()
                 if isinstance(obj, Autotuner)}
    report = dict(
        kind=KIND, target='GPUTarget("cuda", 90, 32) -> sm_90a', quick=a.quick,
        environment=dict(utc_date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                         triton=triton.__version__, torch=torch.__version__, ptxas=ptxas_version(),
                         python=platform.python_version(), cpus=os.cpu_count(),
                         command="python bench/kernel_report.py " + " ".join(sys.argv[1:] if argv is None else argv)),
        conventions=conventions(), sm90=SM90, jobs=a.jobs, compiled=len(jobs), cached=n_cached,
        unique_compiles=len(arts), wall_s=round(time.time() - t0, 1),
        kernels=sorted({r["kernel"] for r in rows}),
        uncovered_autotuned_kernels=sorted(autotuned - {r["kernel"] for r in rows}),
        summary=summarise(rows), rows=rows)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = STEM + ("_quick" if a.quick else "") + ("_subset" if a.only else "")
    head = json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1)[:-2]  # one row per line:
    (out / f"{stem}.json").write_text(head + ',\n "rows": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n ]\n}\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {out / stem}.json and .md in {report['wall_s']} s; summary: {report['summary']}")
    if report["uncovered_autotuned_kernels"] and not a.only:
        print("kernels no case reaches:", report["uncovered_autotuned_kernels"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
