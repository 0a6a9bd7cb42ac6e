"""CLIP adapters (CLIPModel, CLIPForImageClassification; the towers CLIPVisionModel(WithProjection)
and CLIPTextModel(WithProjection)), see models.two_tower.

Layers: pre-norm encoder layers (nn.LayerNorm: std held constant), CLIPMLP fc2(act(fc1(x))) with
QuickGELU (identity rule: g = g_y * sigmoid(1.702 x)), attention through the attention interface
(the text tower causal: it passes is_causal=True; the vision tower not). The vision tower's
pre_layrnorm and post_layernorm, and the text tower's final_layer_norm, are LayerNorms too. The
text tower pools the final-norm state at the end-of-text token (the largest id when
config.eos_token_id == 2, as HF keeps for old checkpoints; else the first eos_token_id): a
selection, no rule. The projections are linear (epsilon rule); the joint model's similarity:
`lrp_triton.attribution.contrastive`. CLIPForImageClassification: the mean of the patch tokens
(linear) into its classifier.
"""

from lrp_triton.models.base import layer_norm, plain_mlp_named
from lrp_triton.models.two_tower import contrastive_adapter, text_tower_adapter, vision_tower_adapter

REPLACEMENTS = {"LayerNorm": layer_norm, "CLIPMLP": plain_mlp_named("fc1", "activation_fn", "fc2")}

VISION = vision_tower_adapter("CLIP", "clip_vision_model", REPLACEMENTS)
TEXT = text_tower_adapter("CLIP", "clip_text_model", REPLACEMENTS)
ADAPTER = contrastive_adapter("CLIP", "clip", REPLACEMENTS)
ADAPTERS = (ADAPTER, VISION, TEXT)
