#!/usr/bin/env python
"""Whole data sets (issue 16): examples per second of `lrp-triton explain --dataset` against a plain Python loop
over `lrp_triton.attribute`, on the bundled demo model and a Llama-3.2-1B-shaped model, then the scaling of
`torchrun --nproc_per_node K -m lrp_triton explain --dataset` from K = 1 to every GPU of the machine (skipped, and
said so, with fewer than 2). See DEFINITIONS.

  python bench/bench_dataset.py [--quick] [--rows N] [--out DIR]
  python bench/bench_dataset.py --cpu-smoke [--torchrun]   # CPU: tiny data sets; the loop equals explain's records
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402

SCRIPT = "bench_dataset"
BUDGETS = (300.0, 150.0)
BATCH = 8
DEFINITIONS = {
    "rows": "demo: the demo task's prompts (lrp_triton.demo.task.sample, 14..34 tokens); 1b: 1 to 24 of them joined "
            "by spaces (about 15..800 tokens), seed 0; JSON Lines {id, text}",
    "models": "demo: the bundled demo model (bf16 on the GPU); 1b: Llama-3.2-1B's body (hidden 2048, 16 layers, 32 / 8 "
              "heads of 64, MLP 8192) with the demo tokenizer's 41-token vocabulary, random bf16 weights, saved to a "
              "local directory (so that the CLI and torchrun load it as --model DIR)",
    "loop": "for each row: ids = tokenizer(text); r = lrp_triton.attribute(model, ids, backend='triton'); "
            "r.relevance[0].float().tolist() (the model already loaded)",
    "attribute_dataset": "list(lrp_triton.attribute_dataset(model, tokenizer, rows, batch_size=8, backend='triton')): "
                         "the engine of explain --dataset (length-bucketed padded batches), the model already loaded",
    "explain_cli": "lrp_triton.cli.main(['explain', '--dataset', F, '--out', results.jsonl, '--batch-size', '8', ...]) "
                   "in this process: loading the model from disk (load_s) and writing the records included",
    "scaling": "python -m torch.distributed.run --standalone --nproc_per_node K -m lrp_triton explain --dataset F --out "
               "O --batch-size 8 [--model DIR], wall clock of the whole command (process start, imports, loading, "
               "NCCL set-up, merge by rank 0 included), K = 1, 2, 4, ... and every GPU",
}
CONVENTIONS = {
    "time": "one timed pass over all rows (wall clock between CUDA synchronisations), after an untimed pass of "
            "attribute_dataset over the same rows (Triton compilation and autotuning of every length bucket)",
    "memory": "peak allocated during the timed pass above what was allocated before (the model not counted)",
    "examples_per_s": "rows / seconds of the pass",
}


def rows_for(key, n, seed=0):
    from lrp_triton.demo.task import sample

    rng = random.Random(seed)
    most = 1 if key.startswith("demo") else 24 if key == "1b" else 3  # (1b-tiny: the CPU smoke's)
    parts = (lambda: rng.randint(1, most))
    return [{"id": f"r{i}", "text": " ".join(sample(rng).prompt for _ in range(parts()))} for i in range(n)]


class Bench:
    """Models (the demo, or a 1B-shaped one saved to a temp dir), their data files, and the timed methods."""

    def __init__(self, device, dtype, tmp, backend):
        self.device, self.dtype, self.tmp, self.backend, self.warm = device, dtype, Path(tmp), backend, set()
        self.models = common.Models(self.load)
        self.dirs, self.tokenizers, self.outputs = {}, {}, {}  # outputs: (label, method) -> the last pass's

    def load(self, key):
        from lrp_triton.cli_loading import load_model

        if key.startswith("1b") and key not in self.dirs:  # 1b-tiny: the CPU smoke's
            import bench_attribute

            _, tokenizer, _ = load_model(None, torch.device("cpu"), torch.float32)
            spec = "1b" if key == "1b" else "tiny"
            bench_attribute.MODEL_SPECS[spec] = dict(bench_attribute.MODEL_SPECS[spec], vocab_size=len(tokenizer))
            model = bench_attribute.build_model(spec, self.device, self.dtype, 4096)
            self.dirs[key] = self.tmp / key
            model.save_pretrained(self.dirs[key])
            tokenizer.save_pretrained(self.dirs[key])
            del model
        t0 = time.perf_counter()
        model, self.tokenizers[key], _ = load_model(str(self.dirs[key]) if key in self.dirs else None,
                                                    torch.device(self.device), self.dtype)
        self.load_s = time.perf_counter() - t0
        return model

    def data(self, case):
        path = self.tmp / f"{case['label']}.jsonl"
        if not path.exists():
            path.write_text("".join(json.dumps(r) + "\n" for r in rows_for(case["model"], case["rows"])))
        return path

    def cli_args(self, case, out):
        return ["explain", "--dataset", str(self.data(case)), "--out", str(out), "--batch-size", str(BATCH),
                "--backend", self.backend, "--dtype", str(self.dtype).removeprefix("torch."),
                *(["--model", str(self.dirs[case["model"]])] if case["model"] in self.dirs else []),
                *(["--device", "cpu"] if self.device == "cpu" else [])]

    def builder(self, method):
        def build(case):
            import lrp_triton
            from lrp_triton import cli

            model = self.models.get(case["model"])
            tokenizer = self.tokenizers[case["model"]]
            rows = rows_for(case["model"], case["rows"])

            def engine():
                return list(lrp_triton.attribute_dataset(model, tokenizer, rows, batch_size=BATCH, backend=self.backend))

            def loop():
                out = []
                for r in rows:
                    ids = torch.tensor([tokenizer(r["text"])["input_ids"]], device=model.device)
                    out.append(lrp_triton.attribute(model, ids, backend=self.backend).relevance[0].float().tolist())
                return out

            def explain():
                out = self.tmp / f"{case['label']}.{time.time_ns()}.jsonl"
                if cli.main(self.cli_args(case, out)) != 0:
                    raise RuntimeError("explain --dataset failed")
                return out

            def warm():
                if case["label"] not in self.warm:
                    engine()
                    self.warm.add(case["label"])

            def after(row):
                row["examples_per_s"] = case["rows"] / (row["pass_ms"] / 1e3)
                row["load_s"] = self.load_s if method == "explain_cli" else None
            fn = dict(loop=loop, attribute_dataset=engine, explain_cli=explain)[method]
            return dict(phases={"pass": (warm, lambda: self.outputs.__setitem__((case["label"], method), fn()))},
                        after=after)
        return build


def tables(run):
    out = []
    for label in dict.fromkeys(r["label"] for r in run.rows):
        ok = {m: run.ok(m, label=label) for m in METHODS}
        eps = {m: r and r["examples_per_s"] for m, r in ok.items()}
        first = next(r for r in run.rows if r["label"] == label)
        out.append(dict(model=first["model"], rows=first["rows"], **{f"{m}_per_s": v for m, v in eps.items()},
                        dataset_over_loop=eps["attribute_dataset"] / eps["loop"] if eps["attribute_dataset"]
                        and eps["loop"] else None, cli_over_loop=eps["explain_cli"] / eps["loop"]
                        if eps["explain_cli"] and eps["loop"] else None))
    scaling = run.extra.get("torchrun", {})
    return [("throughput", "Examples per second (this run; > 1: faster than the loop)", out, None),
            ("scaling", f"torchrun scaling ({scaling.get('note', 'not run')})", scaling.get("rows", []), None)]


METHODS = ("loop", "attribute_dataset", "explain_cli")


def scaling(run, bench, case, gpus, ks=None):
    """torchrun with K = 1, 2, 4, ..., gpus processes (each its own GPU; gloo on the CPU), wall clock of each."""
    ks = ks or sorted({k for k in (1 << p for p in range(8)) if k <= gpus} | {gpus})
    rec = run.extra["torchrun"] = dict(model=case["model"], examples=case["rows"], gpus=gpus, ks=ks, rows=[])
    if gpus < 2:
        rec["note"] = f"skipped: {gpus} GPU(s) on this machine, scaling needs at least 2"
        print(f"scaling: {rec['note']}", flush=True)
        return run.write()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    shadow = [p for p in sys.path if "lrp_shadow_" in p]  # (lrp_triton not installed: the shadow package)
    env["PYTHONPATH"] = os.pathsep.join(shadow + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    rec["note"] = f"{case['model']}, {case['rows']} rows"
    for k in ks:
        if run.left() <= 0:
            rec["rows"].append(dict(K=k, status=f"budget ({run.budget_s:.0f} s) spent"))
            continue
        out = bench.tmp / f"scaling_{k}.jsonl"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(k), "-m",
               "lrp_triton", *bench.cli_args(case, out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(60.0, run.left() + 60))
        wall = time.perf_counter() - t0
        done = sum(1 for _ in out.open()) if out.exists() else 0
        row = dict(K=k, status="ok" if proc.returncode == 0 and done == case["rows"] else
                   f"error: rc {proc.returncode}, {done} records: {proc.stderr.strip()[-300:]}", wall_s=wall,
                   examples_per_s=case["rows"] / wall, records=done, command=" ".join(cmd[1:]))
        base = rec["rows"][0].get("examples_per_s") if rec["rows"] else row["examples_per_s"]
        row.update(speedup=row["examples_per_s"] / base, efficiency=row["examples_per_s"] / base / k)
        rec["rows"].append(row)
        run.log(f"scaling K={k}: {row['status'][:80]} {wall:.1f} s")
        run.write()


def make_runner(args, device, budget, out, smoke=False):
    return common.Runner(SCRIPT, "explain --dataset throughput and torchrun scaling", args, budget_s=budget, out=out,
                         device=device, smoke=smoke, single_call_s=0.0, tables=tables,
                         info=dict(definitions=DEFINITIONS, conventions=CONVENTIONS, batch_size=BATCH),
                         columns=["model", "rows", "method", "status", "pass_ms", "examples_per_s", "pass_peak_MiB",
                                  "load_s", "first_call_s"])


def cpu_smoke(args):
    tmp = common.smoke_dir(SCRIPT)  # (never bench/results)
    failures = []
    run = make_runner(args, "cpu", 600.0, tmp, smoke=True)
    bench = Bench("cpu", torch.float32, tmp, "torch")
    cases = [dict(label="demo-smoke", model="demo", rows=10), dict(label="1b-tiny", model="1b-tiny", rows=6)]
    run.run(cases, {m: bench.builder(m) for m in METHODS})
    failures += [f"{r['label']} {r['method']}: {r['status']}" for r in run.rows if r["status"] != "ok"]
    for c in cases:  # the loop's relevance is explain's, record by record (padding and batching change nothing)
        loop = bench.outputs.get((c["label"], "loop"), [])
        records = {r["id"]: r["relevance"] for r in bench.outputs.get((c["label"], "attribute_dataset"), [])}
        cli = [json.loads(line) for line in bench.outputs[(c["label"], "explain_cli")].open()]
        worst = max(common.rel_diff(torch.tensor(records[f"r{i}"]), torch.tensor(r)) for i, r in enumerate(loop))
        worst = max([worst] + [common.rel_diff(torch.tensor(r["relevance"]), torch.tensor(records[r["id"]]))
                               for r in cli])
        print(f"cpu-smoke: {c['label']}: loop vs attribute_dataset vs explain --dataset: max relative difference "
              f"{worst:.2e} ({len(loop)} / {len(records)} / {len(cli)} records)")
        if worst > 1e-4 or len(loop) != len(records) or len(cli) != c["rows"]:
            failures.append(f"{c['label']}: the methods' records differ ({worst:.2e})")
    scaling(run, bench, cases[0], 2 if args.torchrun else 1, ks=[1, 2] if args.torchrun else None)  # gloo
    failures += [f"scaling K={r['K']}: {r['status']}" for r in run.extra["torchrun"]["rows"] if r["status"] != "ok"]
    failures += [] if args.torchrun or "skipped" in run.extra["torchrun"]["note"] else ["scaling was not skipped"]
    run.write(complete=True)
    failures += run.files_problem(("cpu_smoke", "results", "throughput", "torchrun"))
    return common.smoke_result(failures, "loop, attribute_dataset and explain --dataset give the same records "
                                         "(tol 1e-4); pipeline ok")


def main(argv=None):
    p = common.parser("Examples per second of lrp-triton explain --dataset against a Python loop over attribute on "
                      "the demo model and a Llama-3.2-1B-shaped model, and torchrun scaling over the GPUs.", BUDGETS,
                      smoke="CPU only: tiny data sets through every method (their records compared), the scaling "
                            "step's skip (--torchrun: its launches); writes only to a temp dir")
    p.add_argument("--rows", type=int, default=None, help="rows per data set (default 512 demo / 256 1b; quick 128 / 64)")
    p.add_argument("--models", default="demo,1b", help="comma-separated: demo, 1b (default both)")
    p.add_argument("--torchrun", action="store_true", help="with --cpu-smoke: also launch torchrun with 1 and 2 gloo "
                                                           "processes (about 30 s more)")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        common.ensure_lrp_triton()
        return cpu_smoke(args)
    common.require_cuda(SCRIPT)
    common.ensure_lrp_triton()
    run = make_runner(args, "cuda", common.budget_of(args, BUDGETS), args.out)
    tmp = tempfile.mkdtemp(prefix="bench_dataset_")
    try:
        bench = Bench("cuda", torch.bfloat16, tmp, "triton")
        run.extra["models_built"] = bench.models.info
        sizes = {"demo": 128, "1b": 64} if args.quick else {"demo": 512, "1b": 256}
        cases = [dict(label=k, model=k, rows=args.rows or sizes[k]) for k in args.models.split(",")]
        run.run(cases, {m: bench.builder(m) for m in METHODS})
        bench.models.model = bench.models.key = None
        common.free_cuda()
        scaling(run, bench, cases[-1], torch.cuda.device_count())
        return run.finish()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
