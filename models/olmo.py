"""OLMo (1) adapter: weightless LayerNorm (`OlmoLayerNorm`: F.layer_norm with no weight or bias and
eps 1e-5 fixed in its forward), std held constant and centring linear, as for LayerNorm; gated
SiLU MLP (identity + uniform rules); attention as Llama.

`clip_qkv` (q, k and v clamped to [-c, c] right after their projections, inside HF's attention
forward, which lrp_triton leaves in place): a clamp is linear where it does not clip, so it takes
the identity rule there (R_x = R_y, the exact gradient 1); a clipped entry is the constant +-c,
which absorbs its relevance like a bias (R_x = 0, the exact gradient 0). The exact gradient of the
clamp is therefore the rule, and nothing is replaced for it.
"""

from lrp_triton.models.base import Adapter, gated_mlp
from lrp_triton.modules import LRPLayerNorm

OLMO_LAYER_NORM_EPS = 1e-5  # hard-coded in OlmoLayerNorm.forward


def weightless_layer_norm(module, options):
    """OlmoLayerNorm -> LRPLayerNorm without weight or bias."""
    if getattr(module, "weight", None) is not None or getattr(module, "bias", None) is not None:
        raise TypeError(f"{type(module).__name__} has parameters; the OLMo adapter expects a weightless LayerNorm")
    return LRPLayerNorm(None, None, OLMO_LAYER_NORM_EPS, backend=options.backend)


ADAPTER = Adapter(
    family="OLMo",
    model_types=("olmo",),
    replacements={"OlmoLayerNorm": weightless_layer_norm, "OlmoMLP": gated_mlp},
)
