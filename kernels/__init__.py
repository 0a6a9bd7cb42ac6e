"""Triton kernels (installed as `lrp_triton.kernels`) and, beside each, its plain-PyTorch twin.

`*_torch.py` modules import torch only; the Triton modules import triton, so they are imported
lazily by `lrp_triton.ops` when a Triton backend is chosen. Set `TRITON_INTERPRET=1` before the
first Triton module is imported to run the kernels on the CPU (the test suite does this).
`buffers.py` (torch only) allocates every launcher's outputs; `attention_tiles.py` holds the
attention kernels' shared tile helpers; the rule constants come from `lrp_triton.rules`.
"""
