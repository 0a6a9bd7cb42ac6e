"""Length-bucketed batches: rows of similar length padded together, so padding costs little.

Rows are read `window` at a time; within a window they are sorted by (what is explained, length)
and cut into batches of at most `batch_size` rows and `max_tokens` padded tokens. A batch shares
one kind of target (the model's own prediction, or given ids) and of contrast (none, or given),
since `attribute` takes one form per call. Rows are right-padded with the tokenizer's pad id
(attention mask 0 there); `attribute` counts the explained position over each row's real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch


@dataclass
class Encoded:
    """One row ready to explain: its Row, token ids, and the target / contrast ids (or None)."""

    row: object
    ids: list[int]
    target: int | None
    contrast: int | None


def buckets(items: Iterable[Encoded], batch_size: int, window: int, max_tokens: int | None = None
            ) -> Iterator[list[Encoded]]:
    """Batches of similar length (module docstring), a window of rows at a time."""
    def cut(chunk: list[Encoded]):
        chunk.sort(key=lambda e: (e.target is None, e.contrast is None, len(e.ids)))
        batch: list[Encoded] = []
        for e in chunk:
            key = (e.target is None, e.contrast is None)
            longest = max([len(e.ids)] + [len(b.ids) for b in batch])
            full = len(batch) >= batch_size or (max_tokens is not None and batch and longest * (len(batch) + 1)
                                                > max_tokens)
            if batch and (full or (batch[0].target is None, batch[0].contrast is None) != key):
                yield batch
                batch = []
            batch.append(e)
        if batch:
            yield batch

    chunk: list[Encoded] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= window:
            yield from cut(chunk)
            chunk = []
    if chunk:
        yield from cut(chunk)


def padded(batch: list[Encoded], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, L], attention_mask [B, L] bool), right-padded with pad_id."""
    length = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.bool)
    for i, e in enumerate(batch):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        mask[i, :len(e.ids)] = True
    return ids.to(device), mask.to(device)
