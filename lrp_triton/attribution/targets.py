"""What is explained: positions, target and contrast ids, and the explained scores.

Scores come out as [B, P] (or [P] for a score of the whole batch): one backward pass per column.
A target entry of -1 stands for "the model's own prediction", filled in from the logits.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch


def explained_positions(position, attention_mask: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """[B, P] indices into the padded sequence (positions count over each row's real tokens), and
    whether several positions were asked for (a list) rather than one."""
    several = isinstance(position, (list, tuple))
    positions = list(position) if several else [position]
    if not positions or not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise TypeError(f"attribute: position must be an int or a list of ints, got {position!r}")
    batch = attention_mask.shape[0]
    out = torch.empty(batch, len(positions), dtype=torch.long, device=attention_mask.device)
    for b in range(batch):
        real = attention_mask[b].nonzero().flatten()
        for j, p in enumerate(positions):
            if not -len(real) <= p < len(real):
                raise IndexError(f"attribute: position {p} is out of range for row {b}, which has "
                                 f"{len(real)} tokens")
            out[b, j] = real[p]
    return out, several


def ids_per_position(value, name: str, positions: torch.Tensor, several: bool, vocab: int,
                     complete: bool = False) -> torch.Tensor | None:
    """Token ids as [B, P] (-1 where an entry is None: the prediction is used), or None.

    One entry per position when `several`; each entry a single id or one per row. `complete`:
    every entry must be given (contrasts).
    """
    if value is None:
        return None
    batch, n_positions = positions.shape
    entries = list(value) if several else [value]
    if several and len(entries) != n_positions:
        raise ValueError(f"attribute: {name} must have one entry per position ({n_positions}), got {len(entries)}")
    out = torch.full((batch, n_positions), -1, dtype=torch.long, device=positions.device)
    for j, entry in enumerate(entries):
        if entry is None:
            if complete:
                raise ValueError(f"attribute: {name} must give an id for every position (None only as a whole)")
            continue
        ids = torch.as_tensor(entry, device=positions.device).long().flatten()
        if ids.numel() not in (1, batch):
            raise ValueError(f"attribute: {name} must be a token id or one id per batch row ({batch}), "
                             f"got {ids.numel()} values")
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"attribute: {name} id {ids.tolist()} is outside the vocabulary [0, {vocab})")
        out[:, j] = ids.expand(batch)
    return out


def class_targets(target, batch: int, n_classes: int, device) -> torch.Tensor:
    """[B, 1] class ids of a classification head, -1 where the prediction is to be filled in."""
    if target is None:
        return torch.full((batch, 1), -1, dtype=torch.long, device=device)
    ids = torch.as_tensor(target, device=device).long().flatten()
    if ids.numel() not in (1, batch):
        raise ValueError(f"attribute: target must be a class index or one per batch row ({batch}), got "
                         f"{ids.numel()} values")
    if ids.min() < 0 or ids.max() >= n_classes:
        raise ValueError(f"attribute: target {ids.tolist()} is outside the classes [0, {n_classes})")
    return ids.expand(batch).clone()[:, None]


def logit_scores(logits: torch.Tensor, targets: torch.Tensor | None,
                 contrasts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, P, V] -> (scores [B, P], targets [B, P]): the target logit (the predicted token where
    the target is missing or -1), minus the contrast logit when contrasts are given."""
    predicted = logits.detach().argmax(-1)
    targets = predicted if targets is None else torch.where(targets < 0, predicted, targets)
    scores = logits.gather(-1, targets[..., None])[..., 0]
    if contrasts is not None:
        scores = scores - logits.gather(-1, contrasts[..., None])[..., 0]
    return scores, targets


class HeadScores(NamedTuple):
    scores: torch.Tensor  # [B, P]; [1] / [B, 1] for a callable target's score
    targets: torch.Tensor | None  # [B, P] (token-level heads; classification: [B, 1]); None: callable target
    positions: torch.Tensor | None  # [B, P] for token-level heads, else None
    several: bool


def output_scores(outputs, target: int | torch.Tensor | Callable | None, position, attention_mask,
                  model_name: str) -> HeadScores:
    """The explained scores of a whole-model forward (encoders, vision): a callable target's scores,
    a classification logit ([B, C] logits), or a token-level head's logit at `position` ([B, N, V])."""
    if callable(target):
        scores = target(outputs)
        if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
            raise TypeError("attribute: a callable target must return a float tensor of scores")
        if not scores.requires_grad:
            raise ValueError("attribute: the callable target's scores do not depend on the input")
        return HeadScores(scores[..., None], None, None, False)  # one explained score (set) per backward
    logits = getattr(outputs, "logits", None)
    if logits is None:
        raise TypeError(f"attribute: {model_name} returns no logits; pass a callable "
                        "target, e.g. target=lambda out: out.last_hidden_state[:, 0, 5]")
    if logits.dim() == 2:
        if position is not None:
            raise ValueError("attribute: position is for token-level heads; this model returns "
                             "one logit vector per row")
        targets = class_targets(target, logits.shape[0], logits.shape[-1], logits.device)
        scores, targets = logit_scores(logits[:, None], targets)
        return HeadScores(scores, targets, None, False)
    if logits.dim() == 3 and attention_mask is not None:
        if position is None:
            raise ValueError("attribute: a token-level head (masked LM, token classification) "
                             "needs the explained position")
        positions, several = explained_positions(position, attention_mask)
        rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
        selected = logits[rows, positions]  # [B, P, V]
        targets = ids_per_position(target, "target", positions, several, logits.shape[-1])
        scores, targets = logit_scores(selected, targets)
        return HeadScores(scores, targets, positions, several)
    raise TypeError(f"attribute: cannot tell what to explain in logits of shape "
                    f"{tuple(logits.shape)}; pass a callable target")
