"""Autograd ops whose forward is the usual computation and whose backward is an LRP rule."""

from lrp_triton.ops.attention import ATTENTION_MODES, lrp_attention
from lrp_triton.ops.disentangled_attention import lrp_disentangled_attention
from lrp_triton.ops.mlp import ACTIVATIONS, lrp_activation, lrp_glu
from lrp_triton.ops.norms import lrp_layer_norm, lrp_rms_norm
from lrp_triton.ops.sdpa_attention import lrp_sdpa_attention

__all__ = ["ACTIVATIONS", "ATTENTION_MODES", "lrp_activation", "lrp_attention", "lrp_disentangled_attention",
           "lrp_glu", "lrp_layer_norm", "lrp_rms_norm", "lrp_sdpa_attention"]
