#!/usr/bin/env python
"""End-to-end attribution benchmark (issue 4): `lrp_triton.attribute` on Llama-shaped models.

Methods (bf16, batch 1, random token ids, the explained logit is the model's own top prediction at the
last position; parameters frozen):
  forward          (a) the model's plain forward under torch.no_grad(): base model on the ids, then the
                   LM head on the last position only (the HF attention implementation is "sdpa")
  gradient         (b) plain forward + backward to the input embeddings: embeddings as a leaf, base
                   model (SDPA attention, exact gradients), LM head on the last position only,
                   torch.autograd.grad of the explained logit, then (x * grad).sum(-1)
  ref_sdpa         (c) the same AttnLRP rules in plain PyTorch with SDPA attention, i.e. the reference
                   library lxt's method (see DEFINITIONS["ref_sdpa"] for exactly what runs)
  ref_sdpa+ckpt    (c) with checkpoint=True (each decoder layer recomputed in the backward)
  lrp_triton       lrp_triton.attribute(model, ids, mode="attnlrp", backend="triton")
  lrp_triton+ckpt  the same with checkpoint=True

Models: Llama-3.1-8B-shaped and Llama-3.2-1B-shaped LlamaForCausalLM, random bf16 weights created on
the GPU (no CPU copy of the weights), max_position_embeddings 131072.

Measured: time (CUDA events, median), peak memory above what was allocated before the call (weights,
ids and the L2-flush buffer are not counted), OOM recorded as "oom"; N = 1k, 2k, 4k, ... up to the
largest that fits (--max-n); then, per attribution method, a search (doubling, then bisection to 1k
tokens, bounded by the time budget) for the longest context that fits on the GPU. Goals are evaluated
as ratios of numbers measured in the same run.

  python bench/bench_attribute.py                  # full run (both models, ~7.5 min on an H100)
  python bench/bench_attribute.py --quick          # 1B model, N in {1k, 4k}, no search
  python bench/bench_attribute.py --model 8b --max-n 32768 --no-search --out /tmp/res
  python bench/bench_attribute.py --cpu-smoke      # CPU: tiny model, checks the code paths and that
                                                   # (c) and lrp_triton.attribute agree; no figures

Without a GPU (and without --cpu-smoke) it prints "needs a CUDA GPU" and exits with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

T_PROCESS = time.perf_counter()  # the time budget counts from here (imports included)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # `common` beside this file

import torch  # noqa: E402

from common import (cuda_time_ms, env_record, free_cuda, is_oom, markdown_table, require_cuda,  # noqa: E402
                    result_paths, sdpa_backends_accepting, sdpa_priority_order, short_error, smoke_files_problem,
                    write_json, write_markdown)

SCRIPT = "bench_attribute"
GiB = 2 ** 30
REF_ATTENTION_NAME = "lrp_bench_sdpa_ref"  # script-local attention implementation of path (c)
N_8K = 8192
N_128K = 131072
BIG_CALL_S = 4.0  # a call predicted to take longer is timed once (after pre-tuning the attention kernels)

# ------------------------------------------------------------------------------------------------
# What is measured: stated again in the JSON
# ------------------------------------------------------------------------------------------------
METHODS = {
    "forward": dict(attribution=False, triton=False, checkpoint=False),
    "gradient": dict(attribution=True, triton=False, checkpoint=False),
    "ref_sdpa": dict(attribution=True, triton=False, checkpoint=False),
    "ref_sdpa+ckpt": dict(attribution=True, triton=False, checkpoint=True),
    "lrp_triton": dict(attribution=True, triton=True, checkpoint=False),
    "lrp_triton+ckpt": dict(attribution=True, triton=True, checkpoint=True),
}
SEARCH_METHODS = ("gradient", "ref_sdpa", "lrp_triton", "lrp_triton+ckpt", "ref_sdpa+ckpt")  # cheap first
SWEEP_ORDER = ("forward", "lrp_triton", "lrp_triton+ckpt", "gradient", "ref_sdpa", "ref_sdpa+ckpt")  # per N
SHORT = {  # one line each for the markdown; the JSON has DEFINITIONS
    "forward": "(a) plain HF forward, no grad, LM head at the last position only (SDPA attention)",
    "gradient": "(b) plain forward + backward of the explained logit to the input embeddings (SDPA, exact grads)",
    "ref_sdpa": "(c) AttnLRP in PyTorch with SDPA attention (lxt's method: dQ/4, dK/4, dV/2 around SDPA; "
                "lrp_triton's torch norm/MLP rules), same attribute driver",
    "ref_sdpa+ckpt": "(c) with checkpoint=True",
    "lrp_triton": "lrp_triton.attribute(mode='attnlrp', backend='triton')",
    "lrp_triton+ckpt": "lrp_triton.attribute(..., checkpoint=True)",
}

DEFINITIONS = {
    "forward": "(a) plain forward, no grad: with torch.no_grad(): h = model.model(input_ids=ids, use_cache=False)[0]; "
               "model.lm_head(h[:, -1]). HF attention implementation 'sdpa'.",
    "gradient": "(b) plain forward+backward to the input embeddings: e = embed(ids).detach().requires_grad_(); "
                "h = model.model(inputs_embeds=e)[0] (SDPA attention, exact gradients everywhere); "
                "logits = lm_head(h[:, -1]) (last position only, like attribute); score = logit of the argmax "
                "token; g = torch.autograd.grad(score, e); relevance (e * g).sum(-1) in float32. "
                "Parameters frozen (no weight gradients).",
    "ref_sdpa": "(c) the AttnLRP rules through plain PyTorch with the model's SDPA attention, the way the reference "
                "library lxt (lxt.efficient) implements them: lrp_triton.apply(model, 'attnlrp', backend='torch') "
                "swaps LlamaRMSNorm and LlamaMLP for lrp_triton's pure-PyTorch LRP ops (RMSNorm identity rule; "
                "SiLU identity rule + uniform rule on the gate product; no Triton anywhere), and the model's "
                f"attention implementation is switched to a script-local one registered with transformers' "
                f"AttentionInterface as '{REF_ATTENTION_NAME}' (and with AttentionMaskInterface as transformers' "
                "own 'sdpa' mask function, so masks are exactly what SDPA gets). That attention function applies "
                "an identity-forward autograd Function that scales the gradient of query by 1/4, key by 1/4 and "
                "value by 1/2 (lxt's divide_gradient on q, k, v, after RoPE), then calls transformers' "
                "sdpa_attention_forward, i.e. torch.nn.functional.scaled_dot_product_attention(is_causal=True, "
                "enable_gqa=True) whose backend (flash / cuDNN / efficient) torch picks. Scaling the input "
                "gradients of SDPA is identical to scaling its output gradients dQ, dK, dV, which is the AttnLRP "
                "gradient form (1/4, 1/4, 1/2). The same lrp_triton.attribute driver then runs (embedding, forward, "
                "last-position logits, one backward, relevance = (e * grad).sum(-1)). Note: attribute(backend="
                "'torch') is NOT this path (its attention materialises chunked scores in PyTorch); and lxt's own "
                "norm/MLP patches are different autograd code for the same rules.",
    "ref_sdpa+ckpt": "(c) with attribute(..., checkpoint=True).",
    "lrp_triton": "lrp_triton.attribute(model, ids, mode='attnlrp', backend='triton'): Triton attention "
                  "(flash-style forward, AttnLRP backward), Triton RMSNorm and gated-MLP LRP kernels.",
    "lrp_triton+ckpt": "lrp_triton.attribute(..., checkpoint=True).",
}

CONVENTIONS = {
    "time": "median of CUDA-event timings of whole calls (L2 flushed before each), after a first untimed call "
            "(compilation, autotuning); a call predicted to take >= %.0f s is timed once: for Triton methods "
            "after pre-tuning the attention kernels at that length with one standalone lrp_attention "
            "forward+backward (so the timed call is the first full call at that N)" % BIG_CALL_S,
    "memory": "peak torch.cuda.max_memory_allocated during the timed calls minus what was allocated before them "
              "(weights, input ids, the L2-flush buffer are not counted; everything the call allocates is): "
              "peak_extra_GiB. peak_total_GiB = absolute peak including the weights.",
    "oom": "torch.cuda.OutOfMemoryError (or a RuntimeError saying 'out of memory') -> status 'oom'; a method "
           "that ran out of memory at N is not tried at larger N in the sweep ('skipped: oom at smaller N').",
    "search": "longest context per attribution method: from the sweep's largest fit and smallest OOM, doubling "
              "(capped at the max length), then bisection on multiples of the granularity; each probe is one "
              "call (its time may include autotuning); bounded by the time budget (bracket reported).",
    "ratios": "time and memory ratios of numbers measured in this run, same model, same N; memory ratios use "
              "peak_extra_GiB.",
    "inputs": "batch 1, token ids uniform in [0, vocab), seed 0; target = the model's top prediction at the last "
              "position; weights: matrices N(0, 1/fan_in), embeddings N(0, 1), norm weights 1 (+ small noise)",
}

GOALS = {
    "attr_vs_forward": "lrp_triton time <= 2.2 x plain forward time (same N)",
    "attr_vs_ref_time_8k": "lrp_triton time <= 0.6 x ref_sdpa (c) time at 8k tokens",
    "attr_vs_ref_mem_8k": "lrp_triton peak memory <= 0.5 x ref_sdpa (c) peak memory at 8k tokens",
    "8b_at_128k": "8B model attributed at 128k (131072) tokens (lrp_triton+ckpt, or lrp_triton)",
}

# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}
MODEL_SPECS = {
    "1b": dict(name="Llama-3.2-1B-shaped", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
               num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
               tie_word_embeddings=True, rope_parameters=dict(_LLAMA3_ROPE, factor=32.0)),
    "8b": dict(name="Llama-3.1-8B-shaped", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
               tie_word_embeddings=False, rope_parameters=dict(_LLAMA3_ROPE, factor=8.0)),
    # CPU smoke only (like tests/model_zoo.py's llama)
    "tiny": dict(name="tiny-llama (CPU smoke)", vocab_size=101, hidden_size=64, intermediate_size=96,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 tie_word_embeddings=False,
                 rope_parameters=dict(_LLAMA3_ROPE, factor=8.0, original_max_position_embeddings=16)),
}


def ensure_lrp_triton():
    """Imports lrp_triton; where it is not installed (the device machine), through a shadow package in /tmp
    made of links to lrp_triton/*, kernels/ and models/ (setup.py's package_dir map), as run_gpu.sh does."""
    try:
        import lrp_triton.kernels  # noqa: F401
        import lrp_triton.models  # noqa: F401
        return
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "lrp_triton" or m.startswith("lrp_triton.")]:
        del sys.modules[name]
    shadow = Path(tempfile.mkdtemp(prefix="lrp_shadow_"))
    pkg = shadow / "lrp_triton"
    pkg.mkdir()
    for f in (ROOT / "lrp_triton").iterdir():
        (pkg / f.name).symlink_to(f)
    (pkg / "kernels").symlink_to(ROOT / "kernels")
    (pkg / "models").symlink_to(ROOT / "models")
    sys.path.insert(0, str(shadow))
    import lrp_triton.kernels  # noqa: F401
    import lrp_triton.models  # noqa: F401


def build_model(key, device, dtype, max_positions, seed=0, gain=1.0, norm_noise=0.02):
    """A random-weight LlamaForCausalLM created directly on `device` in `dtype` (eval, frozen)."""
    import transformers

    spec = {k: v for k, v in MODEL_SPECS[key].items() if k != "name"}
    config = transformers.LlamaConfig(**spec, max_position_embeddings=max_positions, rms_norm_eps=1e-5,
                                      attention_bias=False, mlp_bias=False)
    with torch.device(device):
        try:
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
        except TypeError:  # older spelling
            model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=dtype,
                                                                  attn_implementation="sdpa")
    if next(model.parameters()).device.type != torch.device(device).type:  # the device context was not honoured
        print(f"warning: transformers built the model on {next(model.parameters()).device}; moving it", flush=True)
        model = model.to(device)
    if next(model.parameters()).dtype != dtype:  # (a cast would also round the float32 RoPE buffers: avoided)
        print(f"warning: transformers built {next(model.parameters()).dtype} weights; casting", flush=True)
        model = model.to(dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():  # our own init, on the device: N(0, gain^2/fan_in), embeddings N(0, 1), norms ~1
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(1.0, norm_noise, generator=gen)
            elif "embed_tokens" in name:
                p.normal_(0.0, 1.0, generator=gen)
            else:
                p.normal_(0.0, gain / math.sqrt(p.shape[-1]), generator=gen)
    model.eval()
    model.requires_grad_(False)
    return model


def layer_params(key):
    s = MODEL_SPECS[key]
    d, hd = s["hidden_size"], s["head_dim"]
    attention = 2 * d * hd * s["num_attention_heads"] + 2 * d * hd * s["num_key_value_heads"]  # q, o and k, v
    return attention + 3 * d * s["intermediate_size"]


def cost_units(key, n):
    """A rough work count for predicting run time from a smaller N: linear layers + 1.5 x causal attention."""
    s = MODEL_SPECS[key]
    lin = 2.0 * layer_params(key) * s["num_hidden_layers"] * n
    attn = 2.0 * n * n * s["head_dim"] * s["num_attention_heads"] * s["num_hidden_layers"]
    return lin + 1.5 * attn


def autotune_estimate_s(key, n):
    """Autotuning the three attention kernels at a new length: ~6 configs x ~8 runs each of one layer."""
    s = MODEL_SPECS[key]
    layer = 2.0 * n * n * s["head_dim"] * s["num_attention_heads"] * 3.5  # fwd + bwd of one layer
    return 48 * layer / 2.5e14 + 5.0


# ------------------------------------------------------------------------------------------------
# Path (c): AttnLRP in PyTorch with SDPA attention (lxt's method)
# ------------------------------------------------------------------------------------------------
class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `factor` (lxt's divide_gradient)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


REF_CALLS = [0]  # calls of ref_sdpa_attention (the CPU smoke checks that path (c) really runs it)


def ref_sdpa_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """transformers attention-interface signature. AttnLRP gradient form around SDPA: dQ/4, dK/4, dV/2."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    REF_CALLS[0] += 1
    if "dropout" in kwargs:
        kwargs["dropout"] = 0.0
    query = _ScaleGrad.apply(query, 0.25)
    key = _ScaleGrad.apply(key, 0.25)
    value = _ScaleGrad.apply(value, 0.5)
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


_REF_REGISTERED = False


def register_ref_attention():
    global _REF_REGISTERED
    if _REF_REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(REF_ATTENTION_NAME, ref_sdpa_attention)
    try:
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]
    except Exception:  # noqa: BLE001 - fall back to lrp_triton's padding-only mask function
        from lrp_triton.attention_interface import lrp_attention_mask as mask_fn
    AttentionMaskInterface.register(REF_ATTENTION_NAME, mask_fn)
    _REF_REGISTERED = True


@contextlib.contextmanager
def ref_applied(model):
    """lrp_triton.apply with the PyTorch norm/MLP rules, attention switched to REF_ATTENTION_NAME; undone after."""
    import lrp_triton
    from lrp_triton import attention_interface

    register_ref_attention()
    handle = lrp_triton.apply(model, "attnlrp", backend="torch")
    try:
        switched = 0
        for module in model.modules():
            config = module.__dict__.get("config")
            if getattr(config, "_attn_implementation_internal", None) == attention_interface.NAME:
                config._attn_implementation_internal = REF_ATTENTION_NAME  # the handle's private copy
                switched += 1
        if not switched:
            raise RuntimeError("ref_sdpa: found no config set to lrp_triton's attention to switch to SDPA")
        yield handle
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------------------
# The methods: each runs one whole call and returns the relevance [1, N] (None for the forward)
# ------------------------------------------------------------------------------------------------
def run_method(method, model, ids, lrp_backend):
    import lrp_triton

    if method == "forward":
        with torch.no_grad():
            hidden = model.model(input_ids=ids, use_cache=False)[0]
            model.lm_head(hidden[:, -1])
        return None
    if method == "gradient":
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with torch.enable_grad():
            hidden = model.model(inputs_embeds=embeds, use_cache=False)[0]
            logits = model.lm_head(hidden[:, -1])
            score = logits.gather(-1, logits.detach().argmax(-1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(score, embeds)
        return (embeds.float() * grad.float()).sum(-1)
    ckpt = METHODS[method]["checkpoint"]
    if method.startswith("ref_sdpa"):
        with ref_applied(model):
            return lrp_triton.attribute(model, ids, mode="attnlrp", backend="torch", checkpoint=ckpt).relevance
    if method.startswith("lrp_triton"):
        return lrp_triton.attribute(model, ids, mode="attnlrp", backend=lrp_backend, checkpoint=ckpt).relevance
    raise ValueError(method)


def make_ids(vocab, n, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=gen).to(device)


def prewarm_attention(key, n, device, dtype):
    """One standalone lrp_attention forward+backward at length n: compiles and autotunes the Triton attention
    kernels for n's length bucket with the model's head layout, so the next full call does not."""
    from lrp_triton.ops import lrp_attention

    s = MODEL_SPECS[key]
    h, hkv, d = s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"]
    q = torch.randn(1, h, n, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(1, hkv, n, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(1, hkv, n, d, device=device, dtype=dtype, requires_grad=True)
    out = lrp_attention(q, k, v, causal=True, scale=d ** -0.5, mode="attnlrp", backend="triton")
    torch.autograd.grad(out, (q, k, v), torch.randn_like(out))


def sdpa_probe(device, dtype, head_dims=(64, 128), n=1024):
    """Which SDPA backends take the shape path (c) and (b) use (B=1, H=32, Hkv=8, causal, enable_gqa=True),
    forward and backward; and the backend torch picks by default (the one that runs with all enabled)."""
    out = {}
    for d in head_dims:
        q = torch.randn(1, 32, n, d, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(1, 8, n, d, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(1, 8, n, d, device=device, dtype=dtype, requires_grad=True)
        out[f"head_dim_{d}"] = sdpa_backends_accepting(q, k, v, is_causal=True, enable_gqa=True)
    order = sdpa_priority_order()
    if order is not None:
        out["priority_order"] = order
    return out


def next_pow2(n):
    return 1 << max(0, (n - 1).bit_length())


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args, *, device, dtype, smoke=False, lrp_backend="triton", granularity=1024,
                 search_cap=N_128K, max_positions=N_128K, budget_s=440.0, paths=None, fake_oom=None):
        self.args, self.device, self.dtype, self.smoke = args, torch.device(device), dtype, smoke
        self.cuda = self.device.type == "cuda"
        self.lrp_backend, self.granularity, self.search_cap = lrp_backend, granularity, search_cap
        self.max_positions, self.budget_s, self.paths = max_positions, budget_s, paths
        self.fake_oom = fake_oom or {}  # CPU smoke: method -> largest N that "fits" (exercises the OOM paths)
        self.start = T_PROCESS
        self.model, self.model_key = None, None
        self.weights_bytes = {}
        self.tuned = set()  # (model key, length bucket) whose attention kernels are autotuned
        self.rows, self.searches, self.skipped, self.notes = [], [], [], []
        self.agreement = {}
        self.sdpa = None
        self.env = env_record()
        self.env["command"] = " ".join(["python"] + sys.argv)
        if self.cuda:
            cuda_time_ms(lambda: None, warmup=0, repeats=1)  # allocate the L2-flush buffer now, outside measurements

    # -- bookkeeping ---------------------------------------------------------------------------
    def elapsed(self):
        return time.perf_counter() - self.start

    def left(self):
        return self.budget_s - self.elapsed()

    def load(self, key):
        if self.model_key == key:
            return self.model
        self.model = None
        free_cuda()
        t0 = time.perf_counter()
        self.model = build_model(key, self.device, self.dtype, self.max_positions,
                                 **(dict(gain=1.5, norm_noise=0.1) if key == "tiny" else {}))
        if self.cuda:
            torch.cuda.synchronize()
        self.model_key = key
        self.weights_bytes[key] = sum(p.numel() * p.element_size() for p in self.model.parameters())
        print(f"[{self.elapsed():6.1f}s] built {MODEL_SPECS[key]['name']} on {self.device} in "
              f"{time.perf_counter() - t0:.1f} s ({self.weights_bytes[key] / GiB:.2f} GiB of weights)", flush=True)
        return self.model

    def rows_of(self, key, method, status="ok"):
        return [r for r in self.rows if r["model"] == key and r["method"] == method and r["status"] == status]

    def predict_call_s(self, key, method, n):
        """Seconds one call of `method` at n should take, from its largest measured N (else from forward)."""
        factor = 1.0
        done = [(r["N"], r["time_ms"] / 1e3) for r in self.rows_of(key, method)]
        done += [(p["N"], p["probe_s"]) for s in self.searches if s["model"] == key and s["method"] == method
                 for p in s["probes"] if p["status"] == "ok"]
        if not done:
            done = [(r["N"], r["time_ms"] / 1e3) for r in self.rows_of(key, "forward")]
            factor = {"forward": 1.0, "gradient": 3.0, "ref_sdpa": 3.5, "lrp_triton": 3.0}.get(method, 4.5)
        if not done:
            return None
        n0, t0 = max(done)
        return 1.2 * factor * t0 * cost_units(key, n) / cost_units(key, n0)

    def needs_tuning(self, key, method, n):
        return (self.cuda and METHODS[method]["triton"] and self.lrp_backend == "triton"
                and (key, next_pow2(n)) not in self.tuned)

    def predict_measure_s(self, key, method, n, single_call=False):
        call = self.predict_call_s(key, method, n)
        if call is None:
            return 0.0
        extra = autotune_estimate_s(key, n) if (self.needs_tuning(key, method, n) and n >= 16384) else 0.0
        if single_call or call >= BIG_CALL_S:
            return call + extra
        if call >= 0.5:
            return 3 * call + extra
        return 5 * call + 0.4 + extra

    def over_budget(self, predicted):
        return self.elapsed() + predicted > self.budget_s

    # -- one call, guarded -----------------------------------------------------------------------
    def _call(self, method, ids):
        limit = self.fake_oom.get(method)
        if limit is not None and ids.shape[1] > limit:
            raise torch.cuda.OutOfMemoryError(f"simulated (CPU smoke): out of memory above N={limit}")
        return run_method(method, self.model, ids, self.lrp_backend)

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _free(self):
        if self.cuda:
            free_cuda()

    # -- one (model, method, N) measurement ----------------------------------------------------------
    def measure(self, key, method, n):
        model = self.load(key)
        row = dict(model=key, method=method, N=n, checkpoint=METHODS[method]["checkpoint"], status=None)
        if METHODS[method]["triton"]:
            row["backend"] = self.lrp_backend
        ids = make_ids(model.config.vocab_size, n, self.device)
        failure = None
        try:
            self._free()
            pred = self.predict_call_s(key, method, n)
            single = pred is not None and pred >= BIG_CALL_S
            if single and self.needs_tuning(key, method, n):
                t0 = time.perf_counter()
                prewarm_attention(key, n, self.device, self.dtype)
                self._sync()
                row["prewarm_s"] = time.perf_counter() - t0
                self.tuned.add((key, next_pow2(n)))
                self._free()
            if not single and self.cuda:  # first call: compilation / autotuning / allocator growth, untimed
                t0 = time.perf_counter()
                self._call(method, ids)
                self._sync()
                row["first_call_s"] = time.perf_counter() - t0
                self._free()
            if self.cuda:
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                if single:
                    kw = dict(warmup=0, repeats=1)
                elif row.get("first_call_s", 0.0) >= 0.5:
                    kw = dict(warmup=0, repeats=2)
                else:
                    kw = dict(warmup=1, repeats=None, target_ms=300.0, max_repeats=10)
                res = cuda_time_ms(lambda: self._call(method, ids), **kw)
                peak = torch.cuda.max_memory_allocated()
                row.update(time_ms=res["median_ms"], time_min_ms=res["min_ms"], time_max_ms=res["max_ms"],
                           repeats=res["repeats"], peak_extra_GiB=(peak - base) / GiB, peak_total_GiB=peak / GiB)
                row["timed"] = "single call at this N" + (" after attention pre-tuning" if "prewarm_s" in row else "") \
                    if single else "median of repeats after a first call"
            else:  # CPU smoke: one timed call, wall clock (not a figure)
                t0 = time.perf_counter()
                self._call(method, ids)
                row.update(time_ms=(time.perf_counter() - t0) * 1e3, repeats=1, peak_extra_GiB=None)
            row["status"] = "ok"
            if METHODS[method]["triton"]:
                self.tuned.add((key, next_pow2(n)))
        except Exception as e:  # noqa: BLE001 - record and go on
            failure = "oom" if is_oom(e) else short_error(e)
        if failure is not None:
            row["status"] = failure
        del ids
        self._free()  # outside the except block: the traceback no longer pins tensors
        self.rows.append(row)
        tm = row.get("time_ms")
        mem = row.get("peak_extra_GiB")
        print(f"[{self.elapsed():6.1f}s] {key} {method:16s} N={n:>7d}  {row['status']:>4s}"
              + (f"  {tm:10.2f} ms" if tm is not None else "")
              + (f"  peak +{mem:6.2f} GiB" if mem is not None else ""), flush=True)
        self.write()
        return row

    # -- a sweep over N -----------------------------------------------------------------------------
    def sweep(self, key, ns, methods):
        for n in ns:
            for method in methods:
                if any(r["N"] == n for r in self.rows if r["model"] == key and r["method"] == method):
                    continue
                smaller_oom = [r["N"] for r in self.rows_of(key, method, "oom") if r["N"] < n]
                smaller_oom += [p["N"] for x in self.searches if x["model"] == key and x["method"] == method
                                for p in x["probes"] if p["status"] == "oom" and p["N"] <= n]
                if smaller_oom:
                    self.skipped.append(dict(model=key, method=method, N=n,
                                             why=f"oom at smaller N ({min(smaller_oom)})"))
                    continue
                predicted = self.predict_measure_s(key, method, n)
                if self.over_budget(predicted):
                    self.skipped.append(dict(model=key, method=method, N=n,
                                             why=f"budget: needs ~{predicted:.0f} s, {self.left():.0f} s left"))
                    print(f"[{self.elapsed():6.1f}s] {key} {method} N={n}: skipped (budget, ~{predicted:.0f} s)",
                          flush=True)
                    continue
                self.measure(key, method, n)

    # -- the longest context a method can attribute --------------------------------------------------
    def probe(self, key, method, n):
        """One call at n: (status, seconds, peak extra GiB)."""
        model = self.load(key)
        ids = make_ids(model.config.vocab_size, n, self.device)
        status, secs, peak = None, None, None
        try:
            self._free()
            if self.cuda:
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            self._call(method, ids)
            self._sync()
            secs = time.perf_counter() - t0
            if self.cuda:
                peak = (torch.cuda.max_memory_allocated() - base) / GiB
            status = "ok"
            if METHODS[method]["triton"]:
                self.tuned.add((key, next_pow2(n)))
        except Exception as e:  # noqa: BLE001
            status = "oom" if is_oom(e) else short_error(e)
        del ids
        self._free()
        print(f"[{self.elapsed():6.1f}s] {key} {method:16s} probe N={n:>7d}  {status}"
              + (f"  {secs:.2f} s" if secs is not None else "")
              + (f"  peak +{peak:.2f} GiB" if peak is not None else ""), flush=True)
        return dict(N=n, status=status, probe_s=secs, peak_extra_GiB=peak)

    def search(self, key, method):
        g, cap = self.granularity, self.search_cap
        rows = [r for r in self.rows if r["model"] == key and r["method"] == method]
        fits = [r["N"] for r in rows if r["status"] == "ok"]
        ooms = [r["N"] for r in rows if r["status"] == "oom"]
        lo = max(fits) if fits else None
        hi = min([o for o in ooms if lo is None or o > lo], default=None)
        rec = dict(model=key, method=method, granularity=g, cap=cap, probes=[], stopped=None)
        self.searches.append(rec)
        while True:
            known = lo or 0  # 0: nothing known to fit yet
            if hi is None:  # doubling
                if known >= cap:
                    rec["stopped"] = "fits at the cap"
                    break
                n = min(2 * known, cap) if known else g
            else:  # bisection on multiples of g
                if hi - known <= g:
                    rec["stopped"] = "converged" if known else "nothing fits at the smallest length"
                    break
                n = max(((known + hi) // 2) // g * g, known + g)
                if n >= hi:
                    rec["stopped"] = "converged"
                    break
            predicted = self.predict_measure_s(key, method, n, single_call=True)
            if self.over_budget(predicted):
                rec["stopped"] = f"budget (next probe N={n} needs ~{predicted:.0f} s, {self.left():.0f} s left)"
                break
            p = self.probe(key, method, n)
            rec["probes"].append(p)
            if p["status"] == "ok":
                lo = n
            elif p["status"] == "oom":
                hi = n
            else:
                rec["stopped"] = f"probe failed: {p['status']}"
                break
        rec["longest_fit"], rec["first_oom"] = lo, hi
        rec["complete"] = rec["stopped"] in ("converged", "fits at the cap", "nothing fits at the smallest length")
        print(f"[{self.elapsed():6.1f}s] {key} {method:16s} longest context: {lo} (first oom: {hi}; "
              f"{rec['stopped']})", flush=True)
        self.write()
        return rec

    # -- derived tables ----------------------------------------------------------------------------
    def _ok(self, key, method, n):
        r = [x for x in self.rows if x["model"] == key and x["method"] == method and x["N"] == n]
        return r[0] if r and r[0]["status"] == "ok" else None

    def ratio_rows(self):
        out = []
        for key in dict.fromkeys(r["model"] for r in self.rows):
            for n in sorted({r["N"] for r in self.rows if r["model"] == key}):
                get = lambda m: self._ok(key, m, n)  # noqa: E731
                fwd, grad, lrp, lrpc = get("forward"), get("gradient"), get("lrp_triton"), get("lrp_triton+ckpt")
                ref, refc = get("ref_sdpa"), get("ref_sdpa+ckpt")
                row = dict(model=key, N=n)

                def ratio(a, b, field="time_ms"):
                    if a is None or b is None or a.get(field) is None or not b.get(field):
                        return None
                    return a[field] / b[field]

                row.update(
                    forward_ms=fwd and fwd["time_ms"], lrp_ms=lrp and lrp["time_ms"],
                    lrp_ckpt_ms=lrpc and lrpc["time_ms"], ref_ms=ref and ref["time_ms"],
                    lrp_over_fwd=ratio(lrp, fwd), lrp_ckpt_over_fwd=ratio(lrpc, fwd), grad_over_fwd=ratio(grad, fwd),
                    lrp_over_ref_time=ratio(lrp, ref), lrp_over_ref_mem=ratio(lrp, ref, "peak_extra_GiB"),
                    lrp_ckpt_over_ref_ckpt_time=ratio(lrpc, refc),
                    lrp_ckpt_over_ref_ckpt_mem=ratio(lrpc, refc, "peak_extra_GiB"),
                    lrp_mem_GiB=lrp and lrp.get("peak_extra_GiB"), ref_mem_GiB=ref and ref.get("peak_extra_GiB"))
                out.append(row)
        return out

    def goal_rows(self):
        out = []
        models = list(dict.fromkeys(r["model"] for r in self.rows))
        for key in models:
            ns = sorted({r["N"] for r in self.rows if r["model"] == key})
            n8 = N_8K if N_8K in ns else None
            for n in ([n8] if n8 else []) + [x for x in ns if x != n8]:
                lrp, fwd = self._ok(key, "lrp_triton", n), self._ok(key, "forward", n)
                if lrp and fwd:
                    v = lrp["time_ms"] / fwd["time_ms"]
                    out.append(dict(goal="attr_vs_forward", model=key, N=n, value=v, target="<= 2.2", met=v <= 2.2))
            if n8:
                lrp, ref = self._ok(key, "lrp_triton", n8), self._ok(key, "ref_sdpa", n8)
                status = {m: next((r["status"] for r in self.rows if r["model"] == key and r["method"] == m
                                   and r["N"] == n8), "not run") for m in ("lrp_triton", "ref_sdpa")}
                if lrp and ref:
                    v = lrp["time_ms"] / ref["time_ms"]
                    out.append(dict(goal="attr_vs_ref_time_8k", model=key, N=n8, value=v, target="<= 0.6",
                                    met=v <= 0.6))
                    if lrp.get("peak_extra_GiB") is not None and ref.get("peak_extra_GiB"):
                        v = lrp["peak_extra_GiB"] / ref["peak_extra_GiB"]
                        out.append(dict(goal="attr_vs_ref_mem_8k", model=key, N=n8, value=v, target="<= 0.5",
                                        met=v <= 0.5))
                elif lrp and status["ref_sdpa"] == "oom":
                    out.append(dict(goal="attr_vs_ref_time_8k", model=key, N=n8, value=None, target="<= 0.6",
                                    met=True, note="ref_sdpa ran out of memory at 8k; lrp_triton did not"))
                else:
                    out.append(dict(goal="attr_vs_ref_time_8k", model=key, N=n8, value=None, target="<= 0.6",
                                    met=None, note=f"not measured: {status}"))
        if "8b" in models or any(s["model"] == "8b" for s in self.searches):
            runs = [r for r in self.rows if r["model"] == "8b" and r["N"] >= N_128K
                    and r["method"] in ("lrp_triton", "lrp_triton+ckpt")]
            runs += [dict(p, method=s["method"]) for s in self.searches if s["model"] == "8b"
                     and s["method"] in ("lrp_triton", "lrp_triton+ckpt") for p in s["probes"] if p["N"] >= N_128K]
            ok = [r for r in runs if r["status"] == "ok"]
            if ok:
                r = ok[0]
                secs = r["time_ms"] / 1e3 if r.get("time_ms") is not None else r.get("probe_s")
                out.append(dict(goal="8b_at_128k", model="8b", N=r["N"], value=secs, target="runs (value: seconds)",
                                met=True, note=f"{r['method']}, peak +{r.get('peak_extra_GiB') or 0:.1f} GiB"))
            else:
                out.append(dict(goal="8b_at_128k", model="8b", N=N_128K, value=None, target="runs",
                                met=(False if runs else None),
                                note=("; ".join(f"{r['method']}: {r['status']}" for r in runs) or "not run")))
        return out

    def search_rows(self):
        return [dict(model=s["model"], method=s["method"], longest_fit=s.get("longest_fit"),
                     first_oom=s.get("first_oom"), granularity=s["granularity"], cap=s["cap"],
                     probes=len(s["probes"]), stopped=s["stopped"]) for s in self.searches]

    # -- output --------------------------------------------------------------------------------------
    def record(self, complete=False):
        return dict(
            script=SCRIPT, env=self.env, args=vars(self.args), cpu_smoke=self.smoke,
            dtype=str(self.dtype), device=str(self.device), budget_s=self.budget_s,
            elapsed_s=self.elapsed(), complete=complete,
            models={k: dict(MODEL_SPECS[k], max_position_embeddings=self.max_positions,
                            weights_GiB=self.weights_bytes[k] / GiB) for k in self.weights_bytes},
            definitions=DEFINITIONS, conventions=CONVENTIONS, goals_definition=GOALS,
            goals=self.goal_rows(), ratios=self.ratio_rows(), results=self.rows, searches=self.searches,
            relevance_agreement=self.agreement, sdpa_backends=self.sdpa, skipped=self.skipped, notes=self.notes)

    def write(self, complete=False):
        if self.paths is None:
            return
        rec = self.record(complete)
        write_json(self.paths[0], rec)
        sections = [
            ("Goals (ratios measured in this run)",
             markdown_table(rec["goals"], ["goal", "model", "N", "value", "target", "met", "note"])),
            ("Ratios (same model, same N; memory = peak above weights)",
             markdown_table(rec["ratios"], ["model", "N", "forward_ms", "lrp_ms", "lrp_ckpt_ms", "ref_ms",
                                            "lrp_over_fwd", "lrp_ckpt_over_fwd", "grad_over_fwd",
                                            "lrp_over_ref_time", "lrp_over_ref_mem", "lrp_ckpt_over_ref_ckpt_time",
                                            "lrp_ckpt_over_ref_ckpt_mem", "lrp_mem_GiB", "ref_mem_GiB"])),
            ("Longest context per method (search)",
             markdown_table(self.search_rows(), ["model", "method", "longest_fit", "first_oom", "granularity",
                                                 "cap", "probes", "stopped"])),
            ("All measurements",
             markdown_table(rec["results"], ["model", "method", "N", "checkpoint", "status", "time_ms", "time_min_ms",
                                             "repeats", "peak_extra_GiB", "peak_total_GiB", "first_call_s",
                                             "prewarm_s", "timed"])),
        ]
        if self.agreement:
            sections.append(("Relevance agreement (lrp_triton vs ref_sdpa)", markdown_table([self.agreement])))
        if self.skipped:
            sections.append(("Skipped", markdown_table(self.skipped)))
        notes = [f"{k}: {v}" for k, v in SHORT.items()]
        notes += [f"goal {k}: {v}" for k, v in GOALS.items()]
        notes.append("time: CUDA-event median of whole calls after a first call (calls >= %.0f s: one call after "
                     "pre-tuning); memory: peak allocated above what was allocated before (weights excluded). "
                     "Exact definitions and conventions: the JSON's 'definitions' and 'conventions'." % BIG_CALL_S)
        notes.append(f"elapsed: {rec['elapsed_s']:.0f} s of a {self.budget_s:.0f} s budget; complete: {complete}")
        if self.smoke:
            notes.insert(0, "CPU SMOKE RUN: times are wall-clock on a CPU, NOT figures")
        write_markdown(self.paths[1], "lrp_triton.attribute end-to-end benchmark", rec["env"], sections, notes)

    def check_agreement(self, key, n):
        """lrp_triton relevance against path (c) on the same input (bf16 on the GPU: rounding differs)."""
        model = self.load(key)
        ids = make_ids(model.config.vocab_size, n, self.device, seed=1)
        try:
            a = run_method("lrp_triton", model, ids, self.lrp_backend).float().flatten()
            b = run_method("ref_sdpa", model, ids, self.lrp_backend).float().flatten()
            self.agreement = dict(model=key, N=n,
                                  max_abs_diff_over_max_abs=((a - b).abs().max() / b.abs().max()).item(),
                                  rel_l2=((a - b).norm() / b.norm()).item(),
                                  pearson=torch.corrcoef(torch.stack([a, b]))[0, 1].item(),
                                  sum_lrp=a.sum().item(), sum_ref=b.sum().item())
        except Exception as e:  # noqa: BLE001
            self.agreement = dict(model=key, N=n, error=("oom" if is_oom(e) else short_error(e)))
        self._free()
        print(f"[{self.elapsed():6.1f}s] relevance agreement {self.agreement}", flush=True)


# ------------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------------
def plan(args):
    """Stages in priority order (a budget cut drops the last ones): (model, kind, Ns or None, methods)."""
    all_m = list(SWEEP_ORDER)
    pow2 = lambda lo, hi: [1 << p for p in range(20) if lo <= (1 << p) <= hi]  # noqa: E731
    if args.quick:
        return [("1b", "sweep", [n for n in (1024, 4096) if n <= args.max_n], all_m), ("1b", "agree", [1024], None)]
    models = ["1b", "8b"] if args.model == "both" else [args.model]
    order = ["8b", "1b"] if "8b" in models else models
    cheap = [m for m in SEARCH_METHODS if not METHODS[m]["checkpoint"]]  # their limits are near the core sweep
    costly = [m for m in SEARCH_METHODS if METHODS[m]["checkpoint"]]
    stages = []
    for key in models:  # 1. everything at 1k..8k (the 8k goals), and a relevance cross-check at 1k
        stages.append((key, "sweep", pow2(1024, min(N_8K, args.max_n)), all_m))
        stages.append((key, "agree", [1024], None))
    if "8b" in models and args.max_n >= N_128K:  # 2. the 128k goal
        stages.append(("8b", "sweep", [N_128K], ["forward", "lrp_triton+ckpt"]))
    for key in order:  # 3. cheap searches, then the sweep above 8k
        if not args.no_search:
            stages.append((key, "search", None, cheap))
        stages.append((key, "sweep", pow2(2 * N_8K, args.max_n), all_m))
    if not args.no_search:  # 4. the expensive searches (checkpointed methods reach long contexts)
        for key in order:
            stages.append((key, "search", None, costly))
    return stages


def run_stages(bench, stages):
    for key, kind, ns, methods in stages:
        if bench.left() <= 5:
            bench.skipped.append(dict(model=key, method=kind, N=None, why="budget exhausted"))
            continue
        if kind == "sweep":
            bench.sweep(key, ns, methods)
        elif kind == "agree":
            bench.check_agreement(key, ns[0])
        elif kind == "search":
            for m in methods:
                bench.search(key, m)


def print_summary(bench):
    rec = bench.record(complete=True)
    print("\n== goals")
    print(markdown_table(rec["goals"], ["goal", "model", "N", "value", "target", "met", "note"]))
    print("== ratios")
    print(markdown_table(rec["ratios"], ["model", "N", "forward_ms", "lrp_ms", "lrp_over_fwd", "lrp_ckpt_over_fwd",
                                         "lrp_over_ref_time", "lrp_over_ref_mem", "lrp_mem_GiB", "ref_mem_GiB"]))
    if bench.searches:
        print("== longest context")
        print(markdown_table(bench.search_rows(), ["model", "method", "longest_fit", "first_oom", "stopped"]))


# ------------------------------------------------------------------------------------------------
# CPU smoke: the whole pipeline on a tiny model, and (c) against lrp_triton.attribute
# ------------------------------------------------------------------------------------------------
def cpu_smoke(args):
    from lrp_triton.backend import interpreter_requested

    interp = interpreter_requested()
    out_dir = Path(tempfile.mkdtemp(prefix="bench_attribute_smoke_"))  # never bench/results
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    # the pipeline: sweep, simulated OOMs (no-checkpoint methods "run out of memory" above N=48), search
    bench = Bench(args, device="cpu", dtype=torch.float32, smoke=True, lrp_backend="torch", granularity=8,
                  search_cap=128, max_positions=256, budget_s=600.0, paths=result_paths(SCRIPT, out_dir),
                  fake_oom={m: 48 for m, s in METHODS.items() if not s["checkpoint"] and s["attribution"]})
    bench.sweep("tiny", [32, 64], list(METHODS))
    for m in SEARCH_METHODS:
        bench.search("tiny", m)
    bench.check_agreement("tiny", 64)
    bench.write(complete=True)
    failures = []
    bad = [r for r in bench.rows if r["status"] not in ("ok", "oom")]
    if bad:
        failures.append(f"measurements failed: {bad}")
    expect_oom = [r for r in bench.rows if r["N"] == 64 and r["method"] in bench.fake_oom]
    if not expect_oom or any(r["status"] != "oom" for r in expect_oom):
        failures.append("simulated OOM at N=64 was not recorded as 'oom'")
    for s in bench.searches:
        want = 128 if METHODS[s["method"]]["checkpoint"] else 48
        if s["longest_fit"] != want:
            failures.append(f"search {s['method']}: longest_fit {s['longest_fit']} != {want}")
    if not bench.goal_rows():
        failures.append("no goal rows")

    # numerical agreement: (c) against lrp_triton.attribute on fresh random weights and ids, float32
    seed = int(os.environ.get("LRP_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"cpu-smoke: agreement check on fresh random weights and ids, seed {seed} (LRP_TEST_SEED={seed} repeats it)")
    model = build_model("tiny", "cpu", torch.float32, 256, seed=seed, gain=1.5, norm_noise=0.1)
    ids = make_ids(model.config.vocab_size, 64, "cpu", seed=seed + 1)
    calls = REF_CALLS[0]
    ref = run_method("ref_sdpa", model, ids, "torch")
    if REF_CALLS[0] - calls != model.config.num_hidden_layers:
        failures.append(f"path (c) called the SDPA reference attention {REF_CALLS[0] - calls} times, "
                        f"expected {model.config.num_hidden_layers} (one per layer)")
    others = {"lrp_triton.attribute(backend='torch')": run_method("lrp_triton", model, ids, "torch"),
              "lrp_triton.attribute(backend='torch', checkpoint=True)":
                  run_method("lrp_triton+ckpt", model, ids, "torch"),
              "ref_sdpa+ckpt": run_method("ref_sdpa+ckpt", model, ids, "torch")}
    if interp:
        others["lrp_triton.attribute(backend='triton', TRITON_INTERPRET=1)"] = run_method("lrp_triton", model, ids,
                                                                                          "triton")
    grad = run_method("gradient", model, ids, "torch")
    import lrp_triton

    d_b = ((grad - lrp_triton.attribute(model, ids, mode="gradient", backend="torch").relevance).abs().max()
           / grad.abs().max()).item()
    print(f"cpu-smoke: path (b) gradient vs lrp_triton.attribute(mode='gradient'): max relative difference {d_b:.3e}")
    if d_b > 1e-4:
        failures.append(f"path (b) disagrees with attribute(mode='gradient'): {d_b:.3e}")

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    worst = 0.0
    for name, r in others.items():
        d = rel(r, ref)
        worst = max(worst, d)
        print(f"cpu-smoke: {name} vs (c) ref_sdpa: max relative difference {d:.3e}")
    d_grad = rel(grad, ref)
    print(f"cpu-smoke: plain gradient x input vs (c) ref_sdpa: max relative difference {d_grad:.3e} "
          "(must be large: the rules change the relevance)")
    tol = 1e-4
    if not interp:
        print("cpu-smoke: TRITON_INTERPRET is not 1: the Triton backend was not exercised")
    problem = smoke_files_problem(bench.paths, ("cpu_smoke", "results", "searches"))
    if problem:
        failures.append(problem)
    shutil.rmtree(out_dir, ignore_errors=True)
    print("cpu-smoke: times above are CPU wall-clock, not figures (nothing written to bench/results)")
    if worst > tol:
        failures.append(f"(c) and lrp_triton.attribute disagree: max relative difference {worst:.3e} > {tol}")
    if d_grad < 1e-2:
        failures.append(f"(c) is indistinguishable from the plain gradient ({d_grad:.3e}): rules not applied?")
    if failures:
        for f in failures:
            print(f"cpu-smoke: FAIL: {f}")
        return 1
    print(f"cpu-smoke: agree: (c) ref_sdpa and lrp_triton.attribute relevance, max relative difference "
          f"{worst:.3e} (tol {tol:g}); pipeline ok")
    return 0


# ------------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(
        description="End-to-end benchmark of lrp_triton.attribute (AttnLRP, Triton) on Llama-3-8B- and "
                    "Llama-3.2-1B-shaped models with random bf16 weights: time and peak memory against the plain "
                    "forward, a plain forward+backward, and the same AttnLRP rules in PyTorch with SDPA attention "
                    "(lxt's method); N from 1k up by powers of two, with and without checkpoint=True; longest "
                    "context per method. Needs a CUDA GPU (except --cpu-smoke).")
    p.add_argument("--quick", action="store_true", help="smoke run: 1B model, N in {1k, 4k}, no search")
    p.add_argument("--model", choices=("1b", "8b", "both"), default="both", help="which model(s) (default both)")
    p.add_argument("--max-n", type=int, default=N_128K,
                   help="largest sequence length of the sweep and of the search (default 131072)")
    p.add_argument("--no-search", action="store_true", help="skip the longest-context search")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new measurements that would end after this many seconds "
                        "(default 440 full, 150 quick)")
    p.add_argument("--out", default=str(HERE / "results"), help="output folder (default bench/results)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="CPU only: run every path of the pipeline on a tiny float32 Llama (N=32/64, simulated OOMs, "
                        "search), check that (c) and lrp_triton.attribute give the same relevance; prints the "
                        "'agree' line; writes only to a temp dir. Uses the Triton backend too if TRITON_INTERPRET=1")
    args = p.parse_args(argv)

    if args.cpu_smoke:
        ensure_lrp_triton()
        return cpu_smoke(args)

    require_cuda(SCRIPT)
    ensure_lrp_triton()
    if args.max_n < 1024:
        p.error("--max-n must be at least 1024")
    budget = args.budget_s if args.budget_s is not None else (150.0 if args.quick else 440.0)
    paths = result_paths(SCRIPT, args.out)
    bench = Bench(args, device="cuda", dtype=torch.bfloat16, lrp_backend="triton", granularity=1024,
                  search_cap=args.max_n, max_positions=max(N_128K, args.max_n), budget_s=budget, paths=paths)
    try:
        bench.sdpa = sdpa_probe("cuda", torch.bfloat16)
    except Exception as e:  # noqa: BLE001
        bench.sdpa = {"error": short_error(e)}
    free_cuda()
    print(f"SDPA backends for (b)/(c) shapes: {bench.sdpa}", flush=True)
    stages = plan(args)
    print(f"{SCRIPT}: {bench.env.get('gpu')} | torch {bench.env['torch']} | triton {bench.env['triton']} | "
          f"transformers {bench.env['transformers']} | budget {budget:.0f} s -> {paths[0]}", flush=True)
    run_stages(bench, stages)
    bench.model = None
    free_cuda()
    bench.write(complete=True)
    print_summary(bench)
    print(f"\nwrote {paths[0]}\n      {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
