"""`lrp_triton.attribute_dataset` and `lrp-triton explain --dataset`: batching, outputs, resuming.

Batched results are compared with `attribute` called on each row alone; the CLI runs in-process
on the bundled demo model: bad rows are reported with their line numbers, a crash (a cut-off
last line, a lost Parquet part) and a Ctrl-C are resumed without losing or duplicating a record.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

import lrp_triton
from lrp_triton import cli
from lrp_triton.dataset import BadRow, Row, attribute_dataset, read_records, read_rows
from lrp_triton.dataset import run as dataset_run
from lrp_triton.dataset.batching import Encoded, buckets
from lrp_triton.demo import load as load_demo
from lrp_triton.demo.task import sample

try:
    import pyarrow  # noqa: F401
    HAS_PYARROW = True
except ImportError:
    HAS_PYARROW = False


@pytest.fixture(scope="module")
def demo():
    return load_demo()


def prompts(n, seed=11):
    rng = random.Random(seed)
    return [sample(rng).prompt for _ in range(n)]


def test_batched_rows_match_attribute_row_by_row(demo):
    model, tok = demo
    texts = prompts(9)
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)]
    rows[2]["target"] = "5"  # a given target and a contrast go to batches of their own kind
    rows[3]["target"], rows[3]["contrast"] = "id:12", "7"
    errors = []
    records = list(attribute_dataset(model, tok, rows, batch_size=3, on_error=lambda *e: errors.append(e)))
    assert not errors and sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)
    by_id = {r["id"]: r for r in records}
    for row in rows:
        ids = tok(row["text"], return_tensors="pt").input_ids
        target = {"5": tok.convert_tokens_to_ids("5"), "id:12": 12}.get(row.get("target"))
        contrast = tok.convert_tokens_to_ids("7") if row.get("contrast") else None
        alone = lrp_triton.attribute(model, ids, target=target, contrast=contrast)
        got = by_id[row["id"]]
        assert got["token_ids"] == ids[0].tolist() and got["target"] == int(alone.target[0])
        assert got["logit"] == pytest.approx(float(alone.logit[0]), abs=1e-4)
        torch.testing.assert_close(torch.tensor(got["relevance"]), alone.relevance[0], atol=1e-4, rtol=1e-4)
        assert got["tokens"] == tok.convert_ids_to_tokens(ids[0].tolist()) and got["mode"] == "attnlrp"


def test_buckets_group_similar_lengths_and_one_kind_of_target():
    items = [Encoded(Row(i, str(i), "x"), [0] * n, t, None) for i, (n, t) in
             enumerate([(5, None), (9, None), (6, 3), (5, None), (8, None), (7, 3), (9, None)])]
    batches = list(buckets(items, batch_size=2, window=100, max_tokens=None))
    kinds = [{b.target is None for b in batch} for batch in batches]
    assert all(len(k) == 1 for k in kinds) and all(len(b) <= 2 for b in batches)
    assert [[len(e.ids) for e in b] for b in batches] == [[6, 7], [5, 5], [8, 9], [9]]
    capped = list(buckets(items, batch_size=8, window=100, max_tokens=18))
    assert all(max(len(e.ids) for e in b) * len(b) <= 18 for b in capped)


def test_reader_reports_bad_rows_with_line_numbers(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a=1 ?a", "id": "k"}\n\n{oops\n["list"]\n{"text": ""}\n{"text": "b=2 ?b", "id": "k"}\n'
                     '{"text": "c=3 ?c", "target": 2.5}\n{"text": "d=4 ?d"}\n')
    got = list(read_rows(jsonl))
    assert got[0] == Row(1, "k", "a=1 ?a") and got[-1] == Row(8, "8", "d=4 ?d")
    assert [(b.line, b.reason.split(" ")[0]) for b in got if isinstance(b, BadRow)] == [
        (3, "not"), (4, "a"), (5, "no"), (6, "duplicate"), (7, "the")]
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('id,text,target\nq,"x=1\n?x",1\nr,,\ns,y=2 ?y,\n')
    got = list(read_rows(csv_file))
    assert got[0] == Row(3, "q", "x=1\n?x", "1") and isinstance(got[1], BadRow) and got[1].line == 4
    assert got[2] == Row(5, "s", "y=2 ?y")


def test_hf_datasets_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a=1 ?a", "b=2 ?b"], "id": ["u", "v"]}).save_to_disk(str(tmp_path / "ds"))
    assert [r.id for r in read_rows(tmp_path / "ds")] == ["u", "v"]


def write_dataset(path, n):
    lines = []
    for i, text in enumerate(prompts(n, seed=5)):
        lines.append(json.dumps({"id": f"e{i}", "text": text}))
        if i == 3:
            lines.append("{not json")
    path.write_text("\n".join(lines) + "\n")


def test_cli_writes_resumes_and_never_duplicates(tmp_path, capsys, monkeypatch):
    data = tmp_path / "d.jsonl"
    write_dataset(data, 14)
    outs = [tmp_path / "r.jsonl"] + ([tmp_path / "r.parquet"] if HAS_PYARROW else [])
    base = ["explain", "--dataset", str(data), "--batch-size", "4", "--device", "cpu"]
    base += [a for o in outs for a in ("--out", str(o))]
    assert cli.main(base + ["--limit", "6"]) == 0
    err = capsys.readouterr().err
    assert "skipped line 5: not valid JSON" in err and "examples/s" in err and "ETA" in err
    first = {r["id"]: r for r in read_records(outs[0])}
    assert sorted(first) == [f"e{i}" for i in range(6)]

    # a crash: the JSON Lines file ends in a partial line, the newest Parquet part is gone
    text = outs[0].read_text()
    outs[0].write_text(text + text.splitlines()[0][:40])
    if HAS_PYARROW:
        parts = sorted(outs[1].glob("part-*.parquet"))
        parts[-1].unlink()
    # and a Ctrl-C after one more batch (without pyarrow only two batches are left to run)
    calls = {"n": 0}
    real = dataset_run.attribute

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_run, "attribute", interrupted)
    assert cli.main(base) == 130
    assert "rerun the same command" in capsys.readouterr().err
    monkeypatch.setattr(dataset_run, "attribute", real)
    assert cli.main(base) == 0
    for out in outs:
        records = read_records(out)
        ids = [r["id"] for r in records]
        assert sorted(ids) == sorted(f"e{i}" for i in range(14)) and len(ids) == len(set(ids)), out
        for r in records:
            if r["id"] in first:
                assert r["relevance"] == pytest.approx(first[r["id"]]["relevance"], abs=1e-4)  # other padding
                assert r["target"] == first[r["id"]]["target"]
    assert cli.main(base) == 0 and len(read_records(outs[0])) == 14  # nothing left to do
    assert "explained 0 examples (14 already written)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "a=1 ?a"], "--prompt cannot be combined with --dataset"),
    (["--out", "r.html"], "the output is .jsonl or .parquet"),
    ([], "--dataset needs --out"),
])
def test_cli_errors_before_any_work(tmp_path, capsys, extra, message):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a=1 ?a"}\n')
    assert cli.main(["explain", "--dataset", str(data), *extra]) == 2
    assert message in capsys.readouterr().err
    assert cli.main(["explain", "--dataset", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
