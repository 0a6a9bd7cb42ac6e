"""T5 / Flan-T5 adapter (encoder-decoder).

T5LayerNorm (RMS without centring): identity rule. Feed-forward: gated GELU-tanh (Flan-T5,
T5 v1.1: identity + uniform rules) or ReLU (T5 v1.0: identity rule). Attention: no 1/sqrt(d)
scale; the relative-position bias is computed inside the kernel from a per-offset vector
(LRPT5Attention), never as the [B, H, N, M] tensor transformers builds, and absorbs its share;
decoder self-attention is causal, cross-attention attends to the encoder's padding mask. The
tied-embedding output scaling d_model^-0.5 is linear (exact gradient), applied in `attribute`.
"""

from lrp_triton.models.base import Adapter, rms_norm
from lrp_triton.modules.mlp import LRPGatedMLP, LRPMLP
from lrp_triton.modules.t5_attention import LRPT5Attention

ADAPTER = Adapter(
    family="T5",
    model_types=("t5",),
    kind="seq2seq",
    replacements={
        "T5LayerNorm": rms_norm(),
        "T5DenseGatedActDense": lambda m, mode, backend: LRPGatedMLP.from_t5(m, mode=mode, backend=backend),
        "T5DenseActDense": lambda m, mode, backend: LRPMLP.from_t5(m, mode=mode, backend=backend),
    },
    attention_replacements={"T5Attention": lambda m, mode, backend: LRPT5Attention.from_hf(m)},
    layers_attr="encoder.block",
)
