"""The one output-buffer helper of every kernel launcher and PyTorch twin.

Each launcher allocates its outputs through `buffers.new_output` (looked up on this module at call
time), so a test can replace it with a NaN-filled allocator and catch any element a kernel fails
to write.
"""

from __future__ import annotations

import torch


def new_output(shape, dtype, device) -> torch.Tensor:
    """An uninitialised output buffer (tests fill it with NaN to catch gaps)."""
    return torch.empty(shape, dtype=dtype, device=device)
