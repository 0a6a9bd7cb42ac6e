"""Result files written as the work goes, and read back to resume: JSON Lines and Parquet.

Both keep the set of ids they already hold (`done`), so that a rerun skips them and writes each
example once:

- JSON Lines (`.jsonl`): one record per line, appended, flushed and fsynced after each batch. A
  crash can leave at most a partial last line; opening the file again cuts it off (that example
  is then explained again), so no record is lost or duplicated.
- Parquet (`.parquet`): a directory of part files `part-NNNNN.parquet` (one Parquet data set;
  `pyarrow.parquet.read_table(dir)` reads it whole). Each part is written to a temporary name and
  renamed into place, so a part is either complete or absent; records not yet in a part when the
  run stops are explained again by the rerun. Needs pyarrow (`pip install 'lrp_triton[parquet]'`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SCHEMA_FIELDS = ("id", "line", "tokens", "token_ids", "relevance", "target", "target_token", "logit", "contrast",
                 "mode", "model", "version")


class JsonlOutput:
    """Appends records to a JSON Lines file; `done` holds the ids already in it."""

    def __init__(self, path):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.exists():
            self._recover()
        self.file = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        """Reads the ids written so far and cuts off a partial last line left by a crash."""
        good = 0
        with self.path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    self.done.add(str(json.loads(raw)["id"]))
                except (ValueError, KeyError, TypeError):
                    break
                good += len(raw)
        if good != self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good)

    def write(self, records: list[dict]) -> None:
        new = [r for r in records if r["id"] not in self.done]
        if not new:
            return
        self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.done.update(r["id"] for r in new)

    def close(self) -> None:
        self.file.close()


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("Parquet output needs pyarrow; install it with `pip install pyarrow` (or "
                          "`pip install 'lrp_triton[parquet]'`)") from None
    return pyarrow


class ParquetOutput:
    """Writes records as Parquet part files in a directory, `rows_per_part` at a time."""

    def __init__(self, path, rows_per_part: int = 256):
        self.pa = _pyarrow()
        self.path, self.rows_per_part = Path(path), rows_per_part
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path}: Parquet output is a directory of part files, and this is a file")
        self.path.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        self.pending: list[dict] = []
        for stale in self.path.glob("*.tmp"):
            stale.unlink()
        self.parts = sorted(self.path.glob("part-*.parquet"))
        for part in self.parts:
            self.done.update(self.pa.parquet.read_table(part, columns=["id"]).column("id").to_pylist())

    def write(self, records: list[dict]) -> None:
        held = {r["id"] for r in self.pending}
        self.pending += [r for r in records if r["id"] not in self.done and r["id"] not in held]
        if len(self.pending) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pa = self.pa
        schema = pa.schema([("id", pa.string()), ("line", pa.int64()), ("tokens", pa.list_(pa.string())),
                            ("token_ids", pa.list_(pa.int64())), ("relevance", pa.list_(pa.float32())),
                            ("target", pa.int64()), ("target_token", pa.string()), ("logit", pa.float64()),
                            ("contrast", pa.int64()), ("mode", pa.string()), ("model", pa.string()),
                            ("version", pa.string())])
        table = pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA_FIELDS} for r in self.pending], schema=schema)
        index = int(self.parts[-1].stem.split("-")[1]) + 1 if self.parts else 0
        final = self.path / f"part-{index:05d}.parquet"
        tmp = final.with_suffix(".tmp")
        pa.parquet.write_table(table, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self.parts.append(final)
        self.done.update(r["id"] for r in self.pending)
        self.pending = []

    def close(self) -> None:
        self.flush()


def open_output(path, rows_per_part: int = 256):
    """A JsonlOutput (.jsonl) or ParquetOutput (.parquet) for `path`; a ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return JsonlOutput(path)
    if suffix == ".parquet":
        return ParquetOutput(path, rows_per_part)
    raise ValueError(f"--out {path}: with --dataset the output is .jsonl or .parquet")


def read_records(path) -> list[dict]:
    """Every record of a .jsonl file or a .parquet part directory (for checks and merging)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        pa = _pyarrow()
        parts = sorted(path.glob("part-*.parquet"))
        return [r for part in parts for r in pa.parquet.read_table(part).to_pylist()]
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
