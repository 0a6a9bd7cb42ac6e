"""bench/kernel_report.py --quick: every Triton kernel compiled for sm_90a on this (GPU-less) machine.

Runs in a subprocess without TRITON_INTERPRET (conftest.py sets it in this process; compiling needs the
real triton.jit) and without the cache, so that the compile path itself is exercised every time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = {"_attn_fwd", "attn_bwd_delta", "attn_bwd_dkdv", "attn_bwd_dq", "_rms_norm_fwd", "_rms_norm_bwd",
           "_layer_norm_fwd", "_layer_norm_bwd", "_act_fwd", "_act_bwd", "_glu_fwd", "_glu_bwd"}
MMA_KERNELS = {"_attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq"}


@pytest.mark.slow
def test_kernel_report_quick(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kernel_report.py"), "--quick", "--jobs", "2",
                           "--no-cache", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((tmp_path / "kernel_report_static_sm90a_quick.json").read_text())
    md = (tmp_path / "kernel_report_static_sm90a_quick.md").read_text()
    assert report["kind"] == "static, sm_90a, no GPU" and "static, sm_90a, no GPU" in md
    assert report["uncovered_autotuned_kernels"] == []
    assert KERNELS <= set(report["kernels"]), set(report["kernels"]) ^ KERNELS
    assert report["environment"]["triton"] and "kernel_report.py --quick" in report["environment"]["command"]
    seen = set()
    for row in report["rows"]:
        res, name = row["result"], row["kernel"]
        assert "error" not in res, (name, res)
        seen.add(name)
        assert res["registers"] > 0 and isinstance(res["launchable"], bool), (name, res["registers"])
        assert res["spill_store_bytes"] is not None and res["shared_bytes"] >= 0
        assert res["sass_instructions"] > 0 and res["whole_kernel"]["instructions"] == res["sass_instructions"]
        assert sum(res["whole_kernel"]["classes"].values()) == res["sass_instructions"]
        # the launch specialisations came from the binder: unit strides are constants, pointers 16-aligned
        assert row["specialisation"]["divisible_16"], name
        if row["family"] == "attention":
            assert set(row["specialisation"]["ints_equal_1"]) & {"stride_qd", "stride_od"}, row["specialisation"]
        if name in MMA_KERNELS:
            assert res["mma_kind"] in ("wgmma (HGMMA)", "mma.sync (HMMA)"), (name, res["mma_kind"])
            assert res["loops"] and res["hot_loop"] is not None, name
            hot = res["loops"][res["hot_loop"]]
            assert hot["instructions"] > 0 and hot["classes"]["mma"] > 0, (name, hot)
            assert hot["issue_per_tensor"] > 0 and hot["tile_iterations"] == 1.0, (name, hot)
            assert res["step_fma"] % row["tile"] == 0, (name, res["step_fma"], row["tile"])  # read off the TTIR dots
        for loop in res["loops"]:
            assert loop["instructions"] == sum(loop["classes"].values()) > 0, (name, loop)
    assert seen == set(report["kernels"])
    assert "| attention forward |" in md and "issue/tensor" in md
