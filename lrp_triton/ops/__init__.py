"""Autograd ops whose forward is the usual computation and whose backward is an LRP rule."""

from lrp_triton.ops.attention import ATTENTION_MODES, lrp_attention

__all__ = ["ATTENTION_MODES", "lrp_attention"]
