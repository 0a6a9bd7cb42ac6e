#!/usr/bin/env python
"""End-to-end attribution benchmark for encoders, vision transformers and T5 (issue 5).

`lrp_triton.attribute` against the same AttnLRP rules through the pure-PyTorch path, on models with
random bf16 weights built directly on the GPU:
  bert    BERT-base-shaped BertForSequenceClassification (hidden 768, 12 layers, 12 heads, intermediate
          3072, max_position_embeddings 8192), N = 512 ... 8192 tokens, batch 1, 8, 32 at 512
  vit*    ViT-B/16-shaped ViTForImageClassification (1000 classes) at 224x224 (197 tokens), 384x384 (577)
          and 512x512 (1025; one model per image size, position embeddings for that size), batch 1, 8, 32
  t5      Flan-T5-base-shaped T5ForConditionalGeneration (d_model 768, d_kv 64, 12 heads, d_ff 2048,
          12 + 12 layers, gated-gelu, untied head), encoder input 4k, 8k, 16k, 32k tokens, decoder
          prefix 8 tokens (explained: the last decoder position)

Methods, each measured per (model, batch, size) in the same run (see DEFINITIONS for exactly what runs):
  forward     plain HF forward under torch.no_grad() (SDPA attention)
  gradient    plain forward + backward to the input (embeddings / pixels), exact gradients, SDPA attention
  ref_sdpa    the AttnLRP rules in pure PyTorch with SDPA attention (bench_attribute.py's path (c), the
              reference library lxt's method); for T5 with transformers' own T5Attention and its
              materialised [1, H, N, M] position bias
  lrp_triton  lrp_triton.attribute(model, ..., mode="attnlrp", backend="triton")

Measured: time (CUDA events, median of whole calls after a first untimed call), peak memory above what
was allocated before the call (weights and inputs excluded), "oom" when CUDA runs out of memory; ratios
against ref_sdpa measured in the same run; agreement of lrp_triton's and ref_sdpa's relevance (bf16).
The key rows run first (T5 4k..32k, BERT at 512, ViT-B/16 at 224), then the rest while the budget
lasts. Before measuring, the Triton kernels are compiled in parallel worker processes (one autotune
config each) so that compilation stays out of the budget's way (--no-precompile to skip).

  python bench/bench_encoders.py                  # full run (~6 min on an H100)
  python bench/bench_encoders.py --quick          # T5 4k, BERT 512, ViT 224 only
  python bench/bench_encoders.py --models t5 --out /tmp/res --budget-s 200
  python bench/bench_encoders.py --cpu-smoke      # CPU: tiny models, checks the code paths and that
                                                  # ref_sdpa and lrp_triton.attribute agree; no figures

Without a GPU (and without --cpu-smoke) it prints "needs a CUDA GPU" and exits with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

T_PROCESS = time.perf_counter()  # the time budget counts from here (imports included)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `common` and `bench_attribute` beside this file

import torch  # noqa: E402

import bench_attribute as ba  # noqa: E402  path (c): ref_applied, ref_sdpa_attention, REF_CALLS, ...
from common import (cuda_time_ms, env_record, free_cuda, is_oom, markdown_table, require_cuda,  # noqa: E402
                    result_paths, run_in_processes, sdpa_backends_accepting, sdpa_priority_order, short_error,
                    smoke_files_problem, write_json, write_markdown)

SCRIPT = "bench_encoders"
GiB = 2 ** 30
BIG_CALL_S = 4.0  # a method whose first call took longer is timed once
METHOD_ORDER = ("forward", "lrp_triton", "ref_sdpa", "gradient")  # per case
N_DEC = 8  # T5 decoder prefix

# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
_BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, hidden_act="gelu", type_vocab_size=2, num_labels=2,
                  max_position_embeddings=8192)
_VIT_B16 = dict(patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, hidden_act="gelu", num_labels=1000)
_FLAN_T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12,
                     num_heads=12, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False, layer_norm_epsilon=1e-6,
                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
SPECS = {
    "bert": dict(family="bert", name="BERT-base-shaped BertForSequenceClassification", config=_BERT_BASE),
    "vit224": dict(family="vit", name="ViT-B/16-shaped ViTForImageClassification 224x224",
                   config=dict(_VIT_B16, image_size=224)),
    "vit384": dict(family="vit", name="ViT-B/16-shaped ViTForImageClassification 384x384",
                   config=dict(_VIT_B16, image_size=384)),
    "vit512": dict(family="vit", name="ViT-B/16-shaped ViTForImageClassification 512x512",
                   config=dict(_VIT_B16, image_size=512)),
    "t5": dict(family="t5", name="Flan-T5-base-shaped T5ForConditionalGeneration", config=_FLAN_T5_BASE),
    # CPU smoke only
    "bert-tiny": dict(family="bert", name="tiny BERT (CPU smoke)",
                      config=dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, type_vocab_size=2, num_labels=3, max_position_embeddings=128)),
    "vit-tiny": dict(family="vit", name="tiny ViT 32x32 (CPU smoke)",
                     config=dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=48, num_labels=5)),
    "vit-tiny48": dict(family="vit", name="tiny ViT 48x48 (CPU smoke)",
                       config=dict(image_size=48, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=48, num_labels=5)),
    "t5-tiny": dict(family="t5", name="tiny Flan-T5 (CPU smoke)",
                    config=dict(vocab_size=101, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=2,
                                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
}
FAMILIES = ("t5", "bert", "vit")


def family(key):
    return SPECS[key]["family"]


def _classes(fam):
    import transformers

    return {"bert": (transformers.BertConfig, transformers.AutoModelForSequenceClassification),
            "vit": (transformers.ViTConfig, transformers.AutoModelForImageClassification),
            "t5": (transformers.T5Config, transformers.AutoModelForSeq2SeqLM)}[fam]


def build_model(key, device, dtype, seed=0, gain=1.0, norm_noise=0.02):
    """A random-weight model created directly on `device` in `dtype` (eval, frozen, SDPA attention).

    Weights: matrices N(0, gain^2 / fan_in) (T5's q additionally / d_kv: T5 does not scale q k^T),
    convolution N(0, gain^2 / fan_in), embeddings / CLS token / T5 bias table N(0, 1), norm weights
    N(1, norm_noise^2), other vectors (biases) N(0, norm_noise^2)."""
    fam = family(key)
    config_cls, auto_cls = _classes(fam)
    config = config_cls(**SPECS[key]["config"])
    with torch.device(device):
        try:
            model = auto_cls.from_config(config, dtype=dtype, attn_implementation="sdpa")
        except TypeError:  # older spelling
            model = auto_cls.from_config(config, torch_dtype=dtype, attn_implementation="sdpa")
    if next(model.parameters()).device.type != torch.device(device).type:
        print(f"warning: transformers built the model on {next(model.parameters()).device}; moving it", flush=True)
        model = model.to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    d_kv = getattr(model.config, "d_kv", None)
    with torch.no_grad():
        for name, p in model.named_parameters():
            lname = name.lower()
            if p.dim() == 1:
                if "norm" in lname and name.endswith("weight"):
                    p.normal_(1.0, norm_noise, generator=gen)
                else:
                    p.normal_(0.0, norm_noise, generator=gen)
            elif p.dim() == 4:  # ViT patch-embedding convolution
                p.normal_(0.0, gain / math.sqrt(p[0].numel()), generator=gen)
            elif ("embeddings" in lname or "shared" in lname or "embed_tokens" in lname or "cls_token" in lname
                  or "relative_attention_bias" in lname):
                p.normal_(0.0, 1.0, generator=gen)
            elif fam == "t5" and name.endswith(".q.weight"):
                p.normal_(0.0, gain / math.sqrt(p.shape[-1] * d_kv), generator=gen)
            else:
                p.normal_(0.0, gain / math.sqrt(p.shape[-1]), generator=gen)
    model.eval()
    model.requires_grad_(False)
    return model


def tokens_of(key, size):
    """Sequence length per row: `size` itself for text / T5; patches + CLS for an image of side `size`."""
    if family(key) == "vit":
        p = SPECS[key]["config"]["patch_size"]
        return (size // p) ** 2 + 1
    return size


def make_inputs(key, model, batch, size, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    fam = family(key)
    if fam == "vit":
        c = model.config.num_channels
        return {"pixels": torch.randn(batch, c, size, size, generator=g).to(device=device, dtype=dtype)}
    vocab = model.config.vocab_size
    inp = {"ids": torch.randint(0, vocab, (batch, size), generator=g).to(device)}
    if fam == "t5":
        inp["dec"] = torch.randint(0, vocab, (batch, min(N_DEC, size)), generator=g).to(device)
    return inp


def cost_units(key, batch, size):
    """Rough work count for predicting time from a measured case: linear layers + attention."""
    c = SPECS[key]["config"]
    n = tokens_of(key, size)
    if family(key) == "t5":
        d, ff, layers = c["d_model"], 3 * c["d_model"] * c["d_ff"], c["num_layers"]
    else:
        d, ff, layers = c["hidden_size"], 2 * c["hidden_size"] * c["intermediate_size"], c["num_hidden_layers"]
    lin = 2.0 * batch * n * layers * (4 * d * d + ff)
    attn = 4.0 * batch * n * n * d * layers
    return lin + attn


# ------------------------------------------------------------------------------------------------
# What is measured: stated again in the JSON
# ------------------------------------------------------------------------------------------------
_SWAPS = {
    "bert": "LayerNorm -> lrp_triton's LayerNorm rule (std held constant), BertIntermediate -> dense + GELU "
            "identity rule, BertPooler -> dense + tanh identity rule",
    "vit": "LayerNorm -> LayerNorm rule (std held constant), ViTMLP -> fc1 + GELU identity rule + fc2",
    "t5": "T5LayerNorm -> RMSNorm identity rule, T5DenseGatedActDense -> GELU-tanh identity rule + uniform rule on "
          "the gate product",
}
DEFINITIONS = {
    "forward": "plain forward, no grad, the model as built (attn_implementation='sdpa'). bert: "
               "model(input_ids=ids).logits; vit: model(pixel_values=px).logits; t5: enc = model.encoder(input_ids=ids)"
               "[0]; dec = model.decoder(input_ids=dec_ids, encoder_hidden_states=enc)[0]; model.lm_head(dec[:, -1]) "
               "(the explained position only, like attribute; T5's own attention with its materialised position "
               "bias, through SDPA with that bias as float mask).",
    "gradient": "plain forward + backward to the input, exact gradients everywhere (SDPA attention): the input "
                "embeddings (bert: word embeddings; t5: encoder and decoder token embeddings) or pixel values as a "
                "leaf, forward, score = logit of the predicted class (t5: of the predicted token at the last "
                "decoder position), torch.autograd.grad(score, leaves), relevance = (x * grad) summed over the "
                "hidden dimension (pixels: over channels) in float32. Parameters frozen.",
    "ref_sdpa": "the same AttnLRP rules through the pure-PyTorch path with SDPA attention, i.e. bench_attribute.py's "
                "path (c) (lxt's method), imported from it: lrp_triton.apply(model, 'attnlrp', backend='torch') "
                "swaps the norms and MLPs for lrp_triton's pure-PyTorch LRP ops (bert: " + _SWAPS["bert"] +
                "; vit: " + _SWAPS["vit"] + "; t5: " + _SWAPS["t5"] + "; no Triton anywhere), and the model's "
                f"attention implementation is switched to the script-local '{ba.REF_ATTENTION_NAME}' "
                "(bench_attribute.ref_sdpa_attention, registered with AttentionMaskInterface as transformers' own "
                "'sdpa' mask function): an identity-forward autograd Function scales the gradients of query, key "
                "and value by 1/4, 1/4, 1/2 (lxt's divide_gradient), then transformers' sdpa_attention_forward "
                "calls torch.nn.functional.scaled_dot_product_attention (backend picked by torch, see sdpa_probe). "
                "T5: lrp_triton.apply would replace T5Attention by LRPT5Attention (compact in-kernel bias); this "
                "path puts transformers' own T5Attention back (same q/k/v/o projections and bias table), so the "
                "relative-position bias is computed as transformers does: position_bias = compute_bias(N, M), a "
                "[1, H, N, M] tensor built by the first layer of each stack and shared by its layers, which "
                "sdpa_attention_forward folds with the padding/causal mask into one float attn_mask [1, H, N, M] "
                "(create_position_bias_mask) for SDPA (scale 1; a float mask rules out the flash kernel). Then "
                "the same lrp_triton.attribute driver runs with backend='torch' (embeddings / pixels as leaves, "
                "one forward, the explained logit, one backward, relevance = x * grad summed). Note: "
                "attribute(backend='torch') alone is NOT this path (its attention materialises chunked scores in "
                "PyTorch, and for T5 it uses the compact bias).",
    "lrp_triton": "lrp_triton.attribute(model, ..., mode='attnlrp', backend='triton'): Triton attention (flash-style "
                  "forward, AttnLRP backward; T5: compact [H, N + M - 1] relative bias added in the kernel), Triton "
                  "LayerNorm / RMSNorm / activation LRP kernels. bert: attribute(model, ids); vit: attribute(model, "
                  "pixel_values=px); t5: attribute(model, ids, decoder_input_ids=dec_ids) (relevance at the encoder "
                  "tokens plus decoder_relevance).",
}
CONVENTIONS = {
    "time": "median of CUDA-event timings of whole calls (L2 flushed before each) after one untimed first call "
            "(autotuning, allocator growth; Triton compilation is done beforehand by the precompile workers "
            "where they finished); a first call >= %.0f s: one timed call; >= 0.5 s: two; else about 300 ms of "
            "repeats (at most 10)" % BIG_CALL_S,
    "memory": "peak torch.cuda.max_memory_allocated during the timed calls minus what was allocated before them "
              "(weights, inputs and the L2-flush buffer are not counted): peak_extra_GiB; peak_total_GiB = "
              "absolute peak including the weights.",
    "oom": "torch.cuda.OutOfMemoryError (or a RuntimeError saying 'out of memory') -> status 'oom'. Every method "
           "is tried at every size (an OOM fails fast).",
    "ratios": "same model, batch and size, measured in this run: lrp_over_ref_time = lrp_triton / ref_sdpa time, "
              "lrp_over_ref_mem = lrp_triton / ref_sdpa peak_extra_GiB; lrp_over_fwd = lrp_triton / forward time.",
    "agreement": "relevance of lrp_triton vs ref_sdpa from their first calls (bf16 models: rounding differs): "
                 "max|a - b| / max|b|, ||a - b|| / ||b||, Pearson r; T5: encoder and decoder relevance together.",
    "inputs": "bert: token ids uniform in [0, vocab), no padding, attention mask all ones; vit: pixel values "
              "N(0, 1); t5: encoder ids and %d decoder ids uniform in [0, vocab). Seed 0. Target: the model's own "
              "prediction (class; T5: token at the last decoder position)." % N_DEC,
    "weights": "random, bf16 (every parameter, T5's `wo` included), built on the GPU: see build_model's docstring",
}
SHORT = {
    "forward": "plain HF forward, no grad (SDPA)",
    "gradient": "plain forward + backward to the input (SDPA, exact gradients)",
    "ref_sdpa": "AttnLRP in pure PyTorch with SDPA attention (bench_attribute's path (c), lxt's method); T5: "
                "transformers' T5Attention with its materialised [1, H, N, M] position bias",
    "lrp_triton": "lrp_triton.attribute(mode='attnlrp', backend='triton')",
}


# ------------------------------------------------------------------------------------------------
# Path (c) for these families: bench_attribute's ref_applied, plus T5's own attention for T5
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _t5_native_attention(originals):
    """Puts transformers' T5Attention modules back in place of lrp_triton's LRPT5Attention, each with a private
    config copy whose attention implementation is the path-(c) SDPA function; undone on exit."""
    undo = []
    try:
        for parent, attr, original in originals:
            current = getattr(parent, attr)
            if type(current).__name__ != "LRPT5Attention":
                raise RuntimeError(f"ref_sdpa (t5): expected LRPT5Attention at {attr}, found {type(current).__name__}")
            private = copy.copy(original.config)
            private._attn_implementation_internal = ba.REF_ATTENTION_NAME
            undo.append((parent, attr, current, original, original.config))
            original.config = private
            setattr(parent, attr, original)
        yield
    finally:
        for parent, attr, current, original, config in reversed(undo):
            original.config = config
            setattr(parent, attr, current)


@contextlib.contextmanager
def ref_applied(model):
    """bench_attribute.ref_applied (PyTorch norm/MLP rules, SDPA with q/k/v gradient scaling); T5 also gets its
    own T5Attention (materialised position bias) back, calling the same SDPA function."""
    fam = model.config.model_type
    originals = []
    if fam == "t5":
        modules = dict(model.named_modules())
        for name, module in modules.items():
            if type(module).__name__ == "T5Attention":
                parent_name, _, attr = name.rpartition(".")
                originals.append((modules[parent_name] if parent_name else model, attr, module))
        if not originals:
            raise RuntimeError("ref_sdpa (t5): found no T5Attention module")
    with ba.ref_applied(model) as handle, contextlib.ExitStack() as stack:
        if originals:
            stack.enter_context(_t5_native_attention(originals))
        yield handle


# ------------------------------------------------------------------------------------------------
# The methods: each runs one whole call and returns the relevance (None for the forward)
# ------------------------------------------------------------------------------------------------
def _score(logits):
    return logits.gather(-1, logits.detach().argmax(-1, keepdim=True)).sum()


def _t5_head(model, decoded):
    from lrp_triton.attribute_seq2seq import scales_decoder_output

    hidden = decoded[:, -1]
    if scales_decoder_output(model.config):
        hidden = hidden * (model.config.d_model ** -0.5)
    return model.lm_head(hidden)


def run_method(method, model, fam, inp, lrp_backend):
    import lrp_triton
    from lrp_triton.attribute import token_relevance

    if method == "forward":
        with torch.no_grad():
            if fam == "bert":
                model(input_ids=inp["ids"]).logits
            elif fam == "vit":
                model(pixel_values=inp["pixels"]).logits
            else:
                enc = model.encoder(input_ids=inp["ids"], use_cache=False)[0]
                dec = model.decoder(input_ids=inp["dec"], encoder_hidden_states=enc, use_cache=False)[0]
                _t5_head(model, dec)
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
                (g,) = torch.autograd.grad(_score(model(inputs_embeds=e).logits), e)
                return token_relevance(e, g)
            d = embed(inp["dec"]).detach().requires_grad_(True)
            enc = model.encoder(inputs_embeds=e, use_cache=False)[0]
            dec = model.decoder(inputs_embeds=d, encoder_hidden_states=enc, use_cache=False)[0]
            ge, gd = torch.autograd.grad(_score(_t5_head(model, dec)), (e, d))
            return torch.cat([token_relevance(e, ge), token_relevance(d, gd)], -1)
    if method in ("ref_sdpa", "lrp_triton", "lrp_gradient"):
        mode = "gradient" if method == "lrp_gradient" else "attnlrp"
        backend = "torch" if method == "ref_sdpa" else lrp_backend
        with (ref_applied(model) if method == "ref_sdpa" else contextlib.nullcontext()):
            if fam == "bert":
                return lrp_triton.attribute(model, inp["ids"], mode=mode, backend=backend).relevance
            if fam == "vit":
                return lrp_triton.attribute(model, pixel_values=inp["pixels"], mode=mode, backend=backend).relevance
            res = lrp_triton.attribute(model, inp["ids"], decoder_input_ids=inp["dec"], mode=mode, backend=backend)
            return torch.cat([res.relevance, res.decoder_relevance], -1)
    raise ValueError(method)


def expected_ref_calls(model, fam):
    """Calls of the path-(c) SDPA function per attribution: one per attention layer."""
    c = model.config
    if fam == "t5":
        return c.num_layers + 2 * c.num_decoder_layers
    return c.num_hidden_layers


# ------------------------------------------------------------------------------------------------
# SDPA probe: which backends take the shapes of the plain / path-(c) calls
# ------------------------------------------------------------------------------------------------
def sdpa_probe(device, dtype, n=1024, h=12, d=64):
    """Forward+backward of each SDPA backend on [1, 12, 1024, 64] (non-causal): without mask (BERT, ViT), with a
    T5-style float bias [1, 12, N, N] as compute_bias returns it (a permuted view) and contiguous; plus torch's
    priority order. A backend listed 'ok' in priority order first is the one torch picks."""
    q, k, v = (torch.randn(1, h, n, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    bias_view = torch.randn(n, n, h, device=device, dtype=dtype).permute(2, 0, 1)[None]
    masks = {"no_mask": None, "t5_bias_view": bias_view, "t5_bias_contiguous": bias_view.contiguous()}
    out = {label: sdpa_backends_accepting(q, k, v, attn_mask=mask, scale=1.0 if mask is not None else None)
           for label, mask in masks.items()}
    order = sdpa_priority_order()
    if order is not None:
        out["priority_order"] = order
    return out


# ------------------------------------------------------------------------------------------------
# Parallel pre-compilation of the Triton kernels
# ------------------------------------------------------------------------------------------------
PRECOMPILE_RUNS = {  # per family: (model key, [(batch, size)]) with the Triton specialisations of the sweep
    "t5": ("t5", [(1, 1024)]),  # power-of-two N: same integer divisibility as 4k..32k; decoder 8 as always
    "bert": ("bert", [(1, 512)]),  # every N of the sweep is a multiple of 16
    "vit": ("vit224", [(1, 224), (16, 224)]),  # 197 / 577 / 1025 tokens; rows of batch 16/32 divisible by 16
}


def _autotuners():
    """Every triton Autotuner in lrp_triton.kernels.* (all kernel modules imported)."""
    import importlib
    import pkgutil

    import lrp_triton.kernels as kpkg
    from triton.runtime.autotuner import Autotuner

    found = []
    for info in pkgutil.iter_modules(kpkg.__path__):
        try:
            mod = importlib.import_module(f"lrp_triton.kernels.{info.name}")
        except Exception:  # noqa: BLE001
            continue
        found += [obj for obj in vars(mod).values() if isinstance(obj, Autotuner)]
    return list({id(a): a for a in found}.values())


def _precompile_task(task):
    """Worker: one lrp_triton.attribute call per input shape of one family with every autotuner pinned to its
    config `index`: Triton compiles exactly that config of every kernel into its on-disk cache, where the main
    process's autotuning then finds it."""
    fam, index = task
    t0 = time.perf_counter()
    error = None
    try:
        ba.ensure_lrp_triton()
        for tuner in _autotuners():
            if len(tuner.configs) > 1:
                tuner.configs = [tuner.configs[index % len(tuner.configs)]]
        key, shapes = PRECOMPILE_RUNS[fam]
        model = build_model(key, "cuda", torch.bfloat16)
        for batch, size in shapes:
            inp = make_inputs(key, model, batch, size, "cuda", torch.bfloat16)
            run_method("lrp_triton", model, fam, inp, "triton")
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - e.g. a config that does not fit: the autotuner skips it later
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
    return task, time.perf_counter() - t0, error


def precompile(families, jobs, timeout_s):
    """Runs the precompile tasks (family x config index) in `jobs` spawned processes; a summary for the JSON."""
    try:
        n_cfg = max(len(t.configs) for t in _autotuners())
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    tasks = [(fam, i) for fam in families for i in range(n_cfg)]  # T5 (the longest) first
    return {"families": list(families), "configs_per_kernel": n_cfg,
            **run_in_processes(_precompile_task, tasks, jobs, timeout_s)}


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------
def _agreement(a, b):
    a, b = a.float().flatten(), b.float().flatten()
    return dict(max_abs_diff_over_max_abs=((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item(),
                rel_l2=((a - b).norm() / b.norm().clamp_min(1e-30)).item(),
                pearson=torch.corrcoef(torch.stack([a, b]))[0, 1].item())


class Bench:
    def __init__(self, args, *, device, dtype, smoke=False, lrp_backend="triton", budget_s=330.0, paths=None,
                 fake_oom=None):
        self.args, self.device, self.dtype, self.smoke = args, torch.device(device), dtype, smoke
        self.cuda = self.device.type == "cuda"
        self.lrp_backend, self.budget_s, self.paths = lrp_backend, budget_s, paths
        self.fake_oom = fake_oom or {}  # CPU smoke: (family, method) -> largest tokens per row that "fit"
        self.start = T_PROCESS
        self.model, self.model_key = None, None
        self.models = {}
        self.rows, self.skipped, self.agreements = [], [], []
        self.sdpa, self.precompile, self.broken = None, None, None
        self.plan = []
        self.env = env_record()
        self.env["command"] = " ".join(["python"] + sys.argv)
        if self.cuda:
            cuda_time_ms(lambda: None, warmup=0, repeats=1)  # the L2-flush buffer, outside measurements

    def elapsed(self):
        return time.perf_counter() - self.start

    def left(self):
        return self.budget_s - self.elapsed()

    def _free(self):
        if self.cuda:
            free_cuda()

    def load(self, key):
        if self.model_key == key:
            return self.model
        self.model, self.model_key = None, None
        self._free()
        t0 = time.perf_counter()
        smoke_init = dict(gain=1.5, norm_noise=0.1) if self.smoke else {}
        self.model = build_model(key, self.device, self.dtype, **smoke_init)
        if self.cuda:
            torch.cuda.synchronize()
        self.model_key = key
        params = list(self.model.parameters())
        self.models[key] = dict(name=SPECS[key]["name"], family=family(key), config=SPECS[key]["config"],
                                parameters=sum(p.numel() for p in params),
                                weights_GiB=sum(p.numel() * p.element_size() for p in params) / GiB,
                                param_dtypes=sorted({str(p.dtype) for p in params}),
                                attn_implementation=getattr(self.model.config, "_attn_implementation", None),
                                build_s=time.perf_counter() - t0)
        print(f"[{self.elapsed():6.1f}s] built {SPECS[key]['name']} on {self.device} in "
              f"{time.perf_counter() - t0:.1f} s "
              f"({self.models[key]['weights_GiB']:.2f} GiB of weights)", flush=True)
        return self.model

    # -- prediction for the budget --------------------------------------------------------------------
    def predict_s(self, key, method, batch, size):
        """Seconds to measure `method` at (batch, size): from the same family's largest measured case."""
        fam = family(key)
        done = [r for r in self.rows if r["family"] == fam and r["method"] == method and r["status"] == "ok"]
        if not done:
            return 0.0
        r = max(done, key=lambda x: cost_units(x["model"], x["B"], x["size"]))
        call = (r.get("first_call_s") or r["time_ms"] / 1e3) * cost_units(key, batch, size) / cost_units(
            r["model"], r["B"], r["size"])
        return 1.2 * (call + (call if call >= BIG_CALL_S else 2 * call + 0.3))

    # -- one call, guarded ------------------------------------------------------------------------------
    def _call(self, method, fam, inp, tokens):
        limit = self.fake_oom.get((fam, method))
        if limit is not None and tokens > limit:
            raise torch.cuda.OutOfMemoryError(f"simulated (CPU smoke): out of memory above {limit} tokens")
        return run_method(method, self.model, fam, inp, self.lrp_backend)

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _cuda_healthy(self):
        if not self.cuda:
            return True
        try:
            torch.ones(1, device=self.device).add_(1)
            torch.cuda.synchronize()
            return True
        except Exception:  # noqa: BLE001
            return False

    def measure(self, key, method, batch, size, kept):
        fam = family(key)
        model = self.load(key)
        n = tokens_of(key, size)
        row = dict(model=key, family=fam, method=method, B=batch, size=size, N=n, tokens=batch * n, status=None)
        if fam == "vit":
            row["image"] = f"{size}x{size}"
        if fam == "t5":
            row["N_dec"] = min(N_DEC, size)
        if method == "lrp_triton":
            row["backend"] = self.lrp_backend
        inp = make_inputs(key, model, batch, size, self.device, self.dtype)
        failure = None
        try:
            self._free()
            t0 = time.perf_counter()
            rel = self._call(method, fam, inp, n)
            self._sync()
            first = time.perf_counter() - t0
            row["first_call_s"] = first
            if rel is not None and method in ("lrp_triton", "ref_sdpa"):
                kept[method] = rel.detach().float().cpu()
            del rel
            if self.cuda:
                self._free()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                if first >= BIG_CALL_S:
                    kw = dict(warmup=0, repeats=1)
                elif first >= 0.5:
                    kw = dict(warmup=0, repeats=2)
                else:
                    kw = dict(warmup=1, repeats=None, target_ms=300.0, max_repeats=10)
                res = cuda_time_ms(lambda: self._call(method, fam, inp, n), **kw)
                peak = torch.cuda.max_memory_allocated()
                row.update(time_ms=res["median_ms"], time_min_ms=res["min_ms"], time_max_ms=res["max_ms"],
                           repeats=res["repeats"], peak_extra_GiB=(peak - base) / GiB, peak_total_GiB=peak / GiB)
            else:  # CPU smoke: the first call's wall clock (not a figure)
                row.update(time_ms=first * 1e3, repeats=1, peak_extra_GiB=None)
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - record and go on
            failure = "oom" if is_oom(e) else short_error(e)
        if failure is not None:
            row["status"] = failure
            kept.pop(method, None)
        del inp
        self._free()  # outside the except block: the traceback no longer pins tensors
        self.rows.append(row)
        tm, mem = row.get("time_ms"), row.get("peak_extra_GiB")
        print(f"[{self.elapsed():6.1f}s] {key:8s} {method:10s} B={batch:<3d} N={n:>6d}  {row['status']:>4s}"
              + (f"  {tm:10.2f} ms" if tm is not None else "")
              + (f"  peak +{mem:6.2f} GiB" if mem is not None else ""), flush=True)
        if failure is not None and failure != "oom" and not self._cuda_healthy():
            self.broken = f"CUDA context unusable after {key} {method} B={batch} size={size}: {failure}"
            print(f"[{self.elapsed():6.1f}s] {self.broken}; stopping", flush=True)
        return row

    def run_case(self, key, batch, size, methods=METHOD_ORDER):
        kept = {}
        for method in methods:
            if self.broken:
                self.skipped.append(dict(model=key, method=method, B=batch, size=size, why=self.broken))
                continue
            predicted = self.predict_s(key, method, batch, size)
            if self.elapsed() + predicted > self.budget_s:
                self.skipped.append(dict(model=key, method=method, B=batch, size=size,
                                         why=f"budget: needs ~{predicted:.0f} s, {self.left():.0f} s left"))
                print(f"[{self.elapsed():6.1f}s] {key} {method} B={batch} size={size}: skipped (budget, "
                      f"~{predicted:.0f} s)", flush=True)
                continue
            self.measure(key, method, batch, size, kept)
        if "lrp_triton" in kept and "ref_sdpa" in kept:
            agree = dict(model=key, B=batch, size=size, N=tokens_of(key, size),
                         **_agreement(kept["lrp_triton"], kept["ref_sdpa"]))
            self.agreements.append(agree)
            print(f"[{self.elapsed():6.1f}s] {key} B={batch} size={size}: lrp_triton vs ref_sdpa relevance: "
                  f"max rel diff {agree['max_abs_diff_over_max_abs']:.2e}, pearson {agree['pearson']:.5f}", flush=True)
        self.write()

    # -- derived tables ------------------------------------------------------------------------------
    def _row(self, key, method, batch, size):
        r = [x for x in self.rows if x["model"] == key and x["method"] == method and x["B"] == batch
             and x["size"] == size]
        return r[0] if r else None

    def ratio_rows(self):
        out = []
        cases = list(dict.fromkeys((r["model"], r["B"], r["size"]) for r in self.rows))
        for key, batch, size in cases:
            get = {m: self._row(key, m, batch, size) for m in METHOD_ORDER}
            ok = {m: (r if r is not None and r["status"] == "ok" else None) for m, r in get.items()}

            def ratio(a, b, field="time_ms"):
                a, b = ok[a], ok[b]
                if a is None or b is None or a.get(field) is None or not b.get(field):
                    return None
                return a[field] / b[field]

            def val(m, field):
                return ok[m][field] if ok[m] is not None else None

            agree = next((a for a in self.agreements if a["model"] == key and a["B"] == batch and a["size"] == size),
                         {})
            out.append(dict(
                model=key, B=batch, size=size, N=tokens_of(key, size),
                forward_ms=val("forward", "time_ms"), lrp_ms=val("lrp_triton", "time_ms"),
                ref_ms=val("ref_sdpa", "time_ms"), grad_ms=val("gradient", "time_ms"),
                lrp_over_ref_time=ratio("lrp_triton", "ref_sdpa"),
                lrp_over_ref_mem=ratio("lrp_triton", "ref_sdpa", "peak_extra_GiB"),
                lrp_over_fwd=ratio("lrp_triton", "forward"), ref_over_fwd=ratio("ref_sdpa", "forward"),
                grad_over_fwd=ratio("gradient", "forward"),
                lrp_mem_GiB=val("lrp_triton", "peak_extra_GiB"), ref_mem_GiB=val("ref_sdpa", "peak_extra_GiB"),
                grad_mem_GiB=val("gradient", "peak_extra_GiB"), fwd_mem_GiB=val("forward", "peak_extra_GiB"),
                lrp_status=get["lrp_triton"]["status"] if get["lrp_triton"] else "not run",
                ref_status=get["ref_sdpa"]["status"] if get["ref_sdpa"] else "not run",
                grad_status=get["gradient"]["status"] if get["gradient"] else "not run",
                pearson=agree.get("pearson"), max_rel_diff=agree.get("max_abs_diff_over_max_abs")))
        return out

    def record(self, complete):
        return dict(
            benchmark=SCRIPT, cpu_smoke=self.smoke, complete=complete, elapsed_s=self.elapsed(),
            budget_s=self.budget_s, env=self.env, dtype=str(self.dtype), device=str(self.device),
            lrp_backend=self.lrp_backend, definitions=DEFINITIONS, conventions=CONVENTIONS, models=self.models,
            plan=[dict(model=k, B=b, size=s) for k, b, s in self.plan], sdpa_probe=self.sdpa,
            precompile=self.precompile, cuda_broken=self.broken, results=self.rows, ratios=self.ratio_rows(),
            agreement=self.agreements, skipped=self.skipped)

    RATIO_COLUMNS = ["model", "B", "size", "N", "forward_ms", "lrp_ms", "ref_ms", "grad_ms", "lrp_over_ref_time",
                     "lrp_over_ref_mem", "lrp_over_fwd", "ref_over_fwd", "grad_over_fwd", "lrp_mem_GiB", "ref_mem_GiB",
                     "grad_mem_GiB", "ref_status", "grad_status", "pearson", "max_rel_diff"]

    def write(self, complete=False):
        if self.paths is None:
            return
        rec = self.record(complete)
        write_json(self.paths[0], rec)
        sections = [
            ("lrp_triton against the pure-PyTorch path (same model, batch, size; this run)",
             markdown_table(rec["ratios"], self.RATIO_COLUMNS)),
            ("All measurements",
             markdown_table(rec["results"], ["model", "method", "B", "size", "N", "status", "time_ms", "time_min_ms",
                                             "repeats", "peak_extra_GiB", "peak_total_GiB", "first_call_s"])),
        ]
        if self.skipped:
            sections.append(("Skipped", markdown_table(self.skipped)))
        if self.precompile:
            sections.append(("Triton precompile", markdown_table([{k: v for k, v in self.precompile.items()
                                                                   if k != "errors"}])
                             + "".join(f"\n- {e}" for e in self.precompile.get("errors", [])[:10]) + "\n"))
        if self.sdpa:
            sections.append(("SDPA backends (forward+backward, [1, 12, 1024, 64], bf16)",
                             markdown_table([dict(case=k, **v) for k, v in self.sdpa.items() if isinstance(v, dict)])
                             + f"\npriority order: {self.sdpa.get('priority_order')}\n"))
        sections.append(("Models", markdown_table([dict(model=k, **{x: v[x] for x in ("name", "parameters",
                                                                                     "weights_GiB", "param_dtypes")})
                                                   for k, v in self.models.items()])))
        notes = [f"{k}: {v}" for k, v in SHORT.items()]
        notes.append("ratios: *_over_ref = lrp_triton / ref_sdpa (time, peak memory above the weights); size = tokens "
                     "(bert, t5 encoder; t5 decoder prefix %d tokens) or image side (vit; N = tokens incl. CLS); "
                     "exact definitions: the JSON's 'definitions' and 'conventions'" % N_DEC)
        notes.append(f"elapsed: {rec['elapsed_s']:.0f} s of a {self.budget_s:.0f} s budget; complete: {complete}")
        if self.broken:
            notes.append(f"STOPPED EARLY: {self.broken}")
        if self.smoke:
            notes.insert(0, "CPU SMOKE RUN: times are wall-clock on a CPU, NOT figures")
        write_markdown(self.paths[1], "lrp_triton.attribute on BERT, ViT-B/16 and Flan-T5 (end-to-end)", rec["env"],
                       sections, notes)


# ------------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------------
def plan(args):
    """Cases (model key, batch, size) in priority order: a budget cut drops the last ones."""
    if args.quick:
        cases = [("t5", 1, 4096), ("bert", 1, 512), ("vit224", 1, 224)]
    else:
        key = [("t5", 1, n) for n in (4096, 8192, 16384, 32768)] + [("bert", 1, 512), ("vit224", 1, 224)]
        rest = ([("vit224", b, 224) for b in (8, 32)] + [("bert", 1, n) for n in (1024, 2048, 4096, 8192)]
                + [("bert", b, 512) for b in (8, 32)] + [("vit384", b, 384) for b in (1, 8, 32)]
                + [("vit512", b, 512) for b in (1, 8, 32)])
        cases = key + rest
    wanted = set(args.models.split(",")) if args.models else set(FAMILIES)
    return [c for c in cases if family(c[0]) in wanted]


def print_summary(bench):
    print("\n== lrp_triton vs ref_sdpa (pure-PyTorch path), same run")
    print(markdown_table(bench.ratio_rows(), ["model", "B", "size", "forward_ms", "lrp_ms", "ref_ms",
                                              "lrp_over_ref_time", "lrp_over_ref_mem", "lrp_over_fwd", "lrp_mem_GiB",
                                              "ref_mem_GiB", "ref_status", "pearson"]))


# ------------------------------------------------------------------------------------------------
# CPU smoke: the pipeline on tiny models, and ref_sdpa against lrp_triton.attribute for each family
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _bias_spy():
    """Records the shapes of the position biases transformers' sdpa_attention_forward folds into its float mask
    (None where this transformers has no create_position_bias_mask)."""
    try:
        import transformers.integrations.sdpa_attention as sdpa_mod
        original = sdpa_mod.create_position_bias_mask
    except (ImportError, AttributeError):
        yield None
        return
    seen = []

    def spy(position_bias, *a, **kw):
        seen.append(tuple(position_bias.shape))
        return original(position_bias, *a, **kw)

    sdpa_mod.create_position_bias_mask = spy
    try:
        yield seen
    finally:
        sdpa_mod.create_position_bias_mask = original


def cpu_smoke(args):
    from lrp_triton.backend import interpreter_requested

    interp = interpreter_requested()
    out_dir = Path(tempfile.mkdtemp(prefix="bench_encoders_smoke_"))  # never bench/results
    torch.manual_seed(0)
    torch.set_num_threads(1)
    failures = []
    # 1. the pipeline: every method on every family, a simulated OOM (ref_sdpa on T5 above 48 tokens), writers
    bench = Bench(args, device="cpu", dtype=torch.float32, smoke=True, lrp_backend="torch", budget_s=600.0,
                  paths=result_paths(SCRIPT, out_dir), fake_oom={("t5", "ref_sdpa"): 48})
    bench.plan = [("t5-tiny", 1, 48), ("t5-tiny", 1, 96), ("bert-tiny", 1, 32), ("bert-tiny", 2, 64),
                  ("vit-tiny", 1, 32), ("vit-tiny", 2, 32), ("vit-tiny48", 1, 48)]
    for key, batch, size in bench.plan:
        bench.run_case(key, batch, size)
    bench.write(complete=True)
    bad = [r for r in bench.rows if r["status"] not in ("ok", "oom")]
    if bad:
        failures.append(f"measurements failed: {bad}")
    oom = [r for r in bench.rows if r["family"] == "t5" and r["method"] == "ref_sdpa" and r["size"] == 96]
    if not oom or oom[0]["status"] != "oom":
        failures.append("the simulated OOM (t5 ref_sdpa at 96 tokens) was not recorded as 'oom'")
    ratios = bench.ratio_rows()
    if len(ratios) != len(bench.plan) or not all(r["lrp_over_ref_time"] is not None for r in ratios
                                                 if r["ref_status"] == "ok"):
        failures.append("ratio rows incomplete")
    for a in bench.agreements:
        if a["max_abs_diff_over_max_abs"] > 1e-4:
            failures.append(f"pipeline agreement {a}")
    problem = smoke_files_problem(bench.paths, ("cpu_smoke", "results", "ratios"))
    if problem:
        failures.append(problem)
    shutil.rmtree(out_dir, ignore_errors=True)

    # 2. numerical agreement on fresh random weights and inputs (float32), per family
    seed = int(os.environ.get("LRP_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"cpu-smoke: agreement checks on fresh random weights and inputs, seed {seed} (LRP_TEST_SEED={seed} "
          "repeats it)")
    tol = 1e-4
    worst = {}
    cases = {"bert": ("bert-tiny", 2, 37), "vit": ("vit-tiny48", 2, 48), "t5": ("t5-tiny", 2, 45)}

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    for fam, (key, batch, size) in cases.items():
        model = build_model(key, "cpu", torch.float32, seed=seed, gain=1.5, norm_noise=0.1)
        inp = make_inputs(key, model, batch, size, "cpu", torch.float32, seed=seed + 1)
        calls = ba.REF_CALLS[0]
        with _bias_spy() as bias_shapes:
            ref = run_method("ref_sdpa", model, fam, inp, "torch")
        if fam == "t5":  # transformers' T5Attention ran, with its dense [1, H, N, N] encoder bias, through SDPA
            dense = (1, model.config.num_heads, size, size)
            print(f"cpu-smoke: t5: ref_sdpa handed SDPA these materialised position biases: "
                  f"{sorted(set(bias_shapes))}")
            if bias_shapes is not None and dense not in bias_shapes:
                failures.append(f"t5: ref_sdpa did not pass the materialised encoder bias {dense} to SDPA")
        got, want = ba.REF_CALLS[0] - calls, expected_ref_calls(model, fam)
        if got != want:
            failures.append(f"{fam}: path (c) called the SDPA reference attention {got} times, expected {want}")
        left = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("LRP")}
                      | {str(m.config._attn_implementation) for m in model.modules()
                         if getattr(m, "config", None) is not None
                         and m.config._attn_implementation != "sdpa"})
        if left:
            failures.append(f"{fam}: the model is not restored after ref_sdpa: {left}")
        others = {"lrp_triton.attribute(backend='torch')": run_method("lrp_triton", model, fam, inp, "torch")}
        if interp:
            others["lrp_triton.attribute(backend='triton', TRITON_INTERPRET=1)"] = run_method(
                "lrp_triton", model, fam, inp, "triton")
        worst[fam] = 0.0
        for name, r in others.items():
            d = rel(r, ref)
            worst[fam] = max(worst[fam], d)
            print(f"cpu-smoke: {fam}: {name} vs ref_sdpa: max relative difference {d:.3e}")
        grad = run_method("gradient", model, fam, inp, "torch")
        d_b = rel(grad, run_method("lrp_gradient", model, fam, inp, "torch"))
        print(f"cpu-smoke: {fam}: plain gradient x input vs lrp_triton.attribute(mode='gradient'): max relative "
              f"difference {d_b:.3e}")
        if d_b > tol:
            failures.append(f"{fam}: the plain gradient path disagrees with attribute(mode='gradient'): {d_b:.3e}")
        d_grad = rel(grad, ref)
        print(f"cpu-smoke: {fam}: plain gradient x input vs ref_sdpa: max relative difference {d_grad:.3e} "
              "(must be large: the rules change the relevance)")
        if d_grad < 1e-2:
            failures.append(f"{fam}: ref_sdpa is indistinguishable from the plain gradient ({d_grad:.3e})")
        if worst[fam] > tol:
            failures.append(f"{fam}: ref_sdpa and lrp_triton.attribute disagree: {worst[fam]:.3e} > {tol}")
    if not interp:
        print("cpu-smoke: TRITON_INTERPRET is not 1: the Triton backend was not exercised")
    print("cpu-smoke: times above are CPU wall-clock, not figures (nothing written to bench/results)")
    if failures:
        for f in failures:
            print(f"cpu-smoke: FAIL: {f}")
        return 1
    print("cpu-smoke: agree: ref_sdpa (pure-PyTorch path) and lrp_triton.attribute relevance, max relative "
          "difference " + ", ".join(f"{fam} {d:.3e}" for fam, d in worst.items()) + f" (tol {tol:g}); pipeline ok")
    return 0


# ------------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(
        description="End-to-end benchmark of lrp_triton.attribute (AttnLRP, Triton) on BERT-base-, ViT-B/16- and "
                    "Flan-T5-base-shaped models with random bf16 weights: time and peak memory against the same rules "
                    "through the pure-PyTorch path with SDPA attention (T5: transformers' materialised position bias), "
                    "a plain forward and a plain forward+backward; T5 at 4k..32k input tokens. Needs a CUDA GPU "
                    "(except --cpu-smoke).")
    p.add_argument("--quick", action="store_true", help="smoke run: T5 at 4k, BERT at 512, ViT-B/16 at 224 (batch 1)")
    p.add_argument("--models", default=None,
                   help="comma-separated families to run: t5, bert, vit (default all)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new measurements that would end after this many seconds from the start "
                        "(default 330 full, 180 quick)")
    p.add_argument("--out", default=str(HERE / "results"), help="output folder (default bench/results)")
    p.add_argument("--no-precompile", action="store_true",
                   help="skip the parallel pre-compilation of the Triton kernels (they then compile serially on "
                        "first use, inside the measured first calls)")
    p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                   help="precompile worker processes (default: CPUs, at most 16)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="CPU only: every method on tiny float32 BERT / ViT / T5 models (simulated OOM), writers to a "
                        "temp dir, and checks that ref_sdpa and lrp_triton.attribute give the same relevance for each "
                        "family; prints the 'agree' line. Uses the Triton backend too if TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    if args.models:
        unknown = set(args.models.split(",")) - set(FAMILIES)
        if unknown:
            p.error(f"--models: unknown {sorted(unknown)}; choose from {', '.join(FAMILIES)}")

    if args.cpu_smoke:
        ba.ensure_lrp_triton()
        return cpu_smoke(args)

    require_cuda(SCRIPT)
    ba.ensure_lrp_triton()
    budget = args.budget_s if args.budget_s is not None else (180.0 if args.quick else 330.0)
    paths = result_paths(SCRIPT, args.out)
    bench = Bench(args, device="cuda", dtype=torch.bfloat16, lrp_backend="triton", budget_s=budget, paths=paths)
    bench.plan = plan(args)
    print(f"{SCRIPT}: {bench.env.get('gpu')} | torch {bench.env['torch']} | triton {bench.env['triton']} | "
          f"transformers {bench.env['transformers']} | budget {budget:.0f} s -> {paths[0]}", flush=True)
    try:
        bench.sdpa = sdpa_probe("cuda", torch.bfloat16)
    except Exception as e:  # noqa: BLE001
        bench.sdpa = {"error": {"probe": short_error(e)}}
    free_cuda()
    print(f"[{bench.elapsed():6.1f}s] SDPA backends: {bench.sdpa}", flush=True)
    families = [f for f in FAMILIES if any(family(k) == f for k, _, _ in bench.plan)]
    if not args.no_precompile and args.jobs >= 1 and families:
        timeout = max(30.0, min(180.0, 0.45 * budget))
        print(f"[{bench.elapsed():6.1f}s] precompiling Triton kernels for {families} in {args.jobs} processes "
              f"(at most {timeout:.0f} s)", flush=True)
        bench.precompile = precompile(families, args.jobs, timeout)
        pc = bench.precompile
        print(f"[{bench.elapsed():6.1f}s] precompile: {pc.get('done')}/{pc.get('tasks')} tasks in "
              f"{pc.get('seconds', 0):.0f} s; errors: {pc.get('errors') or pc.get('error') or 'none'}", flush=True)
    bench.write()
    for key, batch, size in bench.plan:
        bench.run_case(key, batch, size)
    bench.model = None
    free_cuda()
    bench.write(complete=bench.broken is None)
    print_summary(bench)
    print(f"\nwrote {paths[0]}\n      {paths[1]}")
    return 0 if bench.broken is None else 1


if __name__ == "__main__":
    sys.exit(main())
