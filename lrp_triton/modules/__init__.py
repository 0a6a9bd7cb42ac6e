"""Layers that read like the torch / HuggingFace layers they replace, with LRP backward rules.

Each shares the parameters of the module it replaces (no copies) and is built from it with
`from_hf(module, ...)`.
"""

from lrp_triton.modules.gpt_oss_experts import LRPGptOssExperts, LRPGptOssMLP, lrp_clamped_swiglu
from lrp_triton.modules.mlp import LRPFusedGatedMLP, LRPGatedMLP, LRPMLP, activation_name
from lrp_triton.modules.moe import LRPMoEExperts
from lrp_triton.modules.moe_gates import LRPSharedExpertMoE, LRPSigmoidTopkRouter, lrp_sigmoid
from lrp_triton.modules.norms import LRPLayerNorm, LRPRMSNorm

__all__ = ["LRPFusedGatedMLP", "LRPGatedMLP", "LRPGptOssExperts", "LRPGptOssMLP", "LRPLayerNorm", "LRPMLP",
           "LRPMoEExperts", "LRPRMSNorm", "LRPSharedExpertMoE", "LRPSigmoidTopkRouter", "activation_name",
           "lrp_clamped_swiglu", "lrp_sigmoid"]
