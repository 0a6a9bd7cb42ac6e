"""Many targets, one backward: explain K positions of a Llama-shaped model, timed against K passes.

`lrp_triton.attribute(model, ids, position=[...])` explains K scores from one forward pass, and runs
their backward together: one pass under torch.func.vmap over the K cotangents, at most
`lrp_triton.attribution.core.SCORES_PER_BACKWARD` (16) at a time. Setting it to 1 gives one
backward pass per score, the route before; both give the same relevance. This script times whole
`attribute` calls both ways on random weights (hidden 256, 4 layers, N = 512, one thread; ABBA
order, median of 6 after a warm-up) for the CPU default (backend "auto": SDPA attention) and the
PyTorch twin (backend "torch", whose attention backward shares P across the K streams):

    python examples/many_targets.py
"""

import statistics
import time

import torch
import transformers

import lrp_triton
from lrp_triton.attribution import core


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = transformers.LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                      max_position_embeddings=1024)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 512))
    for backend in ("auto", "torch"):
        for k in (1, 4, 16):
            times = {16: [], 1: []}
            for chunk in [c for rep in range(7) for c in ((16, 1) if rep % 2 else (1, 16))]:
                core.SCORES_PER_BACKWARD, start = chunk, time.perf_counter()
                relevance = lrp_triton.attribute(model, ids, position=list(range(-k, 0)), backend=backend).relevance
                times[chunk].append(time.perf_counter() - start)
            batched, separate = (statistics.median(t[1:]) for t in times.values())
            print(f"backend={backend} K={k}: one batched backward {batched:.2f} s, {k} backward passes "
                  f"{separate:.2f} s, ratio {batched / separate:.2f}  (relevance {tuple(relevance.shape)})")
    core.SCORES_PER_BACKWARD = 16


if __name__ == "__main__":
    main()
