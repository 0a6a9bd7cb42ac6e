"""bench/bench_attribute.py --cpu-smoke: the benchmark's code paths run on the CPU, and its path (c)
(AttnLRP in PyTorch around SDPA, lxt's method) gives the same relevance as lrp_triton.attribute.

Runs the script in a subprocess (as the GPU session will), on a tiny float32 Llama; with
TRITON_INTERPRET=1 (set by conftest.py on CPU-only machines) the Triton backend is compared too.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bench_attribute.py"


@pytest.mark.slow
def test_bench_attribute_cpu_smoke():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"--cpu-smoke exited with {proc.returncode}:\n{tail}"
    agree = [line for line in proc.stdout.splitlines() if line.startswith("cpu-smoke: agree:")]
    assert agree, f"no 'agree' line in the output:\n{tail}"
    assert "FAIL" not in proc.stdout, tail


def test_bench_attribute_help_and_no_gpu_message():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--cpu-smoke" in proc.stdout
    import torch

    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode != 0 and "needs a CUDA GPU" in proc.stderr


ENCODERS = ROOT / "bench" / "bench_encoders.py"


@pytest.mark.slow
def test_bench_encoders_cpu_smoke():
    """bench/bench_encoders.py --cpu-smoke: BERT, ViT and T5 (tiny, float32) through every method of the benchmark,
    and its pure-PyTorch path (SDPA; T5 with transformers' materialised bias) agreeing with lrp_triton.attribute."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(ENCODERS), "--cpu-smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"--cpu-smoke exited with {proc.returncode}:\n{tail}"
    agree = [line for line in proc.stdout.splitlines() if line.startswith("cpu-smoke: agree:")]
    assert agree, f"no 'agree' line in the output:\n{tail}"
    assert all(f" {fam} " in agree[0] for fam in ("bert", "vit", "t5")), agree[0]
    assert "FAIL" not in proc.stdout, tail
