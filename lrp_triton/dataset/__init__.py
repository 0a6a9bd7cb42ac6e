"""Whole data sets: `attribute_dataset(model, tokenizer, rows)` and `lrp-triton explain --dataset FILE`.

- `reader`: rows of JSON Lines, CSV or a local `datasets` directory; bad rows with their line number.
- `batching`: length-bucketed, padded batches. `run`: `attribute_dataset` itself.
- `writer`: JSON Lines and Parquet outputs, written incrementally and resumable.
- `progress`: examples per second and ETA on stderr. `shards`: torchrun / accelerate sharding.
- `cli`: the `explain --dataset` command.
"""

from lrp_triton.dataset.reader import BadRow, Columns, Row, read_rows
from lrp_triton.dataset.run import attribute_dataset
from lrp_triton.dataset.writer import read_records

__all__ = ["BadRow", "Columns", "Row", "attribute_dataset", "read_records", "read_rows"]
