"""ModernBERT adapter (ModernBertModel, ModernBertForMaskedLM, ModernBertForSequenceClassification).

- Embeddings: `norm(tok_embeddings(ids))`, no position or token-type table (positions enter as RoPE
  inside attention: linear in q and k, the epsilon rule = the exact gradient). The driver passes
  positions 0, 1, ..., N - 1 over the padded row, as the model numbers them itself (RoPE depends only
  on the offset between a query and a key, so padding on either side changes no score).
- Norms: LayerNorm with or without a bias (`norm_bias`), std held constant; layer 0's `attn_norm` is
  an identity.
- Attention: bidirectional, alternating global and local layers (`config.layer_types`); a local layer
  hands `sliding_window = local_attention // 2 + 1` to the attention function, and the kernel applies
  the symmetric band |i - j| < sliding_window (HF: |i - j| <= local_attention // 2) without an N x N
  mask. transformers 5 runs ModernBERT on padded batches only (no unpadded varlen path remains): the
  mask function hands the 2-D padding mask to the kernel, the window comes from the module.
- MLP (GeGLU): `Wo(act(input) * gate)` with `input, gate = Wi(x).chunk(2)`: identity rule on the
  activation, uniform rule on the product (CP-LRP: the activated half is a constant gate).
- Heads: `ModernBertPredictionHead`, norm(act(dense(x))) (identity rule on the activation), then the
  masked-LM `decoder` or the classifier (after "cls" pooling, h[:, 0], or "mean" pooling over the real
  tokens: linear with the token count held constant, the exact gradient).
"""

from __future__ import annotations

import torch

from lrp_triton.models.base import Adapter, TextEmbeddings, layer_norm
from lrp_triton.modules import LRPFusedGatedMLP, LRPLayerNorm, activation_name
from lrp_triton.modules.encoder import LRPHeadTransform, encoder_activation_name


def geglu_mlp(module, options):
    """ModernBertMLP -> Wo(act(input) * gate), (input, gate) the halves of Wi(x) (dropout: eval identity)."""
    return LRPFusedGatedMLP(module.Wi, module.Wo, activation_name(module.act), mode=options.mode,
                            backend=options.backend, taps=options.taps)


def prediction_head(module, options):
    """ModernBertPredictionHead -> norm(act(dense(x)))."""
    return LRPHeadTransform(module.dense, encoder_activation_name(module.act),
                            LRPLayerNorm.from_hf(module.norm, options), backend=options.backend)


def text_embeddings(model) -> TextEmbeddings:
    return TextEmbeddings(word=Adapter.base_model(model).embeddings.tok_embeddings)


def row_positions(config, attention_mask: torch.Tensor) -> torch.Tensor:
    """0 .. N - 1 on every row, padding included: the model's own default numbering."""
    n = attention_mask.shape[-1]
    return torch.arange(n, device=attention_mask.device).expand(attention_mask.shape[0], n)


ADAPTER = Adapter(
    family="ModernBERT",
    model_types=("modernbert",),
    replacements={
        "LayerNorm": layer_norm,
        "ModernBertMLP": geglu_mlp,
        "ModernBertPredictionHead": prediction_head,
    },
    kind="encoder",
    layers_attrs=("layers",),
    position_ids=row_positions,
    embeddings_of=text_embeddings,
)
