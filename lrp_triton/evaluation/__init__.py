"""Faithfulness evaluation: `evaluate(model, tokenizer, rows)` compares attribution methods by
input perturbation, as in the AttnLRP paper (MoRF / LeRF curves, their areas, ABPC).

- `perturbation`: perturbed copies of one input as one batch (tokens replaced or deleted; patches
  zeroed, mean-filled or blurred).
- `curves`: step schedule, rankings, areas, normalisation, ABPC, standard errors.
- `scoring`: the explained score on the model as it is, per model kind, in batches.
- `methods`: attnlrp, cp-lrp, Input x Gradient, gradient, Integrated Gradients (batched), random.
- `report`: `EvaluationReport` (markdown, JSON, PNG of the curves); `run`: `evaluate` itself.
"""

from lrp_triton.evaluation.methods import DEFAULT_METHODS, METHODS
from lrp_triton.evaluation.report import EvaluationReport, MethodScores
from lrp_triton.evaluation.run import evaluate

__all__ = ["DEFAULT_METHODS", "METHODS", "EvaluationReport", "MethodScores", "evaluate"]
