"""The one runner of the GPU benchmarks in bench/, and what the scripts share.

A benchmark is a list of cases (dicts) and a table of methods (name -> builder(case) -> job). A job
is {"phases": {name: fn or (prepare, fn)}, "note": str, "after": fn(row)}. For every case x method
the Runner times each phase: one first call (compilation, autotuning; `first_call_s`), then
CUDA-event timings of single calls (median; the L2 is flushed before each repeat; about target_ms of
timed work, 3 to max_repeats repeats), and records the peak memory allocated above what was
allocated before the timed calls. End-to-end runners set `single_call_s`: a first call at least
that long is itself the figure (no repeats), one over 0.5 s gets two repeats. A CUDA out-of-memory
error gives status "oom"; with `skip_after_oom`, a method that ran out of memory in a case series
is not started at a larger size of that series. The JSON and markdown are rewritten after every
measurement, so a killed run leaves what it measured. Budget: no measurement starts after
`budget_s` seconds from process start (imports included). No run time is predicted.

Only torch and the standard library are imported at module level: `--help` works anywhere.
`python bench/common.py --shadow` prints a directory to put on PYTHONPATH where lrp_triton is not
installed (links to lrp_triton/, kernels/ and models/: the package_dir map of setup.py).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

START = time.perf_counter()
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
MiB = 2 ** 20


# --- Environment ----------------------------------------------------------------------------------
def require_cuda(script):
    """Exit with status 2 and "needs a CUDA GPU" when there is none."""
    if not torch.cuda.is_available():
        sys.exit(print(f"{script}: needs a CUDA GPU (no torch.cuda); nothing was measured.", file=sys.stderr) or 2)


def shadow_package():
    """A temp dir holding `lrp_triton` as links to lrp_triton/*, kernels/ and models/ of this checkout."""
    pkg = Path(tempfile.mkdtemp(prefix="lrp_shadow_")) / "lrp_triton"
    pkg.mkdir()
    for f in (ROOT / "lrp_triton").iterdir():
        (pkg / f.name).symlink_to(f)
    for sub in ("kernels", "models"):
        if (ROOT / sub).is_dir() and not (pkg / sub).exists():
            (pkg / sub).symlink_to(ROOT / sub)
    return str(pkg.parent)


def ensure_lrp_triton():
    """Imports lrp_triton, through a shadow package where it is not installed (the device machine)."""
    try:
        importlib.import_module("lrp_triton.models")
    except ImportError:
        for name in [m for m in sys.modules if m == "lrp_triton" or m.startswith("lrp_triton.")]:
            del sys.modules[name]
        sys.path.insert(0, shadow_package())
        importlib.import_module("lrp_triton.models")


def env_record():
    """What ran where (no hostname, no paths beyond argv)."""
    def version(mod):
        try:
            return str(getattr(__import__(mod), "__version__", "unknown"))
        except Exception:  # noqa: BLE001
            return None

    rec = dict(date_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), argv=list(sys.argv),
               python=platform.python_version(), platform=f"{platform.system()} {platform.machine()}",
               torch=torch.__version__, triton=version("triton"), transformers=version("transformers"),
               cuda_runtime=torch.version.cuda, cpus=os.cpu_count(), cpu=platform.processor() or None,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        rec.update(gpu=p.name, gpu_capability=f"{p.major}.{p.minor}", gpu_sms=p.multi_processor_count,
                   gpu_memory_GiB=round(p.total_memory / 2 ** 30, 2),
                   gpu_l2_MB=round(getattr(p, "L2_cache_size", 0) / 1e6, 1))
        try:
            import subprocess
            rec["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.split()[0]
        except Exception:  # noqa: BLE001
            rec["driver"] = None
    return rec


def parser(description, budgets, precompile=False, smoke=None):
    """The options every script takes: --quick, --out, --budget-s (default budgets = (full, quick))."""
    p = argparse.ArgumentParser(description=description + " Needs a CUDA GPU" + (" (except --cpu-smoke)." if smoke
                                                                                else "."))
    p.add_argument("--quick", action="store_true", help="a few cases only (smoke run on the GPU)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output folder (default bench/results)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"start no measurement after this many seconds (default {budgets[0]:g}, quick {budgets[1]:g})")
    if precompile:
        p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                       help="processes compiling the Triton configs in parallel first (default: CPUs, at most 16)")
        p.add_argument("--no-precompile", action="store_true", help="let the autotuner compile configs one by one")
    if smoke:
        p.add_argument("--cpu-smoke", action="store_true", help=smoke)
    return p


def budget_of(args, budgets):
    return args.budget_s if args.budget_s is not None else budgets[1 if args.quick else 0]


# --- Timing and memory ----------------------------------------------------------------------------
_L2 = {}


def l2_flush_buffer():
    """A buffer of 4x the L2 size (at least 256 MiB); overwriting it evicts the L2."""
    if "buf" not in _L2:
        l2 = int(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", 0) or 50 * MiB)
        _L2["buf"] = torch.empty(max(4 * l2, 256 * MiB), dtype=torch.int8, device="cuda")
    return _L2["buf"]


def _events(fn, flush=True):
    """fn() between two recorded CUDA events (the L2 flushed first)."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if flush:
        l2_flush_buffer().zero_()
    s.record()
    out = fn()
    e.record()
    return s, e, out


def cuda_time_ms(fn, *, warmup=1, repeats=None, target_ms=300.0, min_repeats=3, max_repeats=25):
    """Median/min/max ms of single fn() calls between CUDA events, the L2 flushed before each;
    repeats=None: about target_ms of timed work (from the last warm-up call), clamped."""
    est = 1e-3
    for _ in range(max(warmup, 1 if repeats is None else 0)):
        s, e = _events(fn)[:2]  # the output is not kept
        torch.cuda.synchronize()
        est = max(s.elapsed_time(e), 1e-3)
    if repeats is None:
        repeats = max(min_repeats, min(max_repeats, round(target_ms / est)))
    events = [_events(fn)[:2] for _ in range(repeats)]
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) for s, e in events]
    return dict(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), repeats=repeats)


def free_cuda():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def is_oom(e):  # CUDA out of memory (not Triton's OutOfResources: shared memory / registers of one kernel)
    return isinstance(e, torch.cuda.OutOfMemoryError) or isinstance(e, RuntimeError) and "out of memory" in str(e)


def short_error(e):
    return f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


# --- Writers --------------------------------------------------------------------------------------
def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    return str(o) if isinstance(o, (torch.dtype, torch.device, Path)) or (isinstance(o, float)
                                                                         and not math.isfinite(o)) else o


def fmt(v, digits=3):
    if isinstance(v, float) and math.isfinite(v) and v != 0:
        return f"{v:.{digits - 1}e}" if abs(v) >= 10 ** digits or abs(v) < 1e-3 else f"{v:.{digits}g}"
    return "-" if v is None else str(v)


def markdown_table(rows, columns=None):
    """Rows of dicts -> GitHub markdown; missing keys print '-'."""
    if not rows:
        return "_(no rows)_\n"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rss_kib(field="VmRSS", reset=False):
    """Linux: resident set (VmRSS) or its peak (VmHWM), KiB; reset: malloc_trim, then the peak := the current one."""
    _ = reset and (ctypes.CDLL(None).malloc_trim(0), Path("/proc/self/clear_refs").write_text("5"))
    return int(next(ln.split()[1] for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field)))


# --- The runner -----------------------------------------------------------------------------------
class Runner:
    def __init__(self, script, title, args, *, budget_s, out=None, device="cuda", info=None, columns=(),
                 tables=None, single_call_s=None, target_ms=300.0, max_repeats=25, skip_after_oom=False,
                 agree=None, smoke=False):
        self.script, self.title, self.args, self.budget_s, self.info = script, title, args, budget_s, info or {}
        self.cuda = torch.device(device).type == "cuda"
        self.columns, self.tables, self.single_call_s = list(columns), tables, single_call_s
        self.target_ms, self.max_repeats, self.skip_after_oom = target_ms, max_repeats, skip_after_oom
        self.agree, self.smoke = agree, smoke
        self.rows, self.skipped, self.agreements, self.extra = [], [], [], {}
        self.oom_at, self.broken = {}, None
        self.env = env_record()
        self.paths = None
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            self.paths = (Path(out) / f"{script}_{stamp}.json", Path(out) / f"{script}_{stamp}.md")
        if self.cuda:
            l2_flush_buffer()  # allocated now, outside every measurement

    def elapsed(self):
        return time.perf_counter() - START

    def left(self):
        return self.budget_s - self.elapsed()

    def log(self, msg):
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def _sync(self):
        return self.cuda and torch.cuda.synchronize()

    # -- one phase: first call, then the timed calls (once: the first call only) --------------------
    def time_phase(self, fn, keep=False, once=False):
        self._sync()
        base = torch.cuda.memory_allocated() if self.cuda else rss_kib(reset=True)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        s, e, out = _events(fn, flush=False) if self.cuda else (None, None, fn())
        self._sync()
        first = time.perf_counter() - t0
        kept = out.detach().float().cpu() if keep and isinstance(out, torch.Tensor) else None
        del out
        if not self.cuda:  # CPU: wall clock; calls under 2 s are repeated (median of up to 4 more; smoke: none)
            peak, times = rss_kib("VmHWM") - base, [first]
            while not once and not self.smoke and first < 2.0 and len(times) < 5 and sum(times) < 6.0:
                t0, _ = time.perf_counter(), fn()
                times.append(time.perf_counter() - t0)
            return dict(ms=statistics.median(times[1:] or times) * 1e3, min_ms=min(times) * 1e3, repeats=len(times),
                        first_call_s=first, peak_MiB=peak / 1024, timed="CPU wall clock, median of the calls after "
                        "the first (if any); peak resident set above the one before the call (VmHWM)"), kept
        res = dict(first_call_s=first)
        if once or (self.single_call_s is not None and first >= self.single_call_s):
            ms = s.elapsed_time(e)
            peak = torch.cuda.max_memory_allocated()
            res.update(ms=ms, min_ms=ms, max_ms=ms, repeats=1, timed="the first call (long: not repeated)")
        else:
            free_cuda()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            few = self.single_call_s is not None and first >= 0.5
            r = cuda_time_ms(fn, **(dict(warmup=0, repeats=2) if few else
                                    dict(target_ms=self.target_ms, max_repeats=self.max_repeats)))
            peak = torch.cuda.max_memory_allocated()
            res.update(ms=r["median_ms"], min_ms=r["min_ms"], max_ms=r["max_ms"], repeats=r["repeats"],
                       timed="median after a first call")
        res.update(peak_MiB=(peak - base) / MiB, peak_total_MiB=peak / MiB)
        return res, kept

    # -- one case x method -----------------------------------------------------------------------
    def measure(self, case, method, builder, kept):
        row = {k: v for k, v in case.items() if k != "methods"}
        row.update(method=method, status=None)
        failure, shown = None, []
        try:
            job = builder(case)
            row.update(note=job.get("note"), first_call_s=0.0)
            for i, (phase, spec) in enumerate(job["phases"].items()):
                prepare, fn = spec if isinstance(spec, tuple) else (None, spec)
                if prepare is not None:
                    prepare()
                res, rel = self.time_phase(fn, keep=i == 0 and self.agree is not None and method in self.agree)
                if rel is not None:
                    kept[method] = rel
                row["first_call_s"] += res.pop("first_call_s")
                row["timed"] = res.pop("timed")
                row.update({f"{phase}_{k}": v for k, v in res.items()})
                shown.append(f"{phase} {res['ms']:.3f} ms" + f" peak {res.get('peak_MiB', 0):.0f} MiB" * ("peak_MiB" in res))
            row["status"] = "ok"
            if job.get("after"):
                job["after"](row)
        except Exception as e:  # noqa: BLE001 - recorded, then the next measurement
            failure = "oom" if is_oom(e) else short_error(e)
        job = None
        if failure is not None:
            row["status"] = failure
            kept.pop(method, None)
            if failure == "oom" and "series" in case:
                key = (case["series"], method)
                self.oom_at[key] = min(self.oom_at.get(key, math.inf), case["size"])
        free_cuda()  # outside the except block: the traceback no longer pins tensors
        if failure is not None and failure != "oom" and self.cuda and not _cuda_healthy():
            self.broken = f"CUDA context unusable after {method} on {row}: {failure}"
        self.rows.append(row)
        self.log(f"{case.get('label', '')} {method}: {row['status']}  " + "  ".join(shown))
        self.write()
        return row

    def run(self, cases, methods):
        for case in cases:
            kept = {}
            for name in case.get("methods", methods):
                why = None
                if any(r["method"] == name and r.get("label") == case.get("label") for r in self.rows):
                    continue  # measured already (an earlier stage)
                if self.broken:
                    why = self.broken
                elif self.left() <= 0:
                    why = f"budget ({self.budget_s:.0f} s) spent"
                elif self.skip_after_oom and case.get("size", 0) > self.oom_at.get((case.get("series"), name), math.inf):
                    why = f"oom at a smaller size ({self.oom_at[(case['series'], name)]})"
                if why:
                    self.skipped.append(dict({k: v for k, v in case.items() if k != "methods"}, method=name, why=why))
                    continue
                self.measure(case, name, methods[name], kept)
            if self.agree and all(m in kept for m in self.agree):
                a, b = (kept[m].flatten() for m in self.agree)
                self.agreements.append(dict({k: v for k, v in case.items() if k != "methods"},
                                            max_abs_diff_over_max_abs=rel_diff(a, b),
                                            rel_l2=((a - b).norm() / b.norm()).item(),
                                            pearson=torch.corrcoef(torch.stack([a, b]))[0, 1].item()))
                self.write()

    def ok(self, method, **match):
        """The ok row of `method` whose fields equal `match`, or None."""
        return next((r for r in self.rows if r["method"] == method and r["status"] == "ok"
                     and all(r.get(k) == v for k, v in match.items())), None)

    # -- output ------------------------------------------------------------------------------------
    def record(self, complete=False):
        tables = self.tables(self) if self.tables else []
        return dict(script=self.script, env=self.env, args=vars(self.args), cpu_smoke=self.smoke,
                    budget_s=self.budget_s, elapsed_s=self.elapsed(), complete=complete, cuda_broken=self.broken,
                    **self.info, **self.extra, **{key: rows for key, _, rows, _ in tables if key}, results=self.rows,
                    agreement=self.agreements, skipped=self.skipped), tables

    def write(self, complete=False):
        if self.paths is None:
            return
        rec, tables = self.record(complete)
        self.paths[0].write_text(json.dumps(_jsonable(rec), indent=1, default=str) + "\n")
        env = self.env
        parts = [f"# {self.title}\n", "Environment: " + ", ".join(
            f"{k}={env.get(k)}" for k in ("date_utc", "gpu", "driver", "cuda_runtime", "torch", "triton",
                                          "transformers") if k in env) + "\n", f"Command: `{' '.join(env['argv'])}`\n"]
        if not self.cuda:
            parts.append("- CPU SMOKE RUN: times are CPU wall clock, NOT figures" if self.smoke else
                         f"- CPU RUN ({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads): CPU figures")
        for k, v in self.info.get("conventions", {}).items():
            parts.append(f"- {k}: {v}")
        parts.append(f"- elapsed {rec['elapsed_s']:.0f} s of a {self.budget_s:.0f} s budget; complete: {complete}"
                     + (f"; STOPPED EARLY: {self.broken}" if self.broken else "") + "\n")
        sections = [(h, rows, cols) for _, h, rows, cols in tables]
        sections.append(("All measurements", self.rows, self.columns or None))
        for h, rows in (("Relevance agreement", self.agreements), ("Skipped", self.skipped)):
            if rows:
                sections.append((h, rows, None))
        for heading, rows, cols in sections:
            parts += [f"## {heading}\n", markdown_table(rows, cols)]
        self.paths[1].write_text("\n".join(parts))

    def finish(self):
        """Writes the complete record, prints the first table; the exit status (1 if CUDA broke)."""
        self.write(complete=self.broken is None)
        rec, tables = self.record(self.broken is None)
        for _, heading, rows, cols in tables[:2]:
            print(f"\n== {heading}\n" + markdown_table(rows, cols))
        if self.paths:
            print(f"wrote {self.paths[0]}\n      {self.paths[1]}", flush=True)
        return 0 if self.broken is None else 1

    def files_problem(self, required):
        """CPU smoke: None when the written JSON has every key in `required` non-empty and the markdown text, else
        what is wrong (a list: [] or [problem]); then removes the smoke's folder (`smoke_dir`)."""
        try:
            rec = json.loads(self.paths[0].read_text())
            ok = all(rec.get(k) for k in required) and self.paths[1].read_text().strip()
            return [] if ok else ["the JSON / markdown written by the smoke run are incomplete"]
        except Exception as e:  # noqa: BLE001
            return [f"reading back the smoke JSON failed: {short_error(e)}"]
        finally:
            shutil.rmtree(self.paths[0].parent, ignore_errors=True)


def _cuda_healthy():
    try:
        return torch.ones(1, device="cuda").add_(1).item() == 2
    except Exception:  # noqa: BLE001
        return False


def fake_oom(builder, limit, size_of):
    """CPU smoke: the builder's phases raise a CUDA out-of-memory error when size_of(case) > limit."""
    def wrapped(case):
        if size_of(case) > limit:
            raise torch.cuda.OutOfMemoryError(f"simulated (CPU smoke): out of memory above {limit}")
        return builder(case)
    return wrapped


def random_model(auto_cls, config, device, dtype, seed=0, gain=1.0, norm_noise=0.02):
    """A random-weight model built directly on `device` in `dtype` (eval, frozen, SDPA attention): matrices,
    convolutions and stacked expert matrices [E, out, in] N(0, gain^2 / fan_in) (T5's q also / d_kv: T5 does not
    scale q k^T), embeddings, CLS token and T5's bias table N(0, 1), norm weights N(1, norm_noise^2), other vectors
    N(0, norm_noise^2)."""
    with torch.device(device):
        model = auto_cls.from_config(config, dtype=dtype, attn_implementation="sdpa")
    gen = torch.Generator(device=device).manual_seed(seed)
    d_kv = getattr(config, "d_kv", None)
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = name.lower()
            if p.dim() == 1:
                norm = "norm" in low or low.endswith("ln_q.weight")  # (ln_q: Qwen-VL's merger norm)
                p.normal_(1.0 if norm and name.endswith("weight") else 0.0, norm_noise, generator=gen)
            elif any(x in low for x in ("embed", "shared", "cls_token", "relative_attention_bias")) and p.dim() < 4:
                p.normal_(0.0, 1.0, generator=gen)
            else:
                fan_in = p.shape[-1] if ".experts." in name and p.dim() == 3 else p[0].numel()  # (experts: [E, out, in])
                fan_in *= d_kv if d_kv and name.endswith(".q.weight") else 1
                p.normal_(0.0, gain / math.sqrt(fan_in), generator=gen)
    return model.eval().requires_grad_(False)


def rel_diff(a, b):  # max |a - b| / max |b|
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def smoke_dir(script):
    """CPU smoke: seeds torch, one thread; a fresh temp folder for its files (never bench/results)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return tempfile.mkdtemp(prefix=f"{script}_smoke_")


def smoke_seed():
    """CPU smoke: a fresh seed for the agreement checks (LRP_TEST_SEED repeats one)."""
    seed = int(os.environ.get("LRP_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"cpu-smoke: agreement checks on fresh random weights and inputs, seed {seed} (LRP_TEST_SEED repeats it)")
    return seed


def smoke_result(failures, agree):
    """CPU smoke: prints each failure, or the 'agree' line; the exit status."""
    print("cpu-smoke: times above are CPU wall clock, not figures (nothing written to bench/results)")
    print("\n".join(f"cpu-smoke: FAIL: {f}" for f in failures) if failures else f"cpu-smoke: agree: {agree}")
    return 1 if failures else 0


class Models:
    """One model in memory at a time: get(key) builds it with build(key) (freeing the previous one)."""

    def __init__(self, build):
        self.build, self.key, self.model, self.info = build, None, None, {}

    def get(self, key):
        if key != self.key:
            self.model = self.key = None
            free_cuda()
            t0 = time.perf_counter()
            self.model, self.key = self.build(key), key
            params = list(self.model.parameters())
            self.info[key] = dict(parameters=sum(p.numel() for p in params), build_s=time.perf_counter() - t0,
                                  weights_GiB=sum(p.numel() * p.element_size() for p in params) / 2 ** 30,
                                  param_dtypes=sorted({str(p.dtype) for p in params}))
            print(f"built {key}: {self.info[key]}", flush=True)
        return self.model


# --- Triton pre-compilation in worker processes, SDPA backend probe -------------------------------
def autotuners(module=None):
    """The Triton autotuners of lrp_triton.kernels.<module> (every kernel module when None)."""
    import pkgutil

    import lrp_triton.kernels as kpkg
    from triton.runtime.autotuner import Autotuner

    found = {}
    for name in [module] if module else [i.name for i in pkgutil.iter_modules(kpkg.__path__)]:
        try:
            mod = importlib.import_module(f"lrp_triton.kernels.{name}")
        except Exception:  # noqa: BLE001
            continue
        found.update({id(o): o for o in vars(mod).values() if isinstance(o, Autotuner)})
    return list(found.values())


def autotune_choices(module):
    """{kernel: the config its autotuner chose last} for lrp_triton.kernels.<module>."""
    return {t.base_fn.__name__: str(t.best_config) for t in autotuners(module)
            if getattr(t, "best_config", None) is not None} or None


def pin_autotuners(index, **prune_kwargs):
    """Pins every autotuner of lrp_triton.kernels to one config: the `index`-th (modulo) of those its early
    pruner keeps for `prune_kwargs` (e.g. BLOCK_D=128). For a throwaway worker process."""
    for tuner in autotuners():
        configs = list(tuner.configs)
        prune = getattr(tuner, "early_config_prune", None)
        if prune is not None and prune_kwargs:
            on = {"Q": torch.empty(0, device="cuda")} if torch.cuda.is_available() else {}  # (this GPU's arch)
            configs = prune(configs, on, **prune_kwargs) or configs
        tuner.configs = [configs[index % len(configs)]]


def precompile(worker, tasks, jobs, timeout_s):
    """Runs worker(task) -> (task, seconds, error or None) in `jobs` spawned processes (Triton compiles each
    config into its on-disk cache, where the measurements' autotuning finds it); stops after timeout_s,
    ending its own still-running workers. A summary for the JSON."""
    import concurrent.futures as cf
    import multiprocessing as mp

    t0, errors, done = time.perf_counter(), [], 0
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))
    try:
        for f in cf.as_completed([pool.submit(worker, t) for t in tasks], timeout=timeout_s):
            task, _, err = f.result()
            done += 1
            if err:
                errors.append(f"{task}: {err}")
    except cf.TimeoutError:
        errors.append(f"stopped after {timeout_s:.0f} s ({done}/{len(tasks)} tasks done)")
    except Exception as e:  # noqa: BLE001 - a broken pool must not stop the benchmark
        errors.append(short_error(e))
    finally:
        procs = list(getattr(pool, "_processes", {}).values()) if done < len(tasks) else []
        pool.shutdown(wait=not procs, cancel_futures=True)
        for proc in procs:  # ours, by handle
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)
    res = dict(tasks=len(tasks), done=done, jobs=jobs, seconds=time.perf_counter() - t0, errors=errors)
    print(f"precompile: {done}/{len(tasks)} tasks in {res['seconds']:.0f} s, {len(errors)} errors", flush=True)
    return res


def sdpa_probe(shapes, device="cuda", dtype=torch.bfloat16):
    """Which SDPA backends run forward + backward of each shape {label: (H, Hkv, N, D, sdpa kwargs)} alone,
    and the order in which torch tries them (the first 'ok' one in that order is the one it picks)."""
    import warnings

    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {}
    for label, (h, hkv, n, d, kw) in shapes.items():
        q, k, v = (torch.randn(1, hh, n, d, device=device, dtype=dtype, requires_grad=True) for hh in (h, hkv, hkv))
        kw = {k_: (v_(n) if callable(v_) else v_) for k_, v_ in kw.items()}
        out[label] = {}
        for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
            try:
                with warnings.catch_warnings(), sdpa_kernel(getattr(SDPBackend, name)):
                    warnings.simplefilter("ignore")
                    o = F.scaled_dot_product_attention(q, k, v, **kw)
                    torch.autograd.grad(o, (q, k, v), torch.ones_like(o))
                out[label][name] = "ok"
            except Exception as e:  # noqa: BLE001
                out[label][name] = f"refused: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
    try:  # private API, absent in some versions
        names = {int(getattr(SDPBackend, x)): x for x in ("MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION",
                                                          "CUDNN_ATTENTION", "OVERRIDEABLE") if hasattr(SDPBackend, x)}
        out["priority_order"] = [names.get(int(b), str(b)) for b in torch._C._get_sdp_priority_order()]
    except Exception:  # noqa: BLE001
        pass
    free_cuda()
    return out


# --- The reference method of the end-to-end benchmarks: AttnLRP through SDPA with scaled gradients ---
REF_ATTENTION = "lrp_bench_sdpa_ref"
REF_CALLS = []  # one entry per call of the reference attention: the position bias shape or None


def ref_attention(module, query, key, value, attention_mask, **kwargs):
    """lrp_triton.attention_interface.sdpa_attention_interface (mode "attnlrp"), counting its calls."""
    from lrp_triton.attention_interface import sdpa_attention_interface

    bias = kwargs.get("position_bias")
    REF_CALLS.append(None if bias is None else tuple(bias.shape))
    return sdpa_attention_interface(module, query, key, value, attention_mask, **kwargs)


@contextlib.contextmanager
def ref_applied(model):
    """lxt's method on `model`: lrp_triton.apply(model, "attnlrp", backend="torch") (norm / MLP rules in plain
    PyTorch), then every private config copy that names lrp_triton's attention switched to REF_ATTENTION
    (SDPA with dQ/4, dK/4, dV/2; mask function: lrp_triton's padding-only one). T5: transformers' own
    T5Attention modules are put back (materialised [1, H, N, M] position bias, handed to SDPA as its
    float mask) with private configs naming REF_ATTENTION. Undone on exit."""
    import copy

    import lrp_triton
    from lrp_triton import attention_interface
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(REF_ATTENTION, ref_attention)
    AttentionMaskInterface.register(REF_ATTENTION, attention_interface.lrp_attention_mask)
    originals = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if type(module).__name__ == "T5Attention":
            parent, _, attr = name.rpartition(".")
            originals.append((modules[parent] if parent else model, attr, module, module.config))
    handle = lrp_triton.apply(model, "attnlrp", backend="torch")
    swapped = []
    try:
        switched = 0
        for module in model.modules():
            config = module.__dict__.get("config")
            if getattr(config, "_attn_implementation_internal", None) == attention_interface.NAME:
                config._attn_implementation_internal = REF_ATTENTION  # the handle's private copy
                switched += 1
        if not switched:
            raise RuntimeError("ref_sdpa: found no config set to lrp_triton's attention to switch")
        for parent, attr, original, config in originals:
            swapped.append((parent, attr, getattr(parent, attr)))
            original.config = copy.copy(config)
            original.config._attn_implementation_internal = REF_ATTENTION
            setattr(parent, attr, original)
        yield handle
    finally:
        for parent, attr, current in reversed(swapped):
            setattr(parent, attr, current)
        for _, _, original, config in originals:
            original.config = config
        handle.remove()


if __name__ == "__main__" and sys.argv[1:] == ["--shadow"]:
    print(shadow_package())
