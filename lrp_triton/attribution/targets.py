"""What is explained: positions, target and contrast ids, and the explained scores.

Scores come out as [B, P] (or [P] for a score of the whole batch): one backward pass per column.
A target entry of -1 stands for "the model's own prediction", filled in from the logits.

Values taken: a target / contrast id is a Python int (or numpy integer), an integer tensor or array
(any integer dtype), or a list of ints (one per batch row); with several positions, a list (or a
tensor whose first dimension is the positions) of one such entry per position, None for "the
prediction" there (targets only). float, bool, str and None inside a per-row list are refused
(TypeError naming the argument and what is taken). A callable target's scores must be a float
tensor [B] or 0-d. An explained score that is NaN or inf is a ValueError naming the rows (its
relevance would be NaN).
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple

import torch

from lrp_triton.attribution.inputs import is_integer_dtype

TOKEN_IDS = "a token id (int), an integer tensor, or a list of ints (one per batch row)"
CLASS_IDS = ("a class index (int), an integer tensor, a list of ints (one per batch row), or a callable "
             "target(outputs) -> scores")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor) or hasattr(x, "__array__"):
        return f"a {getattr(x, 'dtype', type(x).__name__)} tensor"
    return f"{type(x).__name__} {x!r}"


def _refuse_value(name: str, accepted: str, x) -> None:
    if callable(x):
        raise TypeError(f"attribute: {name} must be {accepted}, got a callable; callable targets are taken by "
                        "encoder and vision models (a language model explains token ids)")
    hint = ""
    if isinstance(x, str):
        hint = " (token strings are not looked up here: pass tokenizer.convert_tokens_to_ids(...))"
    elif isinstance(x, bool) or getattr(x, "dtype", None) == torch.bool:
        hint = " (a bool is not an id)"
    elif isinstance(x, float):
        hint = " (ids are integers; a float is never rounded)"
    raise TypeError(f"attribute: {name} must be {accepted}, got {_describe(x)}{hint}")


def _leaves(entry, name: str, accepted: str) -> list[int]:
    """The ints of a (nested) list of ints / integer 0-d tensors; anything else refused."""
    out = []
    for x in entry:
        if isinstance(x, (list, tuple)):
            out.extend(_leaves(x, name, accepted))
        elif isinstance(x, torch.Tensor) and is_integer_dtype(x.dtype) and x.numel() == 1:
            out.append(int(x))
        elif isinstance(x, numbers.Integral) and not isinstance(x, bool):
            out.append(int(x))
        elif x is None:
            raise TypeError(f"attribute: {name} has None inside a list of ids per row; None (the model's own "
                            "prediction) is taken only as the whole argument or as a whole entry per position")
        else:
            _refuse_value(name, accepted, x)
    return out


def as_ids(entry, name: str, accepted: str, device) -> torch.Tensor:
    """One entry (an int, an integer tensor / array, or a list of ints) as a flat int64 tensor."""
    if isinstance(entry, (list, tuple)):
        return torch.tensor(_leaves(entry, name, accepted), dtype=torch.long, device=device)
    if isinstance(entry, torch.Tensor) or (hasattr(entry, "__array__") and not isinstance(entry, (str, bytes))):
        t = torch.as_tensor(entry)
        if not is_integer_dtype(t.dtype):
            _refuse_value(name, accepted, t)
        return t.to(device=device, dtype=torch.long).flatten()
    return torch.tensor(_leaves([entry], name, accepted), dtype=torch.long, device=device)


def _position_index(p) -> int | None:
    if isinstance(p, torch.Tensor):
        return int(p) if p.dim() == 0 and is_integer_dtype(p.dtype) else None
    return int(p) if isinstance(p, numbers.Integral) and not isinstance(p, bool) else None


def explained_positions(position, attention_mask: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """[B, P] indices into the padded sequence (positions count over each row's real tokens), and
    whether several positions were asked for (a list) rather than one."""
    several = isinstance(position, (list, tuple))
    positions = [_position_index(p) for p in (list(position) if several else [position])]
    if not positions or any(p is None for p in positions):
        raise TypeError(f"attribute: position must be an int or a non-empty list of ints (bool and float "
                        f"are refused), got {position!r}")
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
    if several and not (isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) >= 1):  # tensor / array
        raise TypeError(f"attribute: with several positions, {name} must be a list with one entry per position "
                        f"({n_positions}), e.g. [{name}] * {n_positions}; got {_describe(value)}")
    entries = list(value) if several else [value]
    if several and len(entries) != n_positions:
        raise ValueError(f"attribute: {name} must have one entry per position ({n_positions}), got {len(entries)}")
    out = torch.full((batch, n_positions), -1, dtype=torch.long, device=positions.device)
    for j, entry in enumerate(entries):
        if entry is None:
            if complete:
                raise ValueError(f"attribute: {name} must give an id for every position (None only as a whole)")
            continue
        ids = as_ids(entry, name, TOKEN_IDS + (", one entry per position" if several else ""), positions.device)
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
    ids = as_ids(target, "target", CLASS_IDS, device)
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
    if targets is not None:  # the head may sit on another device than the inputs (a dispatched model)
        targets = targets.to(logits.device)
    if contrasts is not None:
        contrasts = contrasts.to(logits.device)
    targets = predicted if targets is None else torch.where(targets < 0, predicted, targets)
    scores = logits.gather(-1, targets[..., None])[..., 0]
    if contrasts is not None:
        scores = scores - logits.gather(-1, contrasts[..., None])[..., 0]
    check_finite_scores(scores, "the explained score (target logit" + (" minus contrast logit)" if contrasts
                                                                         is not None else ")"))
    return scores, targets


def check_finite_scores(scores: torch.Tensor, what: str) -> None:
    """A ValueError naming the rows where an explained score is NaN or inf: relevance would be NaN."""
    bad = ~torch.isfinite(scores.detach())
    if not bad.any():
        return
    where = "" if bad.dim() == 0 else f" in row(s) {bad.reshape(bad.shape[0], -1).any(-1).nonzero().flatten().tolist()}"
    raise ValueError(f"attribute: {what} is NaN or inf{where}, so its relevance would be NaN; the model's outputs "
                     "are not finite there: check the weights and inputs (float16 overflow? try float32)")


def check_finite_relevance(fields: dict, score: int | None = None) -> None:
    """A ValueError naming the field and rows where relevance read after a backward pass is NaN or inf.

    `fields` is one backward pass's dict of relevance tensors [B, ...] (None and non-tensor entries,
    e.g. latent records, are skipped). A finite score can still give NaN relevance: a NaN or inf weight
    anywhere on the backward path multiplies a zero gradient into NaN (0 * NaN), and float16 can
    overflow. Call it on each pass's fields (`core.one_backward_per_score`, after `read()`).
    """
    for name, value in fields.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        bad = ~torch.isfinite(value)
        if bad.any():
            rows = bad.reshape(bad.shape[0], -1).any(-1).nonzero().flatten().tolist()
            which = "" if score is None else f" of explained score {score}"
            raise ValueError(f"attribute: {name}{which} is NaN or inf in row(s) {rows} although the explained "
                             "score is finite: the backward pass met a NaN or inf weight or overflowed (float16? "
                             "try float32); check the model's parameters with torch.isfinite")


def _batch_of(outputs, attention_mask) -> int | None:
    """The batch size of a forward: the mask's rows, else the first tensor of the outputs."""
    if attention_mask is not None:
        return attention_mask.shape[0]
    values = outputs.values() if hasattr(outputs, "values") else outputs if isinstance(outputs, tuple) else ()
    first = next((v for v in values if isinstance(v, torch.Tensor) and v.dim() > 0), None)
    return None if first is None else first.shape[0]


class HeadScores(NamedTuple):
    scores: torch.Tensor  # [B, P]; [1] / [B, 1] for a callable target's score
    targets: torch.Tensor | None  # [B, P] (token-level heads; classification: [B, 1]); None: callable target
    positions: torch.Tensor | None  # [B, P] for token-level heads, else None
    several: bool
    vector: bool = False  # the targets index an embedding's dimensions (a tower without logits)


def output_scores(outputs, target: int | torch.Tensor | Callable | None, position, attention_mask,
                  model_name: str, vector_outputs: tuple[str, ...] = ()) -> HeadScores:
    """The explained scores of a whole-model forward (encoders, vision): a callable target's scores,
    a classification logit ([B, C] logits), or a token-level head's logit at `position` ([B, N, V]).
    A model without logits explains a dimension of the first of `vector_outputs` it returns (an
    embedding tower's [B, E] embedding; default: the largest dimension), like a class logit."""
    if callable(target):
        scores = target(outputs)
        if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
            raise TypeError("attribute: a callable target must return a float tensor of scores")
        batch = _batch_of(outputs, attention_mask)
        if scores.dim() > 1 or (scores.dim() == 1 and batch is not None and scores.shape[0] != batch):
            raise ValueError(f"attribute: a callable target must return one score per row, shape "
                             f"[{batch if batch is not None else 'batch'}], or a 0-d score of the whole batch; "
                             f"got shape {tuple(scores.shape)} (reduce it, e.g. out.logits[:, k])")
        if not scores.requires_grad:
            raise ValueError("attribute: the callable target's scores do not depend on the input")
        check_finite_scores(scores, "the callable target's score")
        return HeadScores(scores[..., None], None, None, False)  # one explained score (set) per backward
    logits = getattr(outputs, "logits", None)
    if logits is None:
        vector = next((v for v in (getattr(outputs, name, None) for name in vector_outputs)
                       if isinstance(v, torch.Tensor) and v.dim() == 2), None)
        if vector is not None:
            if position is not None:
                raise ValueError("attribute: position is for token-level heads; this model returns one embedding "
                                 "per row (target: a dimension of it, or a callable)")
            targets = class_targets(target, vector.shape[0], vector.shape[-1], vector.device)
            scores, targets = logit_scores(vector[:, None], targets)
            return HeadScores(scores, targets, None, False, vector=True)
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
        selected = logits[rows, positions.to(logits.device)]  # [B, P, V]
        targets = ids_per_position(target, "target", positions, several, logits.shape[-1])
        scores, targets = logit_scores(selected, targets)
        return HeadScores(scores, targets, positions, several)
    raise TypeError(f"attribute: cannot tell what to explain in logits of shape "
                    f"{tuple(logits.shape)}; pass a callable target")
