"""The benchmarks in bench/ on the CPU: `--cpu-smoke` runs each end-to-end script's code paths (bench/common.py's
runner: cases x methods, simulated OOMs, the writers) on tiny float32 models, and checks that its reference
method ("ref_sdpa": AttnLRP through SDPA with scaled gradients, lrp_triton.attention_interface.sdpa_attention_interface; T5 with
transformers' own materialised-bias attention) gives the same relevance as lrp_triton.attribute; the attention
benchmark's that every baseline computes lrp_attention's forward (MLA, sinks); the data-set benchmark's that
its loop, attribute_dataset and explain --dataset give the same records.

Run in subprocesses, as the GPU session runs them; with TRITON_INTERPRET=1 (set by conftest.py on CPU-only
machines) the Triton backend is compared too.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPTS = ("bench_attention", "bench_norm_mlp", "bench_attribute", "bench_encoders", "bench_dataset")


def run(*args, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def check_smoke(script, families=(), triton=True):
    proc = run(sys.executable, str(BENCH / f"{script}.py"), "--cpu-smoke")
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"--cpu-smoke exited with {proc.returncode}:\n{tail}"
    agree = [line for line in proc.stdout.splitlines() if line.startswith("cpu-smoke: agree:")]
    assert agree, f"no 'agree' line in the output:\n{tail}"
    assert all(f" {fam} " in agree[0] for fam in families), agree[0]
    assert "FAIL" not in proc.stdout, tail
    if triton and os.environ.get("TRITON_INTERPRET") == "1":
        assert "TRITON_INTERPRET=1)" in proc.stdout, tail
    return proc.stdout


@pytest.mark.slow
def test_bench_attribute_cpu_smoke():
    """Llama: every method (forward, gradient, ref_sdpa, lrp_triton, each +ckpt), the longest-context search."""
    out = check_smoke("bench_attribute")
    assert "ref_sdpa+ckpt vs ref_sdpa" in out
    assert all(f"moe-tiny/N=40 {m}: ok" in out for m in ("forward", "lrp_triton", "gradient", "ref_sdpa")), out[-3000:]


@pytest.mark.slow
def test_bench_encoders_cpu_smoke():
    """BERT, ViT and T5; T5's reference hands SDPA transformers' dense [1, H, N, N] position bias."""
    out = check_smoke("bench_encoders", families=("bert", "vit", "t5"))
    assert "materialised position biases" in out
    assert all(f"vlm-tiny/B={b}/size=8 {m}: ok" in out for b in (1, 3) for m in ("forward", "lrp_triton", "ref_sdpa"))


@pytest.mark.slow
def test_bench_attention_cpu_smoke():
    """MLA (D_v != D_qk) and sink cases (full, window): every method through the runner; SDPA backends that refuse
    a shape are recorded as unsupported; each baseline's forward equals lrp_attention's."""
    out = check_smoke("bench_attention")
    assert "sdpa_flash: error: RuntimeError: unsupported" in out and "sdpa_sink: forward vs lrp_torch" in out
    assert all(f"{c}/N=48 eager: forward vs lrp_torch" in out for c in ("mla/d24-16/causal", "sink/d16/w8/causal"))


@pytest.mark.slow
def test_bench_dataset_cpu_smoke():
    """The loop over attribute, attribute_dataset and explain --dataset (demo model and a Llama-shaped one from a
    saved directory): same records; the torchrun scaling says why it is skipped (one process)."""
    out = check_smoke("bench_dataset", triton=False)
    assert "scaling: skipped: 1 GPU(s)" in out and "(10 / 10 / 10 records)" in out


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_no_gpu_message(script):
    proc = run(sys.executable, str(BENCH / f"{script}.py"), "--help", timeout=120)
    assert proc.returncode == 0 and "--budget-s" in proc.stdout and "--quick" in proc.stdout
    import torch

    if not torch.cuda.is_available():
        proc = run(sys.executable, str(BENCH / f"{script}.py"), "--quick", timeout=120)
        assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr, proc.stderr[-2000:]


def test_run_gpu_sh_arguments():
    """Limits come from arguments / environment, never from this workplace's machine."""
    proc = run("bash", str(BENCH / "run_gpu.sh"), "--help", timeout=60)
    assert proc.returncode == 0 and "--total-s" in proc.stdout
    proc = run("bash", str(BENCH / "run_gpu.sh"), "no_such_step", timeout=60)
    assert proc.returncode == 2 and "unknown argument" in proc.stdout


def test_bench_stays_small():
    """The benchmarks (runner, scripts, run_gpu.sh) under 2,500 lines.

    The restructuring issue set 2,000 for the runner and four scripts (reached: 1,999). Issues 13, 15 and 16
    then asked for benchmark cases with code of their own: MLA and attention-sink baselines (the SDPA sink
    construction, HF's eager sink attention) with a CPU smoke of the attention benchmark (about 150 lines),
    Qwen3-MoE and Qwen2.5-VL end-to-end cases (about 70) and a fifth script, the data-set throughput and
    torchrun scaling benchmark (bench_dataset.py, about 260), after the duplication left in bench/ was a few
    lines. The budget still bounds the runner's growth: a new case should be a case, not a new runner.

    The static kernel report (bench/kernel_report.py, a later issue's compiler-output analysis that
    measures nothing at run time) is a tool of its own with its own budget: 700 lines, 760 since it also
    covers the kernel variants of issue 13 (value head dim, sinks) and 11's descriptor loads."""
    benchmarks = [p for p in [*BENCH.glob("*.py"), *BENCH.glob("*.sh")] if p.name != "kernel_report.py"]
    lines = sum(len(p.read_text().splitlines()) for p in benchmarks)
    assert lines < 2500, lines
    assert len((BENCH / "kernel_report.py").read_text().splitlines()) < 760
