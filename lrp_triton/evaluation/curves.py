"""Perturbation curves, their areas and ABPC (the AttnLRP paper's faithfulness measure).

For one example with F features and relevance r [F]: MoRF perturbs the features most relevant
first, LeRF least relevant first (ties broken by position). After k = k_0 = 0 < k_1 < ... < k_S
perturbed features (`schedule`) the explained score y(k) is recorded (y(0): the unperturbed
input's); the curve's x axis is the fraction k / F, so that examples of any length share [0, 1].

- Curve values (`normalize`): "none" (default) keeps the raw scores y(k) (a logit, or the callable
  score); "unperturbed" divides each curve by |y(0)|, so that it starts at +-1 and examples weigh
  alike whatever the size of their score.
- Area: AUC = trapezoidal integral of the curve over x in [0, 1].
- ABPC = AUC(LeRF) - AUC(MoRF): large when removing the most relevant features destroys the score
  at once while removing the least relevant ones leaves it intact.
- Over a data set: the mean of the per-example values and its standard error std(ddof=1) / sqrt(n)
  (0 for one example).

Why raw scores by default: ABPC comes from Bluecher et al. (TMLR 2024, "Decoupling pixel flipping
and occlusion strategy for consistent XAI benchmarks", their symmetric relevance gain), whose
code (github.com/bluecher31/pixel-flipping: `src/experiments/pixel_flipping.py` records the target
output at each occluded fraction, `scripts/plot_pixel_flipping.py` integrates LIF - MIF over the
fraction in [0, 1]) divides by nothing. The AttnLRP paper (Achtibat et al., ICML 2024) computes
its ABPC after that work; the ABPC values listed for AttnLRP on LLaMa-2-7b (3.16 on Wikipedia, 3.73
on IMDB, e.g. on wizwand.com's page of the paper) are on the scale of raw logits, not of curves
that start at 1. Its text on the normalisation was not available to check, so "unperturbed" (this
module's earlier default) stays as an option.
"""

from __future__ import annotations

import math

import torch


def schedule(n_features: int, step: int | float) -> list[int]:
    """Counts of perturbed features 0, s, 2s, ..., F; `step` is a number of features (int >= 1) or a
    fraction of them (0 < float <= 1: s = max(1, round(step * F)))."""
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"evaluate: step must be an int (features) or a float fraction, got {step!r}")
    if isinstance(step, int):
        if step < 1:
            raise ValueError(f"evaluate: step={step} must be at least 1 feature")
        size = step
    else:
        if not 0 < step <= 1:
            raise ValueError(f"evaluate: step={step} as a fraction must be in (0, 1]")
        size = max(1, round(step * n_features))
    counts = list(range(0, n_features, size))
    return counts + [n_features]


def ranking(relevance: torch.Tensor, most_relevant_first: bool) -> torch.Tensor:
    """Feature indices by relevance (descending for MoRF, ascending for LeRF); ties by position."""
    keys = -relevance if most_relevant_first else relevance
    return torch.argsort(keys.double().cpu(), stable=True)


def perturbed_sets(order: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """bool [len(counts), F]: row j perturbs the first counts[j] features of `order`."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return rank[None, :] < torch.tensor(counts)[:, None]


def area(x: list[float], y: list[float]) -> float:
    """Trapezoidal area under the curve (x, y)."""
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))


NORMALIZATIONS = ("none", "unperturbed")


def normalization(normalize) -> str:
    """The `normalize` option's name: "none" or "unperturbed" (True / False: the old booleans)."""
    if isinstance(normalize, bool):
        return "unperturbed" if normalize else "none"
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"evaluate: normalize={normalize!r}; pass one of {', '.join(map(repr, NORMALIZATIONS))}")
    return normalize


def normalised(scores: list[float], normalize: str) -> list[float]:
    """The curve as `normalize` says: the raw scores ("none") or divided by |scores[0]| ("unperturbed")."""
    if normalization(normalize) == "none":
        return list(scores)
    base = abs(scores[0])
    if base == 0 or not math.isfinite(base):
        raise ValueError(f"evaluate: the unperturbed score is {scores[0]}, so the curve cannot be divided by "
                         "it; pass normalize='none'")
    return [s / base for s in scores]


def curve_areas(x: list[float], morf: list[float], lerf: list[float], normalize: str) -> tuple[float, float, float]:
    """(AUC(MoRF), AUC(LeRF), ABPC) of one example's two curves of scores (both starting at y(0)) over x."""
    auc_morf, auc_lerf = area(x, normalised(morf, normalize)), area(x, normalised(lerf, normalize))
    return auc_morf, auc_lerf, auc_lerf - auc_morf


def resampled(x: list[float], y: list[float], grid: list[float]) -> list[float]:
    """The curve (x, y) linearly interpolated at `grid` (held at its last value past its end)."""
    out, j = [], 0
    for g in grid:
        while j < len(x) - 2 and x[j + 1] < g:
            j += 1
        if g >= x[-1]:
            out.append(y[-1])
        elif x[j + 1] == x[j]:
            out.append(y[j])
        else:
            t = (g - x[j]) / (x[j + 1] - x[j])
            out.append(y[j] + t * (y[j + 1] - y[j]))
    return out


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) of `values`."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)
