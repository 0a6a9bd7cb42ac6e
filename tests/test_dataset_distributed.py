"""`torchrun --nproc_per_node 2 -m lrp_triton explain --dataset ...` and `accelerate launch
--multi_gpu --num_processes 2 ...` on CPU (gloo): each rank explains its shard, rank 0 merges the
parts, and the merged output equals the single-process one example by example. (On CPU, accelerate
needs --multi_gpu to start several processes: with --cpu it runs one.)"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lrp_triton import cli
from lrp_triton.dataset import read_records
from lrp_triton.dataset.shards import Shard
from lrp_triton.demo.task import sample

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = {
    "torchrun": ["torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"],
    "accelerate": ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", "-m"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_gloo_processes_give_the_single_process_records(tmp_path, capsys, launcher):
    if launcher == "accelerate":
        pytest.importorskip("accelerate")
    rng = random.Random(3)
    rows = [{"id": f"q{i}", "text": sample(rng).prompt} for i in range(10)]
    assert {Shard(0, 2).owns(r["id"]) for r in rows} == {True, False}  # both ranks get rows
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{bad\n")
    single, multi = tmp_path / "single.jsonl", tmp_path / "multi.jsonl"
    assert cli.main(["explain", "--dataset", str(data), "--out", str(single), "--device", "cpu"]) == 0
    capsys.readouterr()
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", *LAUNCHERS[launcher], "lrp_triton", "explain", "--dataset", str(data),
                           "--out", str(multi), "--device", "cpu", "--batch-size", "3"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("skipped line 11: not valid JSON") == 1  # reported once, by rank 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "multi.jsonl", "single.jsonl"]  # parts merged
    merged = read_records(multi)
    assert [r["line"] for r in merged] == sorted(r["line"] for r in merged)
    expected = {r["id"]: r for r in read_records(single)}
    assert sorted(r["id"] for r in merged) == sorted(expected) == sorted(r["id"] for r in rows)
    for r in merged:
        e = expected[r["id"]]
        assert (r["token_ids"], r["target"], r["tokens"]) == (e["token_ids"], e["target"], e["tokens"])
        assert r["logit"] == pytest.approx(e["logit"], abs=1e-4)
        torch.testing.assert_close(torch.tensor(r["relevance"]), torch.tensor(e["relevance"]), atol=1e-4, rtol=1e-4)
