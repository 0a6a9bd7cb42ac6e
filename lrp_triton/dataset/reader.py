"""Rows of a data set file: JSON Lines, CSV, or a local HF `datasets` directory (save_to_disk).

Each data row becomes a `Row` (its 1-based line number in the file, or its index + 1 in a
`datasets` directory; its id; text; optional target and contrast) or, when it cannot be read, a
`BadRow` with the line number and the reason, so that one bad row never stops a run. Ids come from
the id column when there is one, else from the row's line number (stable across reruns of an
unchanged file), and must be unique.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text, the id, the target token and the contrast token."""

    text: str = "text"
    id: str = "id"
    target: str = "target"
    contrast: str = "contrast"


@dataclass(frozen=True)
class Row:
    line: int
    id: str
    text: str
    target: str | int | None = None
    contrast: str | int | None = None


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def data_format(path: Path) -> str:
    """"jsonl", "csv" or "datasets" (a directory), or a ValueError naming the accepted forms."""
    if path.is_dir():
        return "datasets"
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"--dataset {path}: unknown file type {path.suffix or '(none)'!r}; use .jsonl, .csv, or a "
                         "directory written by datasets' save_to_disk")
    return fmt


def _records(path: Path, fmt: str) -> Iterator[tuple[int, object]]:
    """(line, dict or an error string) per data row."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8", errors="replace") as f:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield line, f"not valid JSON ({exc.msg})"
                    continue
                yield line, record if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"
    elif fmt == "csv":
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            for record in reader:
                if None in record:
                    yield reader.line_num, "more fields than the header has"
                else:
                    yield reader.line_num, record
    else:
        try:
            import datasets
        except ImportError:
            raise ValueError(f"--dataset {path}: reading a datasets directory needs the datasets package; "
                             "install it with `pip install datasets`, or pass a .jsonl / .csv file") from None
        table = datasets.load_from_disk(str(path))
        if isinstance(table, datasets.DatasetDict):
            raise ValueError(f"--dataset {path}: a DatasetDict with splits {', '.join(table)}; pass one split's "
                             "directory")
        for i, record in enumerate(table, 1):
            yield i, dict(record)


def _token(value, column: str):
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"the {column!r} column holds {value!r}; give a token string or id:N")
    return value


def read_rows(path, columns: Columns = Columns()) -> Iterator[Row | BadRow]:
    """Every data row of `path` as a Row, or a BadRow (missing or empty text, duplicate id, ...)."""
    path = Path(path)
    seen: set[str] = set()
    for line, record in _records(path, data_format(path)):
        if isinstance(record, str):
            yield BadRow(line, record)
            continue
        text = record.get(columns.text)
        if not isinstance(text, str) or not text:
            yield BadRow(line, f"no {columns.text!r} column, or it is empty" if text in (None, "") else
                         f"the {columns.text!r} column holds a {type(text).__name__}, not text")
            continue
        raw_id = record.get(columns.id)
        row_id = str(line) if raw_id in (None, "") else str(raw_id)
        if row_id in seen:
            yield BadRow(line, f"duplicate id {row_id!r}")
            continue
        try:
            target, contrast = _token(record.get(columns.target), columns.target), \
                _token(record.get(columns.contrast), columns.contrast)
        except ValueError as exc:
            yield BadRow(line, str(exc))
            continue
        seen.add(row_id)
        yield Row(line, row_id, text, target, contrast)


def count_rows(path) -> int:
    """The number of data rows (for the progress bar's ETA), read cheaply (non-blank lines, CSV records)."""
    path = Path(path)
    fmt = data_format(path)
    if fmt == "jsonl":
        with path.open(encoding="utf-8", errors="replace") as f:
            return sum(1 for text in f if text.strip())
    return sum(1 for _ in _records(path, fmt))
