"""SigLIP adapters (SiglipModel, SiglipForImageClassification; the towers SiglipVisionModel and
SiglipTextModel), see models.two_tower.

Layers as CLIP's (LayerNorm: std held constant; SiglipMLP with GELU-tanh: identity rule), with a
bidirectional text tower and no class embedding. The vision tower's post_layernorm feeds its
attention-pooling head (SiglipMultiheadAttentionPoolingHead): a learned probe attends over the
tokens through a torch.nn.MultiheadAttention (`LRPMultiheadAttention`: lrp_attention, so the
mode's attention rule), then a residual LayerNorm + MLP; the probe's output is the image embedding.
The text tower takes the last token's final-norm state (a selection) into its linear `head`. The
joint similarity adds logit_bias, which keeps its own share (`lrp_triton.attribution.contrastive`).
SiglipForImageClassification: the mean of all tokens (linear) into its classifier.
"""

from lrp_triton.models.base import layer_norm, plain_mlp_named
from lrp_triton.models.two_tower import contrastive_adapter, text_tower_adapter, vision_tower_adapter
from lrp_triton.modules.multihead_attention import LRPMultiheadAttention

REPLACEMENTS = {"LayerNorm": layer_norm, "SiglipMLP": plain_mlp_named("fc1", "activation_fn", "fc2"),
                "MultiheadAttention": LRPMultiheadAttention.from_hf}

VISION = vision_tower_adapter("SigLIP", "siglip_vision_model", REPLACEMENTS)
TEXT = text_tower_adapter("SigLIP", "siglip_text_model", REPLACEMENTS)
ADAPTER = contrastive_adapter("SigLIP", "siglip", REPLACEMENTS, logit_bias_attr="logit_bias")
ADAPTERS = (ADAPTER, VISION, TEXT)
