"""Shared helpers for the GPU benchmarks in bench/.

Method (see the workplace's METHOD.md): time device work with CUDA events,
warm up first (Triton JIT, cuBLAS/cuDNN handles stay out of the numbers),
repeat and take the median, and flush the L2 cache between repeats so that
inputs which fit in L2 are not measured from cache.

Helpers
-------
require_cuda(script)            exit(2) with "needs a CUDA GPU" when there is none
cuda_time_ms(fn, ...)           median/min/max ms of fn() with CUDA events
                                (fixed repeats, or repeats=None: adaptive)
peak_memory_bytes(fn)           peak extra bytes allocated by fn() (relative to
                                what was allocated before the call)
is_oom(exc)                     True for a CUDA out-of-memory exception
env_record()                    GPU, CUDA, driver, torch/triton/transformers
                                versions, UTC date, sys.argv (no hostname)
result_paths(script, out_dir)   bench/results/<script>_<UTC date-time>.{json,md}
write_json(path, obj)           JSON writer (handles NaN/inf, tuples, dtypes)
markdown_table(rows, columns)   list of dicts -> markdown table string
write_markdown(path, ...)       title + env summary + tables into one .md file

Only torch and the standard library are imported at module level, so
importing this file (and running `--help` of a benchmark) works on CPU.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS_DIR",
    "require_cuda",
    "cuda_time_ms",
    "peak_memory_bytes",
    "is_oom",
    "free_cuda",
    "env_record",
    "utc_stamp",
    "result_paths",
    "write_json",
    "markdown_table",
    "write_markdown",
    "fmt",
]


# --------------------------------------------------------------------------- #
# CUDA presence
# --------------------------------------------------------------------------- #
def require_cuda(script: str = "") -> None:
    """Exit with status 2 and a clear message when no CUDA GPU is present."""
    if not torch.cuda.is_available():
        name = script or os.path.basename(sys.argv[0])
        print(f"{name}: needs a CUDA GPU (torch.cuda.is_available() is False); "
              "nothing was measured.", file=sys.stderr)
        sys.exit(2)


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #
_L2_BUF: dict[int, torch.Tensor] = {}


def _l2_flush_buffer(device: torch.device) -> torch.Tensor:
    """A byte buffer a few times the L2 size; writing it evicts the L2."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    buf = _L2_BUF.get(idx)
    if buf is None:
        props = torch.cuda.get_device_properties(idx)
        l2 = int(getattr(props, "L2_cache_size", 0) or (50 << 20))
        buf = torch.empty(max(4 * l2, 256 << 20), dtype=torch.int8, device=idx)
        _L2_BUF[idx] = buf
    return buf


def cuda_time_ms(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int | None = 10,
    flush_l2: bool = True,
    setup: Callable[[], Any] | None = None,
    device: torch.device | str | None = None,
    target_ms: float = 200.0,
    min_repeats: int = 3,
    max_repeats: int = 50,
) -> dict[str, float]:
    """Time ``fn()`` on the current CUDA stream with CUDA events.

    ``warmup`` untimed calls first (at least one when ``repeats`` is None), then
    ``repeats`` timed calls, each timed alone between two events.  Before each
    timed call ``setup()`` runs (untimed; e.g. zero the .grad of inputs) and,
    with ``flush_l2``, a buffer of 4x the L2 size is overwritten so the call does
    not start from a warm L2.

    ``repeats=None`` picks the count from the last warm-up call's time:
    about ``target_ms`` of timed work, clamped to [min_repeats, max_repeats]
    (few repeats at large sizes keep a sweep inside its time budget).

    Returns {"median_ms", "min_ms", "max_ms", "mean_ms", "repeats"}.
    """
    device = torch.device(device) if device is not None else torch.device("cuda")
    buf = _l2_flush_buffer(device) if flush_l2 else None
    n_warm = max(1 if repeats is None else 0, warmup)
    est_ms = None
    for i in range(n_warm):
        if setup is not None:
            setup()
        if i == n_warm - 1:
            torch.cuda.synchronize(device)
            if buf is not None:
                buf.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize(device)
            est_ms = s.elapsed_time(e)
        else:
            fn()
    if repeats is None:
        repeats = int(round(target_ms / max(est_ms or 1e-3, 1e-3)))
        repeats = max(min_repeats, min(max_repeats, repeats))
    torch.cuda.synchronize(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for i in range(repeats):
        if setup is not None:
            setup()
        if buf is not None:
            buf.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize(device)
    times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "mean_ms": statistics.fmean(times),
        "repeats": repeats,
    }


# --------------------------------------------------------------------------- #
# Memory
# --------------------------------------------------------------------------- #
def free_cuda() -> None:
    """Drop cached blocks so the next measurement starts from a clean pool."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def peak_memory_bytes(fn: Callable[[], Any], *, device: torch.device | str | None = None,
                      keep_result: bool = False) -> tuple[int, Any]:
    """Peak bytes allocated by ``fn()`` above what was allocated before it.

    Uses torch.cuda.reset_peak_memory_stats / max_memory_allocated (the
    caching allocator's view: tensors, not the reserved pool, not the CUDA
    context, not cuBLAS/cuDNN workspaces allocated outside it).  Returns
    (peak_extra_bytes, result_of_fn or None).  The result is dropped unless
    ``keep_result`` so that outputs do not linger between measurements.
    """
    device = torch.device(device) if device is not None else torch.device("cuda")
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    return int(peak), (out if keep_result else None)


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors (torch's class, or a RuntimeError saying so).

    Triton's OutOfResources (shared memory / registers of one kernel) is not an OOM.
    """
    oom_cls = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_cls is not None and isinstance(exc, oom_cls):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------- #
# Environment record
# --------------------------------------------------------------------------- #
def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
        return str(getattr(m, "__version__", "unknown"))
    except Exception:  # not installed, or broken import
        return None


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0].strip()
    except Exception:
        pass
    return None


def utc_stamp() -> str:
    """UTC date-time for file names: 20261117T142501Z."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def env_record() -> dict[str, Any]:
    """What ran where: no hostname, no user names, no paths beyond argv."""
    rec: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": (torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None),
    }
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        p = torch.cuda.get_device_properties(idx)
        rec.update({
            "gpu": p.name,
            "gpu_capability": f"{p.major}.{p.minor}",
            "gpu_sms": p.multi_processor_count,
            "gpu_memory_GiB": round(p.total_memory / 2**30, 2),
            "gpu_l2_MB": round(getattr(p, "L2_cache_size", 0) / 1e6, 1),
            "driver": _driver_version(),
            "gpu_count": torch.cuda.device_count(),
        })
    return rec


# --------------------------------------------------------------------------- #
# Writers
# --------------------------------------------------------------------------- #
def result_paths(script: str, out_dir: str | os.PathLike | None = None,
                 stamp: str | None = None) -> tuple[Path, Path]:
    """(json_path, md_path) = <out_dir>/<script stem>_<UTC stamp>.{json,md}."""
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(script).stem
    stamp = stamp or utc_stamp()
    return out / f"{stem}_{stamp}.json", out / f"{stem}_{stamp}.md"


def _jsonable(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else str(o)  # NaN/inf -> "nan"/"inf"
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return _jsonable(o.item())
    return o


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, default=str)
        f.write("\n")
    return path


def fmt(v: Any, digits: int = 3) -> str:
    """Compact cell text: floats with ``digits`` significant digits, None -> '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 10 ** digits or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None) -> str:
    """Rows of dicts -> GitHub markdown table.  Missing keys print '-'."""
    if not rows:
        return "_(no rows)_\n"
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    headers = list(headers) if headers is not None else list(columns)
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(path: str | os.PathLike, title: str, env: dict[str, Any] | None,
                   sections: Iterable[tuple[str, str]], notes: Sequence[str] = ()) -> Path:
    """Write ``# title``, an environment line, notes, then (heading, body) sections."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}\n"]
    if env:
        keys = ["date_utc", "gpu", "driver", "cuda_runtime", "torch", "triton", "transformers"]
        parts.append("Environment: " + ", ".join(f"{k}={env.get(k)}" for k in keys if k in env) + "\n")
        parts.append("Command: `" + " ".join(env.get("argv", [])) + "`\n")
    for n in notes:
        parts.append(f"- {n}")
    if notes:
        parts.append("")
    for heading, body in sections:
        parts.append(f"## {heading}\n")
        parts.append(body)
    path.write_text("\n".join(parts))
    return path


def run_in_processes(worker: Callable, tasks: Sequence, jobs: int, timeout_s: float) -> dict[str, Any]:
    """Runs `worker(task) -> (task, seconds, error or None)` over `tasks` in `jobs` spawned processes.

    Used to compile Triton kernel configs ahead of the measurements (the autotuner would compile
    them one after another). Stops after `timeout_s`, ending its own still-running workers (they
    would compete with the measurements). Returns done / errors / seconds / slowest task.
    """
    import concurrent.futures as cf
    import multiprocessing as mp
    import time

    t0 = time.perf_counter()
    errors: list[str] = []
    done, slowest = 0, 0.0
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(worker, t) for t in tasks]
        for f in cf.as_completed(futures, timeout=timeout_s):
            task, secs, err = f.result()
            done += 1
            slowest = max(slowest, secs)
            if err:
                errors.append(f"{task}: {err}")
    except cf.TimeoutError:
        errors.append(f"stopped after {timeout_s:.0f} s ({done}/{len(tasks)} tasks done)")
    except Exception as e:  # noqa: BLE001 - a broken pool must not stop the benchmark
        errors.append(f"{type(e).__name__}: {e}"[:300])
    finally:
        procs = list(getattr(pool, "_processes", {}).values()) if done < len(tasks) else []
        pool.shutdown(wait=not procs, cancel_futures=True)
        for proc in procs:  # ours, by handle
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
    return {"tasks": len(tasks), "done": done, "jobs": jobs, "seconds": time.perf_counter() - t0,
            "slowest_task_s": slowest, "errors": errors}


def smoke_files_problem(paths: Sequence[Path], required: Sequence[str]) -> str | None:
    """Reads back the JSON and markdown a --cpu-smoke run wrote: None when both are complete
    (every key in `required` non-empty, markdown non-blank), else what is wrong."""
    try:
        rec = json.loads(Path(paths[0]).read_text())
        if not (all(rec.get(key) for key in required) and Path(paths[1]).read_text().strip()):
            return "the JSON / markdown written by the smoke run are incomplete"
    except Exception as e:  # noqa: BLE001
        return f"reading back the smoke JSON failed: {type(e).__name__}: {str(e)[:200]}"
    return None


def short_error(e: BaseException) -> str:
    """One line for a result row: the exception type and the first line of its message."""
    return f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def sdpa_backends_accepting(q, k, v, **sdpa_kwargs) -> dict[str, str]:
    """Forward + backward of F.scaled_dot_product_attention(q, k, v, **sdpa_kwargs) under each SDPA
    backend alone: {backend name: "ok" or "refused: <first line of the error>"}."""
    import warnings

    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    res = {}
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with warnings.catch_warnings(), sdpa_kernel(backend):
                warnings.simplefilter("ignore")
                o = F.scaled_dot_product_attention(q, k, v, **sdpa_kwargs)
                torch.autograd.grad(o, (q, k, v), torch.ones_like(o))
            res[name] = "ok"
        except Exception as e:  # noqa: BLE001
            res[name] = f"refused: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
    return res


def sdpa_priority_order() -> list[str] | None:
    """The order in which torch tries the SDPA backends (private API: None where it is absent)."""
    from torch.nn.attention import SDPBackend

    try:
        names = {int(getattr(SDPBackend, x)): x for x in ("MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION",
                                                          "CUDNN_ATTENTION", "OVERRIDEABLE") if hasattr(SDPBackend, x)}
        return [names.get(int(b), str(b)) for b in torch._C._get_sdp_priority_order()]
    except Exception:  # noqa: BLE001 - private API, absent in some versions
        return None


def finish_run(record: dict[str, Any], paths: Sequence[Path], start: float, write_all: Callable,
               ratio_columns: Sequence[str]) -> int:
    """Marks `record` complete, writes it with `write_all(paths, record)`, prints the ratio table and
    where the files went; returns 0 (the script's exit status)."""
    import time

    record["complete"] = True
    record["elapsed_s"] = time.perf_counter() - start
    write_all(paths, record)
    print("\n" + markdown_table(record["ratios"], ratio_columns))
    print(f"wrote {paths[0]} and {paths[1]} in {record['elapsed_s']:.0f} s", flush=True)
    return 0
