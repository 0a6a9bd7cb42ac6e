"""T5 / Flan-T5 adapter (encoder-decoder).

T5LayerNorm (RMS without centring): identity rule. Feed-forward: gated GELU-tanh (Flan-T5,
T5 v1.1: identity + uniform rules) or ReLU (T5 v1.0: identity rule). Attention: no 1/sqrt(d)
scale; the relative-position bias is computed inside the kernel from a per-offset vector
(LRPT5Attention), never as the [B, H, N, M] tensor transformers builds, and absorbs its share;
decoder self-attention is causal, cross-attention attends to the encoder's padding mask. The
tied-embedding output scaling d_model^-0.5 is linear (exact gradient): `output_scale`.
"""

from lrp_triton.models.base import Adapter, plain_mlp_named, rms_norm
from lrp_triton.modules.mlp import LRPGatedMLP
from lrp_triton.modules.t5_attention import LRPT5Attention


def scales_decoder_output(config) -> bool:
    """Whether T5 multiplies the decoder output by d_model^-0.5 before lm_head.

    transformers >= 5.2x says so in `scale_decoder_outputs`; earlier releases tie it to
    `tie_word_embeddings`."""
    scale = getattr(config, "scale_decoder_outputs", None)
    return bool(config.tie_word_embeddings if scale is None else scale)


def output_scale(config) -> float | None:
    return config.d_model ** -0.5 if scales_decoder_output(config) else None


ADAPTER = Adapter(
    family="T5",
    model_types=("t5",),
    kind="seq2seq",
    replacements={
        "T5LayerNorm": rms_norm(),
        "T5DenseGatedActDense": LRPGatedMLP.from_t5,
        "T5DenseActDense": plain_mlp_named("wi", "act", "wo"),
    },
    attention_replacements={"T5Attention": LRPT5Attention.from_hf},
    layers_attrs=("encoder.block", "decoder.block"),
    output_scale=output_scale,
)
