"""Vision transformer adapter (ViT, DeiT): patch-embedding convolution (epsilon rule, or the gamma
rule with `linear_rule="gamma"`), CLS (and DeiT distillation) token and position embeddings,
pre-norm LayerNorm (std held constant), GELU MLP (identity rule), non-causal attention."""

from lrp_triton.models.base import Adapter, layer_norm
from lrp_triton.modules.encoder import LRPPooler
from lrp_triton.modules.mlp import LRPMLP, activation_name


def _mlp(m, mode, backend):
    return LRPMLP(m.fc1, m.fc2, activation_name(m.activation_fn), None, backend)


def _pooler(m, mode, backend):
    return LRPPooler.from_hf(m, mode=mode, backend=backend)


ADAPTER = Adapter(
    family="ViT",
    model_types=("vit", "deit"),
    replacements={"LayerNorm": layer_norm(), "ViTMLP": _mlp, "DeiTMLP": _mlp, "ViTPooler": _pooler,
                  "DeiTPooler": _pooler},
    kind="vision",
    layers_attr="layers",
)
