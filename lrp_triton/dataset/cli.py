"""`lrp-triton explain --dataset FILE --out results.jsonl [--out results.parquet]`: a whole data set.

Every row's next token is explained (length-bucketed batches, see `batching`); results go to the
outputs as they are made (see `writer`), a progress line with examples per second and the ETA to
stderr. A rerun with the same outputs skips the ids they already hold (after a crash or Ctrl-C
nothing written is lost or duplicated). Rows that cannot be explained are reported with their
line number and skipped. Under `torchrun` each rank takes its share (see `lrp_triton.dataset.shards`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lrp_triton.cli import CLIError


def add_dataset_arguments(p) -> None:
    """The --dataset options of `lrp-triton explain`."""
    g = p.add_argument_group("data sets (explain --dataset FILE --out results.jsonl)")
    g.add_argument("--dataset", type=Path, help="explain every row of a .jsonl / .csv file or a datasets directory; "
                                                "--out then takes .jsonl and .parquet")
    g.add_argument("--text-column", default="text")
    g.add_argument("--id-column", default="id", help="stable ids (default: the row's line number)")
    g.add_argument("--target-column", default="target", help="optional: the token to explain (text or id:N)")
    g.add_argument("--contrast-column", default="contrast")
    g.add_argument("--limit", type=int, help="only the first N rows of the data set")
    g.add_argument("--batch-size", type=int, default=8, help="rows per batch (default 8; similar lengths together)")


def check_dataset_path(path: Path) -> None:
    """--dataset PATH exists and is a format the reader takes (CLIError otherwise)."""
    from lrp_triton.dataset.reader import data_format

    if not path.exists():
        raise CLIError(f"--dataset {path}: no such file or directory")
    try:
        data_format(path)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _check(args) -> None:
    given = [flag for flag, bad in (("--prompt", args.prompt is not None), ("--prompt-file", args.prompt_file),
                                    ("--generate", args.generate), ("--target", args.target),
                                    ("--contrast", args.contrast), ("--position", args.position != -1)) if bad]
    if given:
        raise CLIError(f"{', '.join(given)} cannot be combined with --dataset (each row brings its own text and "
                       "target columns); drop it")
    if not args.out:
        raise CLIError("--dataset needs --out results.jsonl (and/or results.parquet)")
    for out in args.out:
        suffix = Path(out).suffix.lower()
        if suffix not in (".jsonl", ".ndjson", ".parquet"):
            raise CLIError(f"--out {out}: with --dataset the output is .jsonl or .parquet")
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise CLIError(f"--out {out}: Parquet output needs pyarrow; `pip install 'lrp_triton[parquet]'`") \
                    from None
        if not Path(out).expanduser().resolve().parent.is_dir():
            raise CLIError(f"--out {out}: its directory does not exist; create it first")
    check_dataset_path(args.dataset)
    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise CLIError(f"{flag} {value}: pass a number >= 1")


def explain_dataset(args) -> int:
    """Runs `explain --dataset` (errors are CLIErrors: one line, exit status 2)."""
    _check(args)
    from lrp_triton.cli_loading import device_and_dtype, load_model
    from lrp_triton.cli_placement import device_map_kwargs
    from lrp_triton.dataset.progress import RateProgress
    from lrp_triton.dataset.reader import BadRow, Columns, count_rows, read_rows
    from lrp_triton.dataset.run import attribute_dataset
    from lrp_triton.dataset.shards import Shard, merged_ids
    from lrp_triton.dataset.writer import open_output

    shard = Shard.from_environment()
    placement = device_map_kwargs(args)
    if placement and shard.world > 1:
        raise CLIError("--device-map cannot be combined with torchrun / accelerate launch (each rank takes one "
                       "device, or the whole model); drop --device-map or run one process")
    device, dtype = device_and_dtype(args.device, args.dtype)
    if shard.world > 1 and args.device is None and device.type == "cuda":
        import torch

        device = torch.device("cuda", shard.local_rank % torch.cuda.device_count())
    model, tokenizer, shown = load_model(args.model, device, dtype, placement=placement)
    columns = Columns(args.text_column, args.id_column, args.target_column, args.contrast_column)
    try:
        outputs = [open_output(shard.part(out)) for out in args.out]
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    done = set.intersection(*(o.done | (merged_ids(out) if shard.world > 1 else set())
                              for o, out in zip(outputs, args.out)))
    total = count_rows(args.dataset)
    if args.limit is not None:
        total = min(total, args.limit)
    bad = []

    def skipped(line: int, reason: str) -> None:
        bad.append(line)
        print(f"lrp-triton: skipped line {line}: {reason}", file=sys.stderr)

    def first_rows():  # --limit counts the data set's readable rows, before sharding
        taken = 0
        for r in read_rows(args.dataset, columns):
            if isinstance(r, BadRow):
                if shard.rank == 0:  # rank 0 reports bad rows
                    yield r
                continue
            if args.limit is not None and taken >= args.limit:
                return
            taken += 1
            yield r

    rows = shard.select(first_rows())
    progress = RateProgress(None if shard.world > 1 else max(0, total - len(done)),
                            "explaining" if shard.world == 1 else f"rank {shard.rank}: explaining")
    written, buffer = 0, []

    def flush():
        nonlocal written, buffer
        for o in outputs:
            o.write(buffer)
        written += len(buffer)
        buffer = []
        progress.update(written)

    try:
        for record in attribute_dataset(model, tokenizer, rows, mode=args.mode, batch_size=args.batch_size,
                                        skip_ids=done, on_error=skipped, backend=args.backend,
                                        checkpoint=args.checkpoint):
            buffer.append(record)
            if len(buffer) >= args.batch_size:
                flush()
        flush()
    except KeyboardInterrupt:
        flush()
        for o in outputs:
            o.close()
        progress.close()
        print(f"lrp-triton: interrupted after {written} examples; rerun the same command to go on", file=sys.stderr)
        return 130
    for o in outputs:
        o.close()
    progress.close()
    shard.finish(args.out)
    who = "" if shard.world == 1 else f"rank {shard.rank}: "
    print(who + f"explained {written} examples" + (f" ({len(done)} already written)" if done else "") +
          (f"; {len(bad)} bad rows skipped" if bad else "") + f"; wrote {', '.join(args.out)}", file=sys.stderr)
    return 0
