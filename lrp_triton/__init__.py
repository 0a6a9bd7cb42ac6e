"""lrp_triton: AttnLRP (attention-aware Layer-wise Relevance Propagation) with fused Triton kernels.

`apply(model)` makes one HuggingFace model instance propagate relevance (undoably);
`attribute(model, input_ids)` explains a logit (drivers in `lrp_triton.attribution`). Every rule
is listed in `lrp_triton.rules`; the attribution ops live in `lrp_triton.ops`, Triton kernels and
their plain-PyTorch twins in `lrp_triton.kernels`, one adapter per model family in
`lrp_triton.models`. Importing this package never imports triton and never needs CUDA: the kernels
are loaded the first time a Triton backend is used.
"""

from lrp_triton import ops
from lrp_triton.apply import LRPHandle, apply
from lrp_triton.attribute import attribute
from lrp_triton.attribution import Attribution, lrp_cosine_similarity, mean_pool
from lrp_triton.dataset import attribute_dataset
from lrp_triton.evaluation import evaluate
from lrp_triton.ops import lrp_activation, lrp_attention, lrp_glu, lrp_layer_norm, lrp_rms_norm

__version__ = "0.1.0"



def __getattr__(name):
    """`lrp_triton.demo` (the bundled demo model: DEMO_DIR, load()) without importing it up front."""
    if name == "demo":
        import importlib

        return importlib.import_module("lrp_triton.demo")
    raise AttributeError(f"module 'lrp_triton' has no attribute {name!r}")


__all__ = ["Attribution", "LRPHandle", "apply", "attribute", "attribute_dataset", "evaluate", "ops", "lrp_activation", "lrp_attention", "lrp_glu",
           "lrp_layer_norm", "lrp_rms_norm", "lrp_cosine_similarity", "mean_pool", "__version__"]
