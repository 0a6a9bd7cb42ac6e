#!/usr/bin/env python
"""End-to-end attribution on encoders, ViT and T5: `lrp_triton.attribute` against the same AttnLRP rules in pure
PyTorch around SDPA (lxt's method; T5 with transformers' own materialised position bias), a plain forward and a
plain forward+backward, on models with random bf16 weights built on the GPU:
  bert   BERT-base-shaped BertForSequenceClassification (max_position_embeddings 8192), 512..8192 tokens
  vit*   ViT-B/16 ViTForImageClassification at 224 / 384 / 512 pixels (one model per size), batch 1, 8, 32
  t5     Flan-T5-base-shaped T5ForConditionalGeneration, encoder 4k..32k tokens, 8-token decoder prefix
  vlm    Qwen2.5-VL-7B-shaped Qwen2_5_VLForConditionalGeneration (full depth), 1 / 4 / 16 images of 448 x 448 pixels

  python bench/bench_encoders.py [--quick] [--models t5,bert,vit,vlm] [--out DIR]
  python bench/bench_encoders.py --cpu-smoke     # CPU: tiny models; the pipeline, and ref_sdpa vs attribute
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402

SCRIPT = "bench_encoders"
BUDGETS = (330.0, 180.0)
N_DEC = 8
FAMILIES = ("t5", "bert", "vit", "vlm")
VLM_TEXT_IDS = 32  # text tokens around the images of a vlm prompt
DEFINITIONS = {
    "forward": "plain forward, no grad (attn_implementation 'sdpa'): bert model(input_ids).logits; vit "
               "model(pixel_values).logits; t5 encoder, decoder on the prefix, lm_head at the last decoder position",
    "gradient": "plain forward + backward of the predicted logit to the input (embeddings as leaves; t5: encoder and "
                "decoder embeddings; vit: pixels), exact gradients, relevance (x * grad) summed over the hidden dim "
                "(pixels: channels) in float32; parameters frozen",
    "ref_sdpa": "lxt's method, as bench_attribute's ref_sdpa (common.ref_applied): lrp_triton.apply(model, 'attnlrp', "
                "backend='torch') swaps norms and MLPs for lrp_triton's pure-PyTorch LRP ops, attention through "
                "lrp_triton.attention_interface.sdpa_attention_interface (SDPA, gradients of q, k, v scaled 1/4, 1/4, 1/2); T5: "
                "transformers' own T5Attention put back, whose position_bias = compute_bias(N, M) [1, H, N, M] (built "
                "by each stack's first layer, shared by its layers) becomes SDPA's float mask; then the same "
                "lrp_triton.attribute driver with backend='torch'",
    "lrp_triton": "lrp_triton.attribute(model, ..., mode='attnlrp', backend='triton') (T5: compact [H, N + M - 1] "
                  "relative bias added in the kernel; relevance at the encoder tokens plus decoder_relevance)",
    "vlm": "B = images in one prompt (16 text tokens, then each image as <vision_start> 256 image tokens "
           "<vision_end>, then 16 text tokens; pixel_values [B * 1024, 1176] N(0, 1), image_grid_thw (1, 32, 32) each: "
           "the processor's layout of a 448 x 448 image); forward = model(**inputs, logits_to_keep=1), no grad; "
           "lrp_triton = attribute(model, **inputs) (pixels and tokens); ref_sdpa as above; no gradient rows",
}
CONVENTIONS = {
    "time": "CUDA-event time of whole calls after a first call (autotuning; compilation is done beforehand by the "
            "precompile workers where they finished); a first call >= 4 s is itself the figure, >= 0.5 s: 2 timed "
            "calls, else ~300 ms of repeats (at most 10)",
    "memory": "call_peak_MiB: peak allocated during the timed calls above what was allocated before (weights, "
              "inputs, the L2-flush buffer not counted); every method is tried at every size",
    "agreement": "lrp_triton vs ref_sdpa relevance from their first calls (T5: encoder and decoder together)",
    "inputs": f"bert: ids uniform, no padding; vit: pixels N(0, 1); t5: encoder ids and {N_DEC} decoder ids. Seed 0; "
              "target: the model's own prediction",
}
_VIT = dict(patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, hidden_act="gelu", num_labels=1000)
_VLM = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)
_T5 = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
           eos_token_id=1)
SPECS = {
    "bert": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, hidden_act="gelu", type_vocab_size=2, num_labels=2,
                          max_position_embeddings=8192)),
    **{f"vit{s}": ("vit", dict(_VIT, image_size=s)) for s in (224, 384, 512)},
    "t5": ("t5", dict(_T5, vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12,
                      num_heads=12, relative_attention_num_buckets=32, relative_attention_max_distance=128)),
    # Qwen2.5-VL-7B's widths and depth (8.3B parameters): 28 decoder layers, 32 vision blocks (windows of 112 pixels,
    # full attention in 7, 15, 23, 31)
    "vlm": ("vlm", dict(_VLM, text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                               num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                               max_position_embeddings=128000, rms_norm_eps=1e-6, rope_parameters=dict(
                                                   rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24])),
                        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                           out_hidden_size=3584, patch_size=14, window_size=112,
                                           fullatt_block_indexes=[7, 15, 23, 31]))),
    # CPU smoke only
    "bert-tiny": ("bert", dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=48, type_vocab_size=2, num_labels=3, max_position_embeddings=128)),
    **{f"vit-tiny{s}": ("vit", dict(image_size=s, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=48, num_labels=5)) for s in (32, 48)},
    "t5-tiny": ("t5", dict(_T5, vocab_size=101, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=2,
                           num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20)),
    "vlm-tiny": ("vlm", dict(_VLM, image_token_id=90, vision_start_token_id=92, vision_end_token_id=93, text_config=dict(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, bos_token_id=1, eos_token_id=2,
        rope_parameters=dict(rope_type="default", rope_theta=1e3, mrope_section=[2, 3, 3])),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=32, patch_size=2,
                           window_size=8, fullatt_block_indexes=[1]))),
}
METHOD_NAMES = ("forward", "lrp_triton", "ref_sdpa", "gradient")


def build_model(key, device, dtype, **init):
    import transformers

    fam, cfg = SPECS[key]
    config_cls, auto = {"bert": (transformers.BertConfig, transformers.AutoModelForSequenceClassification),
                        "vit": (transformers.ViTConfig, transformers.AutoModelForImageClassification),
                        "t5": (transformers.T5Config, transformers.AutoModelForSeq2SeqLM),
                        "vlm": (transformers.Qwen2_5_VLConfig, transformers.AutoModelForImageTextToText)}[fam]
    return common.random_model(auto, config_cls(**cfg), device, dtype, **init)


def tokens_of(key, size, batch=1):
    fam, cfg = SPECS[key]
    if fam == "vlm":
        return batch * (image_tokens(key, size) + 2) + VLM_TEXT_IDS
    return (size // cfg["patch_size"]) ** 2 + 1 if fam == "vit" else size


def image_tokens(key, size):  # of one size x size image (merged 2 x 2 patches)
    return (size // SPECS[key][1]["vision_config"]["patch_size"]) ** 2 // 4


def vlm_inputs(key, batch, size, device, dtype, g):
    """One prompt showing `batch` images of size x size pixels, as Qwen2.5-VL's processor lays it out."""
    cfg = SPECS[key][1]
    grid, special = size // cfg["vision_config"]["patch_size"], min(cfg["image_token_id"], cfg["vision_start_token_id"])
    text = torch.randint(3, min(special, cfg["text_config"]["vocab_size"]), (VLM_TEXT_IDS,), generator=g)
    image = [cfg["vision_start_token_id"], *[cfg["image_token_id"]] * image_tokens(key, size), cfg["vision_end_token_id"]]
    ids = torch.cat([text[:VLM_TEXT_IDS // 2], torch.tensor(image * batch), text[VLM_TEXT_IDS // 2:]])[None]
    patch_dim = 3 * 2 * cfg["vision_config"]["patch_size"] ** 2  # channels x temporal patch x patch
    return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                pixel_values=torch.randn(batch * grid * grid, patch_dim, generator=g).to(device=device, dtype=dtype),
                image_grid_thw=torch.tensor([[1, grid, grid]] * batch).to(device))


def make_inputs(key, model, batch, size, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    if SPECS[key][0] == "vit":
        return {"pixels": torch.randn(batch, 3, size, size, generator=g).to(device=device, dtype=dtype)}
    if SPECS[key][0] == "vlm":
        return {"vlm": vlm_inputs(key, batch, size, device, dtype, g)}
    ids = {"ids": torch.randint(0, model.config.vocab_size, (batch, size), generator=g).to(device)}
    if SPECS[key][0] == "t5":
        ids["dec"] = torch.randint(0, model.config.vocab_size, (batch, min(N_DEC, size)), generator=g).to(device)
    return ids


def _score(logits):
    return logits.gather(-1, logits.detach().argmax(-1, keepdim=True)).sum()


def _t5_head(model, decoded):
    from lrp_triton.models import adapter_for

    scale = adapter_for(model).output_scale(model.config)
    hidden = decoded[:, -1]
    return model.lm_head(hidden if scale is None else hidden * scale)


def _summed(x, g):
    return (x.float() * g.float()).sum(-1)


def run_method(method, model, fam, inp, backend):
    """One whole call; the relevance (None for the forward). method 'lrp_gradient': attribute(mode='gradient')."""
    import lrp_triton

    if method == "forward":
        with torch.no_grad():
            if fam == "vlm":
                model(**inp["vlm"], logits_to_keep=1, use_cache=False)
            elif fam == "t5":
                enc = model.encoder(input_ids=inp["ids"], use_cache=False)[0]
                _t5_head(model, model.decoder(input_ids=inp["dec"], encoder_hidden_states=enc, use_cache=False)[0])
            else:
                model(**({"pixel_values": inp["pixels"]} if fam == "vit" else {"input_ids": inp["ids"]}))
        return None
    if method == "gradient":
        with torch.enable_grad():
            if fam == "vit":
                px = inp["pixels"].detach().requires_grad_(True)
                (g,) = torch.autograd.grad(_score(model(pixel_values=px).logits), px)
                return (px.float() * g.float()).sum(1)
            embed = model.get_input_embeddings()
            e = embed(inp["ids"]).detach().requires_grad_(True)
            if fam == "bert":
                return _summed(e, torch.autograd.grad(_score(model(inputs_embeds=e).logits), e)[0])
            d = embed(inp["dec"]).detach().requires_grad_(True)
            enc = model.encoder(inputs_embeds=e, use_cache=False)[0]
            dec = model.decoder(inputs_embeds=d, encoder_hidden_states=enc, use_cache=False)[0]
            ge, gd = torch.autograd.grad(_score(_t5_head(model, dec)), (e, d))
            return torch.cat([_summed(e, ge), _summed(d, gd)], -1)
    mode = "gradient" if method == "lrp_gradient" else "attnlrp"
    backend = "torch" if method == "ref_sdpa" else backend
    with (common.ref_applied(model) if method == "ref_sdpa" else torch.enable_grad()):
        if fam == "vit":
            return lrp_triton.attribute(model, pixel_values=inp["pixels"], mode=mode, backend=backend).relevance
        if fam == "vlm":
            return lrp_triton.attribute(model, **inp["vlm"], mode=mode, backend=backend).relevance
        if fam == "bert":
            return lrp_triton.attribute(model, inp["ids"], mode=mode, backend=backend).relevance
        res = lrp_triton.attribute(model, inp["ids"], decoder_input_ids=inp["dec"], mode=mode, backend=backend)
        return torch.cat([res.relevance, res.decoder_relevance], -1)


def make_methods(models, device, dtype, backend):
    def builder(method):
        def build(c):
            model = models.get(c["model"])
            inp = make_inputs(c["model"], model, c["B"], c["size"], device, dtype)
            return dict(phases={"call": lambda: run_method(method, model, c["family"], inp, backend)})
        return build
    return {m: builder(m) for m in METHOD_NAMES}


def case(key, batch, size):
    vlm = SPECS[key][0] == "vlm"
    return dict(label=f"{key}/B={batch}/size={size}", model=key, family=SPECS[key][0], B=batch, size=size,
                N=tokens_of(key, size, batch), **(dict(methods=["forward", "lrp_triton", "ref_sdpa"]) if vlm else {}))


def plan(args):
    vlm = [("vlm", b, 448) for b in (1, 4, 16)]  # (--quick: only with --models vlm)
    if args.quick:
        cases = [("t5", 1, 4096), ("bert", 1, 512), ("vit224", 1, 224)] + vlm
    else:  # the key rows first, then the rest while the budget lasts
        cases = ([("t5", 1, n) for n in (4096, 8192, 16384, 32768)] + [("bert", 1, 512), ("vit224", 1, 224)] + vlm
                 + [("vit224", b, 224) for b in (8, 32)] + [("bert", 1, n) for n in (1024, 2048, 4096, 8192)]
                 + [("bert", b, 512) for b in (8, 32)] + [(f"vit{s}", b, s) for s in (384, 512) for b in (1, 8, 32)])
    wanted = set(args.models.split(",")) if args.models else set(FAMILIES) - ({"vlm"} if args.quick else set())
    return [case(*c) for c in cases if SPECS[c[0]][0] in wanted]


def tables(run):
    out = []
    for label in dict.fromkeys(r["label"] for r in run.rows):
        ok = {m: run.ok(m, label=label) for m in METHOD_NAMES}
        t = {m: r and r["call_ms"] for m, r in ok.items()}
        mem = {m: r and r.get("call_peak_MiB") for m, r in ok.items()}
        status = {m: next((r["status"] for r in run.rows if r["label"] == label and r["method"] == m), "not run")
                  for m in METHOD_NAMES}
        agree = next((a for a in run.agreements if a["label"] == label), {})
        first = next(r for r in run.rows if r["label"] == label)

        def ratio(d, a, b):
            return d[a] / d[b] if d[a] is not None and d[b] else None

        out.append(dict(model=first["model"], B=first["B"], size=first["size"], N=first["N"], forward_ms=t["forward"],
                        lrp_ms=t["lrp_triton"], ref_ms=t["ref_sdpa"], grad_ms=t["gradient"],
                        lrp_over_ref_time=ratio(t, "lrp_triton", "ref_sdpa"),
                        lrp_over_ref_mem=ratio(mem, "lrp_triton", "ref_sdpa"),
                        lrp_over_fwd=ratio(t, "lrp_triton", "forward"), ref_over_fwd=ratio(t, "ref_sdpa", "forward"),
                        grad_over_fwd=ratio(t, "gradient", "forward"),
                        **{f"{k}_mem_GiB": mem[m] and mem[m] / 1024 for k, m in (("lrp", "lrp_triton"), (
                            "ref", "ref_sdpa"), ("grad", "gradient"), ("fwd", "forward"))},
                        ref_status=status["ref_sdpa"], grad_status=status["gradient"], lrp_status=status["lrp_triton"],
                        pearson=agree.get("pearson"), max_rel_diff=agree.get("max_abs_diff_over_max_abs")))
    sdpa = run.extra.get("sdpa_backends") or {}
    return [("ratios", "lrp_triton against the pure-PyTorch path (same model, batch, size; this run)", out, None),
            (None, f"SDPA backends (fwd+bwd, [1, 12, 1024, 64], bf16; priority {sdpa.get('priority_order')})",
             [dict(case=k, **v) for k, v in sdpa.items() if isinstance(v, dict)], None)]


PRECOMPILE = {"t5": ("t5", [(1, 1024)]), "bert": ("bert", [(1, 512)]), "vit": ("vit224", [(1, 224), (16, 224)])}


def _precompile_task(task):
    """Worker: one attribute call per input shape of one family, every autotuner pinned to config `index`
    (power-of-two / multiple-of-16 lengths: the Triton specialisations of the sweep)."""
    fam, index = task
    t0, error = time.perf_counter(), None
    try:
        common.ensure_lrp_triton()
        common.pin_autotuners(index, BLOCK_D=64)
        key, shapes = PRECOMPILE[fam]
        model = build_model(key, "cuda", torch.bfloat16)
        for batch, size in shapes:
            run_method("lrp_triton", model, fam, make_inputs(key, model, batch, size, "cuda", torch.bfloat16), "triton")
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - e.g. a config that does not fit: the autotuner skips it later
        error = common.short_error(e)
    return task, time.perf_counter() - t0, error


def make_runner(args, device, budget, out, smoke=False):
    return common.Runner(SCRIPT, "lrp_triton.attribute on BERT, ViT-B/16 and Flan-T5 (end-to-end)", args,
                         budget_s=budget, out=out, device=device, smoke=smoke, single_call_s=4.0, max_repeats=10,
                         agree=("lrp_triton", "ref_sdpa"), tables=tables,
                         info=dict(definitions=DEFINITIONS, conventions=CONVENTIONS, specs=SPECS),
                         columns=["model", "method", "B", "size", "N", "status", "call_ms", "call_min_ms",
                                  "call_repeats", "call_peak_MiB", "call_peak_total_MiB", "first_call_s"])


def cpu_smoke(args):
    from lrp_triton.backend import interpreter_requested

    out_dir = common.smoke_dir(SCRIPT)  # (never bench/results)
    failures = []
    # 1. the pipeline: every method on every family, a simulated OOM (ref_sdpa on T5 above 48 tokens), the writers
    run = make_runner(args, "cpu", 600.0, out_dir, smoke=True)
    models = common.Models(lambda key: build_model(key, "cpu", torch.float32, gain=1.5, norm_noise=0.1))
    methods = make_methods(models, "cpu", torch.float32, "torch")
    methods["ref_sdpa"] = common.fake_oom(methods["ref_sdpa"], 48, lambda c: c["N"] if c["family"] == "t5" else 0)
    cases = [case(*c) for c in (("t5-tiny", 1, 48), ("t5-tiny", 1, 96), ("bert-tiny", 1, 32), ("bert-tiny", 2, 64),
                                ("vit-tiny32", 1, 32), ("vit-tiny32", 2, 32), ("vit-tiny48", 1, 48),
                                ("vlm-tiny", 1, 8), ("vlm-tiny", 3, 8))]  # (vlm: 8 x 8 pixels, 4 image tokens each)
    run.run(cases, methods)
    run.write(complete=True)
    if [r for r in run.rows if r["status"] not in ("ok", "oom")]:
        failures.append(f"measurements failed: {run.rows}")
    if [r["status"] for r in run.rows if r["status"] == "oom"] != ["oom"] or not any(
            r["status"] == "oom" and r["model"] == "t5-tiny" and r["size"] == 96 for r in run.rows):
        failures.append("the simulated OOM (t5 ref_sdpa at 96 tokens) was not recorded as the only 'oom'")
    ratios = tables(run)[0][2]
    if len(ratios) != len(cases) or any(r["lrp_over_ref_time"] is None for r in ratios if r["ref_status"] == "ok"):
        failures.append("ratio rows incomplete")
    if len(run.agreements) != len(cases) - 1 or any(a["max_abs_diff_over_max_abs"] > 1e-4 for a in run.agreements):
        failures.append(f"pipeline agreement {run.agreements}")
    failures += run.files_problem(("cpu_smoke", "results", "ratios", "agreement"))

    # 2. ref_sdpa against lrp_triton.attribute on fresh random weights and inputs (float32), per family
    seed = common.smoke_seed()
    worst = {}
    for fam, (key, batch, size) in {"bert": ("bert-tiny", 2, 37), "vit": ("vit-tiny48", 2, 48),
                                    "t5": ("t5-tiny", 2, 45)}.items():
        model = build_model(key, "cpu", torch.float32, seed=seed, gain=1.5, norm_noise=0.1)
        inp = make_inputs(key, model, batch, size, "cpu", torch.float32, seed=seed + 1)
        calls = len(common.REF_CALLS)
        ref = run_method("ref_sdpa", model, fam, inp, "torch")
        seen, c = common.REF_CALLS[calls:], model.config
        want = c.num_layers + 2 * c.num_decoder_layers if fam == "t5" else c.num_hidden_layers
        if len(seen) != want:
            failures.append(f"{fam}: ref_sdpa called the SDPA reference attention {len(seen)} times, expected {want}")
        if fam == "t5":  # transformers' T5Attention ran, its dense [1, H, N, N] encoder bias handed to SDPA
            print(f"cpu-smoke: t5: ref_sdpa handed SDPA these materialised position biases: {sorted(set(seen))}")
            if (1, c.num_heads, size, size) not in seen:
                failures.append(f"t5: ref_sdpa did not pass the materialised encoder bias to SDPA: {set(seen)}")
        left = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("LRP")}
                      | {str(m.config._attn_implementation) for m in model.modules()
                         if getattr(m, "config", None) is not None and m.config._attn_implementation != "sdpa"})
        if left:
            failures.append(f"{fam}: the model is not restored after ref_sdpa: {left}")
        others = {"lrp_triton.attribute(backend='torch')": run_method("lrp_triton", model, fam, inp, "torch")}
        if interpreter_requested():
            others["lrp_triton.attribute(backend='triton', TRITON_INTERPRET=1)"] = run_method(
                "lrp_triton", model, fam, inp, "triton")
        worst[fam] = max(common.rel_diff(r, ref) for r in others.values())
        for name, r in others.items():
            print(f"cpu-smoke: {fam}: {name} vs ref_sdpa: max relative difference {common.rel_diff(r, ref):.3e}")
        grad = run_method("gradient", model, fam, inp, "torch")
        d_b, d_grad = common.rel_diff(grad, run_method("lrp_gradient", model, fam, inp, "torch")), common.rel_diff(
            grad, ref)
        print(f"cpu-smoke: {fam}: plain gradient x input vs attribute(mode='gradient') {d_b:.3e}; vs ref_sdpa "
              f"{d_grad:.3e} (must be large: the rules change the relevance)")
        failures += [f"{fam}: {f}" for f, bad in ((f"the plain gradient disagrees with attribute(mode='gradient'): "
                                                   f"{d_b:.3e}", d_b > 1e-4),
                                                  (f"ref_sdpa is the plain gradient ({d_grad:.3e})", d_grad < 1e-2),
                                                  (f"ref_sdpa and attribute disagree: {worst[fam]:.3e} > 1e-4",
                                                   worst[fam] > 1e-4)) if bad]
    if not interpreter_requested():
        print("cpu-smoke: TRITON_INTERPRET is not 1: the Triton backend was not exercised")
    return common.smoke_result(failures, "ref_sdpa (pure-PyTorch path) and lrp_triton.attribute relevance, max "
                               "relative difference " + ", ".join(f"{fam} {d:.3e}" for fam, d in worst.items())
                               + " (tol 1e-4); pipeline ok")


def main(argv=None):
    p = common.parser("End-to-end benchmark of lrp_triton.attribute (AttnLRP, Triton) on BERT-base-, ViT-B/16- and "
                      "Flan-T5-base-shaped models with random bf16 weights: time and peak memory against the same "
                      "rules in pure PyTorch around SDPA (T5: transformers' materialised position bias), a plain "
                      "forward and a plain forward+backward; T5 at 4k..32k input tokens.", BUDGETS, precompile=True,
                      smoke="CPU only: every method on tiny float32 BERT / ViT / T5 models (simulated OOM), the writers "
                            "(temp dir), and ref_sdpa against lrp_triton.attribute per family (Triton too under "
                            "TRITON_INTERPRET=1); prints the 'agree' line")
    p.add_argument("--models", default=None, help="comma-separated families: t5, bert, vit, vlm (default all; --quick: "
                                                  "all but vlm)")
    args = p.parse_args(argv)
    if args.models and set(args.models.split(",")) - set(FAMILIES):
        p.error(f"--models: unknown {sorted(set(args.models.split(',')) - set(FAMILIES))}; choose from "
                f"{', '.join(FAMILIES)}")
    common.ensure_lrp_triton()
    if args.cpu_smoke:
        return cpu_smoke(args)
    common.require_cuda(SCRIPT)
    budget = common.budget_of(args, BUDGETS)
    run = make_runner(args, "cuda", budget, args.out)
    models = common.Models(lambda key: build_model(key, "cuda", torch.bfloat16))
    run.extra["models_built"] = models.info
    bias = lambda n: torch.randn(n, n, 12, device="cuda", dtype=torch.bfloat16).permute(2, 0, 1)[None]  # noqa: E731
    run.extra["sdpa_backends"] = common.sdpa_probe({
        "no_mask": (12, 12, 1024, 64, {}), "t5_bias_view": (12, 12, 1024, 64, dict(attn_mask=bias, scale=1.0)),
        "t5_bias_contiguous": (12, 12, 1024, 64, dict(attn_mask=lambda n: bias(n).contiguous(), scale=1.0))})
    cases = plan(args)
    families = [f for f in PRECOMPILE if any(c["family"] == f for c in cases)]  # (vlm: none, an 8B model per worker)
    if not args.no_precompile and families:
        n_cfg = max(len(t.configs) for t in common.autotuners())
        run.extra["precompile"] = common.precompile(_precompile_task, [(f, i) for f in families for i in range(n_cfg)],
                                                    args.jobs, max(30.0, min(180.0, 0.45 * budget)))
    run.run(cases, make_methods(models, "cuda", torch.bfloat16, "triton"))
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
