"""The bundled demo model: a tiny Llama trained on key-value retrieval (see `lrp_triton.demo.task`).

The model files (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) live in
this package's own directory, so `AutoModelForCausalLM.from_pretrained(DEMO_DIR)` and
`AutoTokenizer.from_pretrained(DEMO_DIR)` load it without any download. It was written by
`scripts/train_demo_model.py` (seeded; `training.json` here records the run).
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_NAME = "lrp_triton/demo"  # how the CLI and the outputs name the bundled model
DEMO_PROMPT = "a=7 k=3 x=9 q=1 m=4 ?k"


def load(device="cpu", dtype=None):
    """(model, tokenizer) of the demo model, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(DEMO_DIR, dtype=dtype or torch.float32).to(device).eval()
    model.name_or_path = DEMO_NAME  # how outputs name it, rather than this directory's path
    return model, AutoTokenizer.from_pretrained(DEMO_DIR)
