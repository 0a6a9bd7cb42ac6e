"""`lrp-triton evaluate`: faithfulness of attribution methods (MoRF / LeRF curves, ABPC) from the shell.

    lrp-triton evaluate                                    # the demo model on 20 fresh demo prompts
    lrp-triton evaluate --dataset prompts.jsonl --model DIR --methods attnlrp,ixg,random --out table.md
    lrp-triton evaluate --step 0.1 --perturbation delete --out report.json --out curves.png

Prints the markdown table on stdout; `--out` writes .md, .json or .png (the curves). Text models
(causal LMs, sequence classifiers, T5 / BART) from the command line; images from Python
(`lrp_triton.evaluate`).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from lrp_triton.cli import CLIError
from lrp_triton.cli_placement import add_placement_arguments, device_map_kwargs

OUT_FORMATS = {".md": "markdown", ".json": "json", ".png": "png"}


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="compare attribution methods by input perturbation (ABPC)",
                       description="Faithfulness of attribution methods: MoRF / LeRF perturbation curves and ABPC.")
    p.add_argument("--model", help="HuggingFace model id or local directory (default: the bundled demo model)")
    p.add_argument("--dataset", type=Path, help="rows to evaluate: .jsonl / .csv with a text column (optional "
                                                "target column), or a datasets directory")
    p.add_argument("--text-column", default="text")
    p.add_argument("--target-column", default="target")
    p.add_argument("--examples", type=int, default=20, help="without --dataset: this many fresh demo prompts")
    p.add_argument("--limit", type=int, help="evaluate at most this many rows of the data set")
    p.add_argument("--methods", default="attnlrp,cp-lrp,input_x_gradient,gradient,integrated_gradients,random",
                   help="comma-separated: attnlrp, cp-lrp, input_x_gradient (ixg), gradient, integrated_gradients "
                        "(ig), random")
    p.add_argument("--perturbation", default="unk", help="unk (default), mask, pad, delete, or a token id")
    p.add_argument("--step", default="1", help="features perturbed per step: a whole number, or a fraction like 0.1")
    p.add_argument("--normalize", choices=("none", "unperturbed"), default="none",
                   help="curve values: none (default, raw scores) or unperturbed (divided by |unperturbed score|)")
    p.add_argument("--batch-size", type=int, default=64, help="perturbed inputs per forward pass (default 64)")
    p.add_argument("--ig-steps", type=int, default=16, help="Integrated Gradients' scales (default 16)")
    p.add_argument("--seed", type=int, default=0, help="the demo prompts' and the random ranking's seed")
    add_placement_arguments(p)  # --device, --dtype, --device-map, --max-memory, --offload-folder
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="write the report: .md (table), .json (everything) or .png (curves); repeatable")


def _step(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise CLIError(f"--step {text}: pass a whole number of features or a fraction like 0.1") from None


def _rows(args, kind: str) -> list:
    from lrp_triton.dataset.reader import BadRow, Columns, read_rows

    if args.dataset is None:
        from lrp_triton.demo.task import sample

        rng = random.Random(args.seed)
        return [sample(rng).prompt for _ in range(args.examples)]
    rows = []
    try:
        for row in read_rows(args.dataset, Columns(text=args.text_column, target=args.target_column)):
            if isinstance(row, BadRow):
                print(f"lrp-triton: skipped line {row.line}: {row.reason}", file=sys.stderr)
                continue
            target = row.target
            if isinstance(target, str) and (target.startswith("id:") or kind == "encoder") and \
                    target.removeprefix("id:").isdigit():
                target = int(target.removeprefix("id:"))
            rows.append({"text": row.text, "target": target, "id": row.id})
            if args.limit is not None and len(rows) >= args.limit:
                break
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if not rows:
        raise CLIError(f"--dataset {args.dataset}: no usable row")
    return rows


def run_evaluate(args) -> int:
    """The `evaluate` command (its errors are CLIErrors: one line, exit status 2)."""
    for out in args.out:
        if Path(out).suffix.lower() not in OUT_FORMATS:
            raise CLIError(f"--out {out}: use a name ending in .md, .json or .png")
        if not Path(out).expanduser().resolve().parent.is_dir():
            raise CLIError(f"--out {out}: its directory does not exist; create it first")
        if Path(out).suffix.lower() == ".png":
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise CLIError(f"--out {out}: PNG output needs matplotlib (`pip install 'lrp_triton[plot]'`)") from None
    if args.examples < 1 or (args.limit is not None and args.limit < 1):
        raise CLIError("--examples and --limit take a number >= 1")
    if args.dataset is not None:
        from lrp_triton.dataset.cli import check_dataset_path

        check_dataset_path(args.dataset)
    elif args.model is not None:
        raise CLIError("--dataset FILE is needed with --model (the demo prompts are for the demo model)")
    placement = device_map_kwargs(args)
    step = _step(args.step)
    perturbation = int(args.perturbation) if args.perturbation.isdigit() else args.perturbation

    from lrp_triton.cli_loading import device_and_dtype, load_model
    from lrp_triton.console import ProgressBar
    from lrp_triton.evaluation import evaluate
    from lrp_triton.models import adapter_for

    device, dtype = device_and_dtype(args.device, args.dtype)
    model, tokenizer, shown = load_model(args.model, device, dtype, kinds=("causal_lm", "encoder", "seq2seq"),
                                         placement=placement)
    rows = _rows(args, adapter_for(model).kind)
    bar = ProgressBar(len(rows), "evaluating")
    try:
        report = evaluate(model, tokenizer, rows, methods=args.methods, perturbation=perturbation, step=step,
                          normalize=args.normalize, batch_size=args.batch_size, ig_steps=args.ig_steps,
                          seed=args.seed,
                          progress=lambda done, total: bar.update(done))
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise CLIError(str(exc).removeprefix("evaluate: ")) from None
    bar.close()
    print(report.to_markdown(), end="")
    for out in args.out:
        fmt = OUT_FORMATS[Path(out).suffix.lower()]
        try:
            {"markdown": report.to_markdown, "json": report.to_json, "png": report.to_png}[fmt](Path(out).expanduser())
        except OSError as exc:
            raise CLIError(f"--out {out}: could not write it ({exc.strerror or exc})") from None
        print(f"wrote {out}", file=sys.stderr)
    return 0
