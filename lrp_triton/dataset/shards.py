"""Sharding a data-set run over the processes of `torchrun` / `accelerate launch` (torch.distributed).

Each process reads RANK, WORLD_SIZE and LOCAL_RANK from the environment (set by either launcher),
joins the process group (NCCL on CUDA, gloo on CPU) and takes the rows whose id hashes to its rank
(crc32(id) mod WORLD_SIZE: stable across runs and machines). It writes its own part file next to
each output (`results.rank1of2.jsonl`); at the end, after a barrier, rank 0 merges the parts into
the output (in data-set line order, skipping ids it already holds) and removes them. A rerun
skips ids found in a rank's part or in the merged output, so a crash at any point loses nothing.
One process (no launcher) is world 1: no group, no parts.
"""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from lrp_triton.dataset.reader import BadRow


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Shard":
        """This process's shard; joins the default process group when WORLD_SIZE > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def owns(self, row_id: str) -> bool:
        return zlib.crc32(row_id.encode("utf-8")) % self.world == self.rank

    def select(self, rows: Iterable) -> Iterator:
        """This shard's rows (BadRows pass through, to be reported)."""
        for row in rows:
            if isinstance(row, BadRow) or self.owns(row.id):
                yield row

    def part(self, out) -> Path:
        """Where this rank writes `out` (out itself in a single process)."""
        path = Path(out)
        return path if self.world == 1 else self.part_of(path, self.rank)

    def part_of(self, path: Path, rank: int) -> Path:
        return path.with_name(f"{path.stem}.rank{rank}of{self.world}{path.suffix}")

    def finish(self, outs: list) -> None:
        """After every rank is done: rank 0 merges the parts into the outputs (see the module docstring)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        from lrp_triton.dataset.writer import open_output, read_records

        dist.barrier()
        if self.rank == 0:
            for out in outs:
                final = open_output(out)
                parts = [self.part_of(Path(out), r) for r in range(self.world)]
                records = [rec for p in parts if p.exists() for rec in read_records(p)]
                final.write(sorted(records, key=lambda rec: rec["line"]))
                final.close()
                for p in parts:
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.exists():
                        p.unlink()
        dist.barrier()
        dist.destroy_process_group()


def merged_ids(out) -> set[str]:
    """Ids already in a merged output (empty when it does not exist yet)."""
    from lrp_triton.dataset.writer import read_records

    path = Path(out)
    if not path.exists():
        return set()
    return {str(rec["id"]) for rec in read_records(path)}
