"""The attribution methods compared by `lrp_triton.evaluate`, each giving relevance per feature [F].

- "attnlrp", "cp-lrp": `lrp_triton.attribute` in that mode (token relevance at the word
  embeddings; pixel relevance summed per patch).
- "input_x_gradient": `attribute(mode="gradient")`: sum_d x_d * df/dx_d per token (pixel); the
  LRP settings of `attribute_kwargs` (linear_rule, gamma) do not apply to it.
- "gradient": the plain gradient of the model as it is, sensitivity |df/dx|: the L2 norm over the
  hidden dimension per token; for images the L2 norm over channels per pixel, summed per patch.
- "integrated_gradients": IG with the zero baseline, m midpoint steps
  IG_i = sum_d x_d * (1/m) sum_k df/dx_d(a_k x), a_k = (k + 1/2) / m, the m scaled copies of the
  input differentiated together, `batch_size` copies per forward and backward pass.
- "random": a random ranking (a seeded permutation): the floor every method should beat.
"""

from __future__ import annotations

from typing import Callable

import torch

from lrp_triton.attribute import attribute
from lrp_triton.attribution.core import frozen_eval
from lrp_triton.evaluation.scoring import Example, Scorer

DEFAULT_METHODS = ("attnlrp", "cp-lrp", "input_x_gradient", "gradient", "integrated_gradients", "random")
ALIASES = {"ixg": "input_x_gradient", "input-x-gradient": "input_x_gradient", "ig": "integrated_gradients",
           "integrated-gradients": "integrated_gradients", "cp_lrp": "cp-lrp"}


def lrp_method(mode: str) -> Callable:
    def relevance(scorer: Scorer, example: Example, settings: dict) -> torch.Tensor:
        extra = dict(settings.get("attribute_kwargs", {}))
        if mode == "gradient":  # the exact gradient: no LRP rule applies
            extra.pop("linear_rule", None), extra.pop("gamma", None)
        result = attribute(scorer.model, mode=mode, **scorer.attribute_kwargs(example), **extra)
        return scorer.feature_relevance(example, result.relevance[0])

    relevance.__doc__ = f"`lrp_triton.attribute(mode={mode!r})`, per feature."
    return relevance


def _grads(scorer: Scorer, example: Example, x: torch.Tensor) -> torch.Tensor:
    """d(score)/dx for a batch x [B, ...] (rows are independent: the gradient of the summed scores)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = scorer.input_scores(example, x)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad


def _per_position(example: Example, grad_map: torch.Tensor) -> torch.Tensor:
    """A map over the gradient input reduced to tokens [N] (sum over the hidden dim) or pixels [H, W]
    (sum over channels)."""
    return grad_map.sum(0) if example.pixel_values is not None else grad_map.sum(-1)


def gradient(scorer: Scorer, example: Example, settings: dict) -> torch.Tensor:
    """Sensitivity: the L2 norm of the gradient per token (over hidden) or per pixel (over channels)."""
    with frozen_eval(scorer.model):
        grad = _grads(scorer, example, scorer.gradient_input(example)[None])[0].double()
    return scorer.feature_relevance(example, _per_position(example, grad * grad).sqrt())


def integrated_gradients(scorer: Scorer, example: Example, settings: dict) -> torch.Tensor:
    """IG with the zero baseline, midpoint rule over `ig_steps` scales, batched (module docstring)."""
    steps, batch = settings.get("ig_steps", 16), settings.get("batch_size", 64)
    x = scorer.gradient_input(example)
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    with frozen_eval(scorer.model):
        for s in range(0, steps, batch):
            a = alphas[s:s + batch].to(x.device, x.dtype).view(-1, *([1] * x.dim()))
            total += _grads(scorer, example, a * x[None]).double().sum(0)
    return scorer.feature_relevance(example, _per_position(example, x.double() * total / steps))


def random_ranking(scorer: Scorer, example: Example, settings: dict) -> torch.Tensor:
    """A random permutation of the features (seeded by `seed` and the example's index)."""
    generator = torch.Generator().manual_seed(settings.get("seed", 0) * 1_000_003 + example.index)
    return torch.randperm(example.features.numel(), generator=generator).double()


METHODS: dict[str, Callable] = {
    "attnlrp": lrp_method("attnlrp"),
    "cp-lrp": lrp_method("cp-lrp"),
    "input_x_gradient": lrp_method("gradient"),
    "gradient": gradient,
    "integrated_gradients": integrated_gradients,
    "random": random_ranking,
}


def resolve_methods(methods) -> list[str]:
    """Method names (aliases accepted: ixg, ig, ...), checked; a ValueError naming the known ones."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    names = [ALIASES.get(m, m) for m in methods]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"evaluate: unknown method(s) {', '.join(map(repr, unknown)) or '(none given)'}; known: "
                         f"{', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate: a method is given twice in {methods!r}")
    return names
