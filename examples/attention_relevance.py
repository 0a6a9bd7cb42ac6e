"""AttnLRP through one attention layer: which keys drove the output of the last query?

Draws random queries, keys and values, runs `lrp_triton.ops.lrp_attention` (exact attention
forward, AttnLRP backward) and prints the relevance of every key position as a terminal heatmap.
Runs on the CPU (PyTorch backend) or, with a GPU, on the Triton kernels.
"""

import torch

from lrp_triton.ops import lrp_attention


def bar(value: float, largest: float, width: int = 30) -> str:
    n = round(width * abs(value) / largest) if largest > 0 else 0
    return ("+" if value >= 0 else "-") * n


def main() -> None:
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch, heads, kv_heads, seq, head_dim = 1, 8, 2, 12, 64
    q = torch.randn(batch, heads, seq, head_dim, device=device, requires_grad=True)
    k = torch.randn(batch, kv_heads, seq, head_dim, device=device, requires_grad=True)
    v = torch.randn(batch, kv_heads, seq, head_dim, device=device, requires_grad=True)

    out = lrp_attention(q, k, v, causal=True, mode="attnlrp")
    explained = out[:, :, -1].sum()  # explain the summed output of the last query position
    explained.backward()

    key_rel = (k * k.grad).sum(dim=(0, 1, 3)) + (v * v.grad).sum(dim=(0, 1, 3))
    query_rel = (q * q.grad).sum(dim=(0, 1, 3))
    total = key_rel.sum() + query_rel.sum()
    print(f"explained output: {explained.item():+.4f}   relevance in q, k, v: {total.item():+.4f}")
    print("position  key+value relevance")
    largest = key_rel.abs().max().item()
    for pos, r in enumerate(key_rel.tolist()):
        print(f"{pos:8d}  {r:+9.4f}  {bar(r, largest)}")


if __name__ == "__main__":
    main()
