"""`Attribution`: what `lrp_triton.attribute` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Attribution:
    """Relevance of the inputs (and optionally of latent units) for explained logits.

    With one explained position, per-position fields have shape [B]; with P positions, [B, P],
    and `relevance` has shape [B, P, N] instead of [B, N].

    Attributes:
        relevance: float32 [B, N], token relevance at the input (token) embeddings, summed over
            the hidden dimension; 0 at padding.
        target: explained token id per row (and position).
        logit: the explained score (the target logit, minus the contrast logit if given).
        position: index into the (padded) sequence of each explained position.
        contrast: contrast token id, or None.
        position_relevance: relevance of learned position embeddings (GPT-2), like `relevance`.
        latent: with `latent=True`, lists over layers: "residual" [B, N] (the residual stream
            entering each layer), "heads" [B, H] (each attention head's output), "neurons"
            [B, intermediate] (each MLP neuron, summed over positions); a P axis after B for
            several positions.
        input_ids, attention_mask: the inputs explained (input_ids None for embeddings input).
        mode: "attnlrp", "cp-lrp" or "gradient". model_type: the model's config.model_type.
    """

    relevance: torch.Tensor
    target: torch.Tensor
    logit: torch.Tensor
    position: torch.Tensor
    contrast: torch.Tensor | None = None
    position_relevance: torch.Tensor | None = None
    latent: dict | None = None
    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    mode: str = "attnlrp"
    model_type: str = ""
    extras: dict = field(default_factory=dict)

    def conservation(self) -> torch.Tensor:
        """sum(relevance) / explained score per row (and position): a diagnostic, not a law."""
        return self.relevance.sum(-1) / self.logit
