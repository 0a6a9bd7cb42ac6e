"""`lrp_triton.evaluate`: perturbation curves of several attribution methods over a data set."""

from __future__ import annotations

import time
from typing import Callable, Iterable

import torch

from lrp_triton.evaluation.curves import (curve_areas, mean_and_error, normalised, normalization, perturbed_sets,
                                          ranking, resampled, schedule)
from lrp_triton.evaluation.methods import DEFAULT_METHODS, METHODS, resolve_methods
from lrp_triton.evaluation.report import EvaluationReport, MethodScores
from lrp_triton.evaluation.scoring import Scorer

GRID = [i / 50 for i in range(51)]  # where the mean curves are resampled (for the plot and the JSON)


def evaluate(model, tokenizer=None, rows: Iterable = (), *, methods=DEFAULT_METHODS, perturbation=None,
             step: int | float = 1, batch_size: int = 64, ig_steps: int = 16, score: Callable | None = None,
             normalize: str = "none", seed: int = 0, attribute_kwargs: dict | None = None,
             progress: Callable[[int, int], None] | None = None) -> EvaluationReport:
    """Faithfulness of attribution methods by input perturbation (MoRF / LeRF curves and ABPC).

    For each row, each method's relevance orders the input features (text: every non-special token;
    images: the model's patches); the features are perturbed `step` at a time most relevant first
    (MoRF) and least relevant first (LeRF), and the explained score recorded after each step. All
    variants of one example (every method, both orders) are scored `batch_size` per forward pass.
    See `lrp_triton.evaluation.curves` for the areas, the normalisation and ABPC.

    Args:
        model: a supported causal LM (next-token logit), text encoder (class logit, or `score`),
            vision transformer (class logit by patch, or `score`) or T5 / BART (first output token).
        tokenizer: the text model's tokenizer (None for vision models).
        rows: text rows (a string, or a dict with "text" and optional "target": a token id / class
            index, or one token's text for language models; "text_pair" for encoder pairs), or images
            (pixel_values [C, H, W], or a dict holding them).
        methods: names from `lrp_triton.evaluation.METHODS` (or one comma-separated string):
            attnlrp, cp-lrp, input_x_gradient (ixg), gradient, integrated_gradients (ig), random.
        perturbation: text "unk" (default), "mask", "pad", "delete" or a token id; images "zero"
            (default), "mean" or "blur".
        step: features perturbed per step (int), or a fraction of them (float in (0, 1]).
        batch_size: perturbed variants per forward pass (and Integrated Gradients steps per pass).
        ig_steps: Integrated Gradients' number of scales.
        score: encoders / vision: a callable `score(outputs, attention_mask, row) -> [B]` explained
            instead of a class logit (e.g. a sentence similarity built from `lrp_triton.mean_pool` and
            `lrp_triton.lrp_cosine_similarity`); the rows of one batch are variants of `row`.
        normalize: "none" (default: the raw scores, as ABPC's authors' code) or "unperturbed" (each
            curve divided by |its unperturbed score|); True / False mean "unperturbed" / "none".
        seed: the random ranking's seed. attribute_kwargs: passed to `attribute` by the LRP methods
            (e.g. {"linear_rule": "gamma-signed"} for ViTs). progress: `progress(done, total)` per row.

    Returns:
        An `EvaluationReport` (`.to_markdown()`, `.to_json()`, `.to_png()`, `report["attnlrp"].abpc`).
    """
    names = resolve_methods(methods)
    normalize = normalization(normalize)
    for name, value, low in (("batch_size", batch_size, 1), ("ig_steps", ig_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"evaluate: {name}={value!r} must be an int >= {low}")
    scorer = Scorer(model, tokenizer, score, perturbation)
    settings = {"batch_size": batch_size, "ig_steps": ig_steps, "seed": seed,
                "attribute_kwargs": dict(attribute_kwargs or {})}
    rows = list(rows)
    if not rows:
        raise ValueError("evaluate: no rows to evaluate")
    delete = scorer.kind != "vision" and scorer.replacement is None
    per_method = {name: {"abpc": [], "auc_morf": [], "auc_lerf": [], "morf": [], "lerf": [], "seconds": 0.0}
                  for name in names}
    for index, row in enumerate(rows):
        example = scorer.prepare(row, index)
        n = example.features.numel()
        counts = schedule(n, step)
        if delete and n == example.input_ids.numel():  # no special token left to keep: stop one short
            counts = [c for c in counts if c < n] or [0]
        x = [c / n for c in counts]
        sets = []
        for name in names:
            start = time.perf_counter()
            relevance = METHODS[name](scorer, example, settings)
            per_method[name]["seconds"] += time.perf_counter() - start
            if relevance.shape != (n,) or not torch.isfinite(relevance).all():
                raise ValueError(f"evaluate: method {name!r} gave no finite relevance for row {index}")
            for most_first in (True, False):
                sets.append(perturbed_sets(ranking(relevance, most_first), counts)[1:])  # count 0: the original
        scores = scorer.score_variants(example, torch.cat(sets), batch_size)
        width = len(counts) - 1
        for i, name in enumerate(names):
            morf = [example.score] + scores[2 * i * width:(2 * i + 1) * width]
            lerf = [example.score] + scores[(2 * i + 1) * width:(2 * i + 2) * width]
            record = per_method[name]
            for key, value in zip(("auc_morf", "auc_lerf", "abpc"), curve_areas(x, morf, lerf, normalize)):
                record[key].append(value)
            record["morf"].append(resampled(x, normalised(morf, normalize), GRID))
            record["lerf"].append(resampled(x, normalised(lerf, normalize), GRID))
        if progress is not None:
            progress(index + 1, len(rows))
    results = []
    for name in names:
        r = per_method[name]
        stats = {key: mean_and_error(r[key]) for key in ("abpc", "auc_morf", "auc_lerf")}
        results.append(MethodScores(
            method=name, abpc=stats["abpc"][0], abpc_se=stats["abpc"][1], auc_morf=stats["auc_morf"][0],
            auc_morf_se=stats["auc_morf"][1], auc_lerf=stats["auc_lerf"][0], auc_lerf_se=stats["auc_lerf"][1],
            seconds=r["seconds"] / len(rows),
            morf_curve=[sum(c[j] for c in r["morf"]) / len(rows) for j in range(len(GRID))],
            lerf_curve=[sum(c[j] for c in r["lerf"]) / len(rows) for j in range(len(GRID))],
            per_example=[{"abpc": a, "auc_morf": m, "auc_lerf": l}
                         for a, m, l in zip(r["abpc"], r["auc_morf"], r["auc_lerf"])]))
    return EvaluationReport(methods=results, grid=list(GRID), n_examples=len(rows),
                            perturbation=str(scorer.perturbation), step=step, normalize=normalize,
                            model_name=str(getattr(model, "name_or_path", "") or ""))
