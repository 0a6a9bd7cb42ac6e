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

    transformers 5.24's T5ForConditionalGeneration (and UMT5's) rescales iff the config's
    `scale_decoder_outputs` is set (T5Config / UMT5Config keep the checkpoint's tie_word_embeddings
    there and force tie_word_embeddings=True); earlier 5.x releases of T5 read `tie_word_embeddings`.
    mT5 is not decided here: MT5ForConditionalGeneration never rescales (models/mt5.py)."""
    scale = getattr(config, "scale_decoder_outputs", None)
    return bool(config.tie_word_embeddings if scale is None else scale)


def output_scale(config) -> float | None:
    return config.d_model ** -0.5 if scales_decoder_output(config) else None


def t5_like(family: str, model_types: tuple[str, ...], prefix: str, attention, scale) -> Adapter:
    """The adapter of T5's layout with HF class names `{prefix}LayerNorm`, `{prefix}Attention`, ...;
    `attention` builds the attention replacement, `scale` is the config -> output scale function."""
    return Adapter(
        family=family,
        model_types=model_types,
        kind="seq2seq",
        replacements={
            f"{prefix}LayerNorm": rms_norm(),
            f"{prefix}DenseGatedActDense": LRPGatedMLP.from_t5,
            f"{prefix}DenseActDense": plain_mlp_named("wi", "act", "wo"),
        },
        attention_replacements={f"{prefix}Attention": attention},
        layers_attrs=("encoder.block", "decoder.block"),
        output_scale=scale,
    )


ADAPTER = t5_like("T5", ("t5",), "T5", LRPT5Attention.from_hf, output_scale)
