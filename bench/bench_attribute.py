#!/usr/bin/env python
"""End-to-end attribution: `lrp_triton.attribute` on Llama-3.1-8B- and Llama-3.2-1B-shaped models (random
bf16 weights built on the GPU, batch 1, random ids; the explained logit is the model's top prediction at the
last position) against the plain forward, a plain forward+backward and the same AttnLRP rules in PyTorch
around SDPA (lxt's method), with and without checkpoint=True; N = 1k ... --max-n by powers of two; then the
longest context per method (doubling, then bisection). See METHODS / DEFINITIONS.

  python bench/bench_attribute.py [--quick] [--model 1b|8b|both] [--max-n N] [--no-search] [--out DIR]
  python bench/bench_attribute.py --cpu-smoke     # CPU: tiny model; the pipeline, and ref_sdpa vs attribute
  python bench/bench_attribute.py --cpu           # CPU figures (marked CPU): the CPU default vs the same methods
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402

SCRIPT = "bench_attribute"
BUDGETS = (440.0, 150.0)
N_8K, N_128K = 8192, 131072
DEFINITIONS = {
    "forward": "(a) plain forward, no grad: h = model.model(input_ids=ids, use_cache=False)[0]; "
               "model.lm_head(h[:, -1]); HF attention 'sdpa'",
    "gradient": "(b) plain forward + backward to the input embeddings (SDPA, exact gradients): e = embed(ids) as a "
                "leaf, logits = lm_head(model.model(inputs_embeds=e)[0][:, -1]), g = autograd.grad(logit of the "
                "argmax, e), relevance (e * g).sum(-1); parameters frozen",
    "ref_sdpa": "(c) lxt's method: lrp_triton.apply(model, 'attnlrp', backend='torch') swaps RMSNorm and the MLP for "
                "lrp_triton's pure-PyTorch LRP ops (no Triton anywhere) and the attention implementation for "
                f"'{common.REF_ATTENTION}': lrp_triton.attention_interface.sdpa_attention_interface, i.e. "
                "F.scaled_dot_product_attention(is_causal=True, enable_gqa=True) behind identity-forward Functions "
                "scaling the gradients of q, k, v by 1/4, 1/4, 1/2 (after RoPE; backend picked by torch); then the "
                "same lrp_triton.attribute driver (backend='torch'). Not attribute(backend='torch') alone: its "
                "attention materialises chunked scores in PyTorch",
    "ref_sdpa+ckpt": "(c) with checkpoint=True (each decoder layer recomputed in the backward)",
    "lrp_triton": "lrp_triton.attribute(model, ids, mode='attnlrp', backend='triton'): Triton attention, RMSNorm and "
                  "gated-MLP kernels",
    "lrp_triton+ckpt": "lrp_triton.attribute(..., checkpoint=True)",
}
CONVENTIONS = {
    "time": "CUDA-event time of whole calls after a first call (compilation); Triton methods first autotune the "
            "attention kernels at each new length with one standalone lrp_attention forward+backward; a first call "
            ">= 4 s is itself the figure, one >= 0.5 s is followed by 2 timed calls, else ~300 ms of repeats",
    "memory": "call_peak_MiB: peak allocated during the timed calls above what was allocated before (weights, ids, "
              "the L2-flush buffer not counted); call_peak_total_MiB: absolute, weights included",
    "oom": "status 'oom'; a method that ran out of memory is not tried at larger N of the same model",
    "search": "longest context per method: from the sweep's largest fit and smallest oom, doubling (capped), then "
              "bisection on multiples of the granularity; one call per probe; stops when the budget is spent",
    "agreement": "lrp_triton vs ref_sdpa relevance from their first calls, every N (bf16: rounding differs)",
}
GOALS = {"attr_vs_forward": "lrp_triton time <= 2.2 x forward time (same N)",
         "attr_vs_ref_time_8k": "lrp_triton time <= 0.6 x ref_sdpa time at 8k", "attr_vs_ref_mem_8k":
         "lrp_triton peak memory <= 0.5 x ref_sdpa at 8k", "8b_at_128k": "8B attributed at 131072 tokens"}
_ROPE = dict(rope_type="llama3", rope_theta=500000.0, low_freq_factor=1.0, high_freq_factor=4.0,
             original_max_position_embeddings=8192)
MODEL_SPECS = {
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
               rope_parameters=dict(_ROPE, factor=32.0)),
    "8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
               rope_parameters=dict(_ROPE, factor=8.0)),
    "tiny": dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
                 rope_parameters=dict(_ROPE, factor=8.0, original_max_position_embeddings=16)),  # CPU smoke
}
# Qwen3-30B-A3B's widths (128 experts, top 8, expert MLP 768, normalised top-k), 12 of its 48 layers (about 7.6B
# parameters, 14 GiB in bf16); "moe-tiny": the CPU smoke's
MODEL_SPECS["moe"] = dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                          num_hidden_layers=12, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                          moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                          tie_word_embeddings=False, rope_parameters=dict(rope_type="default", rope_theta=1e6))
MODEL_SPECS["moe-tiny"] = dict(MODEL_SPECS["moe"], vocab_size=101, hidden_size=64, intermediate_size=96,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                               moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2)
MODEL_SPECS["cpu512"] = dict(MODEL_SPECS["1b"], vocab_size=32000, hidden_size=512, intermediate_size=1536,
                             num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False)
MODEL_SPECS["cpu1024"] = dict(MODEL_SPECS["cpu512"], hidden_size=1024, intermediate_size=2816, num_attention_heads=16)
METHOD_NAMES = ("forward", "lrp_triton", "lrp_triton+ckpt", "gradient", "ref_sdpa", "ref_sdpa+ckpt")  # order per N
MOE_METHODS = ("forward", "lrp_triton", "gradient", "ref_sdpa")
MODELS = ("1b", "8b", "moe")
SEARCH_METHODS = ("gradient", "ref_sdpa", "lrp_triton", "lrp_triton+ckpt", "ref_sdpa+ckpt")  # cheap first


def build_model(key, device, dtype, max_positions, **init):
    import transformers

    spec = dict(MODEL_SPECS[key])
    config = transformers.AutoConfig.for_model(spec.pop("model_type", "llama"), **spec, rms_norm_eps=1e-5,
                                               max_position_embeddings=max_positions, attention_bias=False,
                                               mlp_bias=False)
    return common.random_model(transformers.AutoModelForCausalLM, config, device, dtype, **init)


def make_ids(vocab, n, device, seed=0):
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed)).to(device)


def run_method(method, model, ids, backend):
    """One whole call; the relevance [1, N] (None for the forward)."""
    import lrp_triton

    if method == "forward":
        with torch.no_grad():
            model.lm_head(model.model(input_ids=ids, use_cache=False)[0][:, -1])
        return None
    if method == "gradient":
        e = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.lm_head(model.model(inputs_embeds=e, use_cache=False)[0][:, -1])
            (g,) = torch.autograd.grad(logits.gather(-1, logits.detach().argmax(-1, keepdim=True)).sum(), e)
        return (e.float() * g.float()).sum(-1)
    ckpt = method.endswith("+ckpt")
    if method.startswith("ref_sdpa"):
        with common.ref_applied(model):
            return lrp_triton.attribute(model, ids, mode="attnlrp", backend="torch", checkpoint=ckpt).relevance
    return lrp_triton.attribute(model, ids, mode="attnlrp", backend=backend, checkpoint=ckpt).relevance


class Bench:
    """The methods table over a model cache; the Triton attention pre-tuning per length bucket."""

    def __init__(self, device, dtype, backend, max_positions, init=None):
        self.device, self.backend, self.tuned = device, backend, set()
        self.models = common.Models(lambda key: build_model(key, device, dtype, max_positions, **(init or {})))
        self.methods = {m: self.builder(m) for m in METHOD_NAMES}

    def prewarm(self, key, n):
        """One standalone lrp_attention forward+backward at n with the model's head layout (autotunes n's bucket)."""
        bucket = min(1 << (n - 1).bit_length(), 16384)
        if self.device != "cuda" or self.backend != "triton" or (key, bucket) in self.tuned:
            return
        from lrp_triton.ops import lrp_attention

        s = MODEL_SPECS[key]
        q, k, v = (torch.randn(1, h, n, s["head_dim"], device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for h in (s["num_attention_heads"], s["num_key_value_heads"], s["num_key_value_heads"]))
        out = lrp_attention(q, k, v, causal=True, mode="attnlrp", backend="triton")
        torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
        self.tuned.add((key, bucket))

    def builder(self, method):
        def build(case):
            model = self.models.get(case["model"])
            ids = make_ids(model.config.vocab_size, case["N"], self.device)
            prep = (lambda: self.prewarm(case["model"], case["N"])) if method.startswith("lrp_triton") else None
            return dict(phases={"call": (prep, lambda: run_method(method, model, ids, self.backend))}, note=
                        self.backend if method.startswith("lrp_triton") else None)
        return build


def methods_of(key):
    return MOE_METHODS if key.startswith("moe") else METHOD_NAMES


def sweep_cases(key, ns, methods=METHOD_NAMES):
    return [dict(label=f"{key}/N={n}", model=key, N=n, series=key, size=n, methods=list(methods)) for n in ns]


def search(run, bench, key, method, granularity, cap):
    """Longest N that `method` attributes on `key` (doubling, then bisection on multiples of granularity)."""
    rows = [r for r in run.rows if r["model"] == key and r["method"] == method]
    lo = max([r["N"] for r in rows if r["status"] == "ok"], default=None)
    hi = min([r["N"] for r in rows if r["status"] == "oom" and (lo is None or r["N"] > lo)], default=None)
    rec = dict(model=key, method=method, granularity=granularity, cap=cap, probes=[], stopped=None)
    run.extra.setdefault("searches", []).append(rec)
    while rec["stopped"] is None:
        known = lo or 0
        if hi is None and known >= cap:
            rec["stopped"] = "fits at the cap"
            break
        n = (min(2 * known, cap) if known else granularity) if hi is None else \
            max(((known + hi) // 2) // granularity * granularity, known + granularity)
        if hi is not None and (hi - known <= granularity or n >= hi):
            rec["stopped"] = "converged" if known else "nothing fits at the smallest length"
            break
        if run.left() <= 0:
            rec["stopped"] = f"budget spent (next probe N={n})"
            break
        probe = dict(N=n)
        try:
            job = bench.methods[method](dict(model=key, N=n))
            prep, fn = job["phases"]["call"]
            if prep:
                prep()
            res, _ = run.time_phase(fn, once=True)
            probe.update(status="ok", probe_s=res["ms"] / 1e3, peak_MiB=res.get("peak_MiB"))
            lo = n
        except Exception as e:  # noqa: BLE001
            probe["status"] = "oom" if common.is_oom(e) else common.short_error(e)
        job = None
        common.free_cuda()
        rec["probes"].append(probe)
        run.log(f"{key} {method} probe N={n}: {probe['status']}")
        if probe["status"] == "oom":
            hi = n
            run.oom_at[(key, method)] = min(run.oom_at.get((key, method), n), n)
        elif probe["status"] != "ok":
            rec["stopped"] = f"probe failed: {probe['status']}"
    rec.update(longest_fit=lo, first_oom=hi)
    run.write()


def tables(run):
    ratios, goals = [], []
    pairs = dict(lrp_over_fwd=("lrp_triton", "forward"), lrp_ckpt_over_fwd=("lrp_triton+ckpt", "forward"),
                 grad_over_fwd=("gradient", "forward"), lrp_over_ref_time=("lrp_triton", "ref_sdpa"),
                 lrp_ckpt_over_ref_ckpt_time=("lrp_triton+ckpt", "ref_sdpa+ckpt"))
    for key, n in dict.fromkeys((r["model"], r["N"]) for r in run.rows):
        ok = {m: run.ok(m, model=key, N=n) for m in METHOD_NAMES}
        t = {m: r and r["call_ms"] for m, r in ok.items()}
        mem = {m: r and r.get("call_peak_MiB") for m, r in ok.items()}
        row = dict(model=key, N=n, forward_ms=t["forward"], lrp_ms=t["lrp_triton"], lrp_ckpt_ms=t["lrp_triton+ckpt"],
                   ref_ms=t["ref_sdpa"], **{k: t[a] / t[b] if t[a] and t[b] else None for k, (a, b) in pairs.items()},
                   lrp_over_ref_mem=mem["lrp_triton"] / mem["ref_sdpa"] if mem["lrp_triton"] and mem["ref_sdpa"] else None,
                   lrp_ckpt_over_ref_ckpt_mem=mem["lrp_triton+ckpt"] / mem["ref_sdpa+ckpt"]
                   if mem["lrp_triton+ckpt"] and mem["ref_sdpa+ckpt"] else None,
                   lrp_mem_GiB=mem["lrp_triton"] and mem["lrp_triton"] / 1024,
                   ref_mem_GiB=mem["ref_sdpa"] and mem["ref_sdpa"] / 1024)
        ratios.append(row)
        if row["lrp_over_fwd"] is not None:
            goals.append(dict(goal="attr_vs_forward", model=key, N=n, value=row["lrp_over_fwd"], target="<= 2.2",
                              met=row["lrp_over_fwd"] <= 2.2))
        if n == N_8K:
            ref_status = next((r["status"] for r in run.rows if r["model"] == key and r["N"] == n
                               and r["method"] == "ref_sdpa"), "not run")
            for goal, v, target in (("attr_vs_ref_time_8k", row["lrp_over_ref_time"], 0.6),
                                    ("attr_vs_ref_mem_8k", row["lrp_over_ref_mem"], 0.5)):
                met = v <= target if v is not None else (True if ok["lrp_triton"] and ref_status == "oom" else None)
                goals.append(dict(goal=goal, model=key, N=n, value=v, target=f"<= {target}", met=met,
                                  note=None if v is not None else f"ref_sdpa: {ref_status}"))
    if any(r["model"] == "8b" for r in run.rows):
        runs = [dict(r, probe_s=r["call_ms"] / 1e3 if r.get("call_ms") else None) for r in run.rows
                if r["model"] == "8b" and r["N"] >= N_128K and r["method"].startswith("lrp_triton")]
        runs += [dict(p, method=s["method"]) for s in run.extra.get("searches", []) if s["model"] == "8b"
                 and s["method"].startswith("lrp_triton") for p in s["probes"] if p["N"] >= N_128K]
        good = [r for r in runs if r["status"] == "ok"]
        goals.append(dict(goal="8b_at_128k", model="8b", N=N_128K, value=good[0]["probe_s"] if good else None,
                          target="runs (value: seconds)", met=bool(good) if runs else None,
                          note="; ".join(f"{r['method']} N={r['N']}: {r['status']}" for r in runs) or "not run"))
    searches = [{k: v for k, v in s.items() if k != "probes"} | dict(probes=len(s["probes"]))
                for s in run.extra.get("searches", [])]
    return [("goals", "Goals (ratios measured in this run)", goals, None),
            ("ratios", "Ratios (same model, same N; memory = peak above the weights)", ratios, None),
            (None, "Longest context per method (search)", searches, None)]


def make_runner(args, device, budget, out, smoke=False):
    name = SCRIPT + ("_cpu" if device == "cpu" and not smoke else "")  # CPU figures are named so
    return common.Runner(name, "lrp_triton.attribute end-to-end benchmark", args, budget_s=budget, out=out,
                         device=device, smoke=smoke, single_call_s=4.0, max_repeats=10, skip_after_oom=True,
                         agree=("lrp_triton", "ref_sdpa"), tables=tables,
                         info=dict(definitions=DEFINITIONS, conventions=CONVENTIONS, goals_definition=GOALS,
                                   models=MODEL_SPECS),
                         columns=["model", "method", "N", "status", "call_ms", "call_min_ms", "call_repeats",
                                  "call_peak_MiB", "call_peak_total_MiB", "first_call_s", "timed"])


def cpu_smoke(args):
    from lrp_triton.backend import interpreter_requested

    import lrp_triton

    out_dir = common.smoke_dir(SCRIPT)  # (never bench/results)
    failures = []
    # 1. the pipeline: sweep, simulated OOMs (attribution methods without checkpointing "run out" above 48), search
    run = make_runner(args, "cpu", 600.0, out_dir, smoke=True)
    bench = Bench("cpu", torch.float32, "torch", 256, init=dict(gain=1.5, norm_noise=0.1))
    run.extra["models_built"] = bench.models.info
    for m in ("gradient", "ref_sdpa", "lrp_triton"):
        bench.methods[m] = common.fake_oom(bench.methods[m], 48, lambda c: c["N"])
    run.run(sweep_cases("tiny", [32, 64]), bench.methods)
    run.run(sweep_cases("moe-tiny", [40], MOE_METHODS), bench.methods)  # a Qwen3-MoE: routed experts
    for m in SEARCH_METHODS:
        search(run, bench, "tiny", m, 8, 128)
    run.write(complete=True)
    bad = [r for r in run.rows if r["status"] not in ("ok", "oom")]
    if bad or [r["status"] for r in run.rows if r["N"] == 64 and r["method"] in ("gradient", "lrp_triton")] != ["oom"] * 2:
        failures.append(f"measurements failed or the simulated OOM was not recorded: {run.rows}")
    for s in run.extra["searches"]:
        if s["longest_fit"] != (128 if s["method"].endswith("+ckpt") else 48):
            failures.append(f"search {s['method']}: longest_fit {s['longest_fit']}")
    if [a["model"] for a in run.agreements] != ["tiny", "moe-tiny"] or any(
            a["max_abs_diff_over_max_abs"] > 1e-4 for a in run.agreements):
        failures.append(f"pipeline agreement: {run.agreements}")
    failures += run.files_problem(("cpu_smoke", "results", "searches", "goals", "agreement"))

    # 2. ref_sdpa against lrp_triton.attribute on fresh random weights and ids (float32)
    seed = common.smoke_seed()
    model = build_model("tiny", "cpu", torch.float32, 256, seed=seed, gain=1.5, norm_noise=0.1)
    ids = make_ids(model.config.vocab_size, 64, "cpu", seed=seed + 1)
    calls = len(common.REF_CALLS)
    ref = run_method("ref_sdpa", model, ids, "torch")
    if len(common.REF_CALLS) - calls != model.config.num_hidden_layers:
        failures.append(f"ref_sdpa called the SDPA reference attention {len(common.REF_CALLS) - calls} times, "
                        f"expected {model.config.num_hidden_layers}")
    others = {f"lrp_triton.attribute(backend='torch'{', checkpoint=True' if m.endswith('ckpt') else ''})":
              run_method(m, model, ids, "torch") for m in ("lrp_triton", "lrp_triton+ckpt")}
    others["ref_sdpa+ckpt"] = run_method("ref_sdpa+ckpt", model, ids, "torch")
    if interpreter_requested():
        others["lrp_triton.attribute(backend='triton', TRITON_INTERPRET=1)"] = run_method("lrp_triton", model, ids,
                                                                                          "triton")
    else:
        print("cpu-smoke: TRITON_INTERPRET is not 1: the Triton backend was not exercised")
    grad = run_method("gradient", model, ids, "torch")
    d_b = common.rel_diff(grad, lrp_triton.attribute(model, ids, mode="gradient", backend="torch").relevance)
    print(f"cpu-smoke: (b) gradient vs lrp_triton.attribute(mode='gradient'): max relative difference {d_b:.3e}")
    worst = 0.0
    for name, r in others.items():
        worst = max(worst, common.rel_diff(r, ref))
        print(f"cpu-smoke: {name} vs ref_sdpa: max relative difference {common.rel_diff(r, ref):.3e}")
    d_grad = common.rel_diff(grad, ref)
    print(f"cpu-smoke: plain gradient x input vs ref_sdpa: {d_grad:.3e} (must be large: the rules change relevance)")
    failures += [f for f, bad in ((f"(b) disagrees with attribute(mode='gradient'): {d_b:.3e}", d_b > 1e-4),
                                  (f"ref_sdpa and lrp_triton.attribute disagree: {worst:.3e} > 1e-4", worst > 1e-4),
                                  (f"ref_sdpa is the plain gradient ({d_grad:.3e}): rules not applied?", d_grad < 1e-2))
                 if bad]
    return common.smoke_result(failures, f"ref_sdpa and lrp_triton.attribute relevance, max relative difference "
                                         f"{worst:.3e} (tol 1e-4); pipeline ok")


def main(argv=None):
    p = common.parser("End-to-end benchmark of lrp_triton.attribute (AttnLRP, Triton) on Llama-3.1-8B- and "
                      "Llama-3.2-1B-shaped models with random bf16 weights: time and peak memory against the plain "
                      "forward, a plain forward+backward and the same rules in PyTorch around SDPA (lxt's method), "
                      "with and without checkpoint=True; longest context per method.", BUDGETS,
                      smoke="CPU only: a tiny float32 Llama through every method, simulated OOMs and the search, and "
                            "ref_sdpa against lrp_triton.attribute (Triton too under TRITON_INTERPRET=1); prints the "
                            "'agree' line; writes only to a temp dir")
    p.add_argument("--model", default=None, help="comma-separated: 1b, 8b, moe ('both': 1b,8b); default: all three "
                                                 "(--quick: 1b)")
    p.add_argument("--max-n", type=int, default=N_128K, help="largest N of the sweep and the search (default 131072)")
    p.add_argument("--no-search", action="store_true", help="skip the longest-context search")
    p.add_argument("--cpu", action="store_true", help="CPU figures: the CPU default, hidden 512 / 1024, N <= 8192")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        common.ensure_lrp_triton()
        return cpu_smoke(args)
    if args.cpu:  # the CPU default (backend="auto") against the same methods, written as CPU figures
        run = make_runner(args, "cpu", common.budget_of(args, (3600.0, 600.0)), args.out)
        bench = Bench("cpu", torch.float32, "auto", 8192)
        for key in ("cpu512", "cpu1024"):
            run.run(sweep_cases(key, [n for n in (256, 512, 1024, 2048, 4096, 8192) if n <= args.max_n],
                                ["forward", "gradient", "ref_sdpa", "lrp_triton"]), bench.methods)
        return run.finish()
    common.require_cuda(SCRIPT)
    common.ensure_lrp_triton()
    if args.max_n < 1024:
        p.error("--max-n must be at least 1024")
    keys = (args.model or ("1b" if args.quick else ",".join(MODELS))).replace("both", "1b,8b").split(",")
    if set(keys) - set(MODELS):
        p.error(f"--model: unknown {sorted(set(keys) - set(MODELS))}; choose from {', '.join(MODELS)} (or both)")
    run = make_runner(args, "cuda", common.budget_of(args, BUDGETS), args.out)
    bench = Bench("cuda", torch.bfloat16, "triton", max(N_128K, args.max_n))
    run.extra["models_built"] = bench.models.info
    run.extra["sdpa_backends"] = common.sdpa_probe({f"head_dim_{d}": (32, 8, 1024, d, dict(is_causal=True,
                                                    enable_gqa=True)) for d in (64, 128)})
    print(f"SDPA backends for (b)/(c): {run.extra['sdpa_backends']}", flush=True)
    pow2 = lambda lo, hi: [1 << p for p in range(10, 18) if lo <= 1 << p <= hi]  # noqa: E731
    if args.quick:
        for key in keys:
            run.run(sweep_cases(key, [n for n in (1024, 4096) if n <= args.max_n], methods_of(key)), bench.methods)
        return run.finish()
    for key in keys:  # 1. 1k..8k: the 8k goals (MoE: 1k..16k, then done)
        run.run(sweep_cases(key, pow2(1024, min(2 * N_8K if key == "moe" else N_8K, args.max_n)), methods_of(key)),
                bench.methods)
    keys = [k for k in keys if k != "moe"]
    if "8b" in keys and args.max_n >= N_128K:  # 2. the 128k goal
        run.run(sweep_cases("8b", [N_128K], ["forward", "lrp_triton+ckpt"]), bench.methods)
    for key in sorted(keys, reverse=True):  # 3. cheap searches, then the sweep above 8k; 4. the checkpointed searches
        for m in ([] if args.no_search else [m for m in SEARCH_METHODS if not m.endswith("+ckpt")]):
            search(run, bench, key, m, 1024, args.max_n)
        run.run(sweep_cases(key, pow2(2 * N_8K, args.max_n)), bench.methods)
    for key in ([] if args.no_search else sorted(keys, reverse=True)):
        for m in [m for m in SEARCH_METHODS if m.endswith("+ckpt")]:
            search(run, bench, key, m, 1024, args.max_n)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
