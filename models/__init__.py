"""Architecture adapters (installed as `lrp_triton.models`), one module per model family."""
