"""lrp_triton: AttnLRP (attention-aware Layer-wise Relevance Propagation) with fused Triton kernels.

The attribution ops live in `lrp_triton.ops`; Triton kernels and their plain-PyTorch twins in
`lrp_triton.kernels`. Importing this package never imports triton and never needs CUDA: the
kernels are loaded the first time a Triton backend is used.
"""

from lrp_triton import ops
from lrp_triton.ops import lrp_attention

__version__ = "0.1.0"

__all__ = ["ops", "lrp_attention", "__version__"]
