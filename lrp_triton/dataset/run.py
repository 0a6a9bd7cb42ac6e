"""`lrp_triton.attribute_dataset`: explain every row of a data set, a length-bucketed batch at a time."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from lrp_triton.attribute import attribute
from lrp_triton.dataset.batching import Encoded, buckets, padded
from lrp_triton.dataset.reader import BadRow, Row
from lrp_triton.models import adapter_for


def as_row(item, index: int) -> Row | BadRow:
    """A Row from a Row / BadRow, a string (id: its 1-based index) or a dict with "text" (and optional
    "id", "target", "contrast")."""
    if isinstance(item, (Row, BadRow)):
        return item
    if isinstance(item, str):
        return Row(index + 1, str(index + 1), item) if item else BadRow(index + 1, "empty text")
    if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"]:
        row_id = item.get("id")
        return Row(index + 1, str(index + 1) if row_id in (None, "") else str(row_id), item["text"],
                   item.get("target"), item.get("contrast"))
    return BadRow(index + 1, f"not a text row: {item!r:.60}")


def token_id(tokenizer, value, what: str, vocab: int) -> int | None:
    """A target / contrast token: None, an int id, "id:N", or text that is exactly one token."""
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("id:") and value[3:].isdigit():
        value = int(value[3:])
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < vocab:
            raise ValueError(f"{what} id {value} is outside the vocabulary (0 to {vocab - 1})")
        return value
    if isinstance(value, str):
        for text in (value, " " + value):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1:
                return ids[0]
    raise ValueError(f"{what} {value!r} is not one token (pass one token's text, or id:N)")


def attribute_dataset(model, tokenizer, rows: Iterable, *, mode: str = "attnlrp", batch_size: int = 8,
                      window: int | None = None, max_tokens: int | None = None, skip_ids=frozenset(),
                      limit: int | None = None, on_error: Callable[[int, str], None] | None = None,
                      **attribute_kwargs) -> Iterator[dict]:
    """Explains each row's next token (a causal LM), yielding one record per example.

    Args:
        model, tokenizer: a supported causal LM and its tokenizer.
        rows: strings, dicts ({"text", optional "id", "target", "contrast"}) or `Row`s (see
            `lrp_triton.dataset.read_rows`); a `BadRow` (or an unreadable item) is reported, not explained.
        mode: "attnlrp", "cp-lrp" or "gradient". batch_size, window, max_tokens: batching (see
            `lrp_triton.dataset.batching`; window default 32 x batch_size).
        skip_ids: ids already explained (a resumed run). limit: only the first `limit` readable rows
            (those in skip_ids included, so that a resumed run covers the same rows).
        on_error: `on_error(line, reason)` for each row skipped (bad row, too long, not one token,
            an attribution error); default: raise nothing, skip silently.
        **attribute_kwargs: passed to `attribute` (backend, checkpoint, position, ...).

    Yields:
        dicts with id, line, tokens, token_ids, relevance (one float per token), target,
        target_token, logit, contrast, mode, model, version, in batch order.
    """
    from lrp_triton import __version__

    if adapter_for(model).kind != "causal_lm":
        raise NotImplementedError("attribute_dataset explains causal language models; use attribute() for others")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"attribute_dataset: batch_size={batch_size!r} must be an int >= 1")
    report = on_error or (lambda line, reason: None)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    vocab, limit_len = config.vocab_size, adapter_for(model).max_length(model.config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device = next(model.parameters()).device
    name = str(getattr(model, "name_or_path", "") or "")

    def encoded() -> Iterator[Encoded]:
        taken = 0
        for index, item in enumerate(rows):
            if limit is not None and taken >= limit:
                return
            row = as_row(item, index)
            if isinstance(row, BadRow):
                report(row.line, row.reason)
                continue
            taken += 1
            if row.id in skip_ids:
                continue
            try:
                ids = tokenizer(row.text)["input_ids"]
                if not ids:
                    raise ValueError("the text encodes to no tokens")
                if limit_len is not None and len(ids) > limit_len:
                    raise ValueError(f"{len(ids)} tokens, but the model takes at most {limit_len}")
                yield Encoded(row, ids, token_id(tokenizer, row.target, "target", vocab),
                              token_id(tokenizer, row.contrast, "contrast", vocab))
            except ValueError as exc:
                report(row.line, str(exc))

    def records(batch: list[Encoded]) -> list[dict]:
        ids, mask = padded(batch, pad, device)
        targets = None if batch[0].target is None else [e.target for e in batch]
        contrasts = None if batch[0].contrast is None else [e.contrast for e in batch]
        result = attribute(model, ids, attention_mask=mask, target=targets, contrast=contrasts, mode=mode,
                           **attribute_kwargs)
        out = []
        for i, e in enumerate(batch):
            n = len(e.ids)
            target = int(result.target[i])
            out.append({"id": e.row.id, "line": e.row.line, "tokens": tokenizer.convert_ids_to_tokens(e.ids),
                        "token_ids": list(e.ids), "relevance": result.relevance[i, :n].float().tolist(),
                        "target": target, "target_token": tokenizer.convert_ids_to_tokens([target])[0],
                        "logit": float(result.logit[i]), "contrast": e.contrast, "mode": mode, "model": name,
                        "version": __version__})
        return out

    for batch in buckets(encoded(), batch_size, window or 32 * batch_size, max_tokens):
        try:
            yield from records(batch)
        except (ValueError, TypeError, RuntimeError) as exc:
            if len(batch) == 1:
                report(batch[0].row.line, str(exc).removeprefix("attribute: "))
                continue
            for e in batch:  # find the rows that fail: each alone
                try:
                    yield from records([e])
                except (ValueError, TypeError, RuntimeError) as one:
                    report(e.row.line, str(one).removeprefix("attribute: "))
