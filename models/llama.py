"""Llama 2 and 3 adapter.

RMSNorm: identity rule. Gated SiLU MLP: identity + uniform rules. Attention (GQA, RoPE including
Llama 3 scaling, which is linear in q and k and keeps its exact gradient) runs in the kernel.
"""

from lrp_triton.models.base import Adapter, gated_mlp, rms_norm

ADAPTER = Adapter(
    family="Llama",
    model_types=("llama",),
    replacements={"LlamaRMSNorm": rms_norm(), "LlamaMLP": gated_mlp},
)
