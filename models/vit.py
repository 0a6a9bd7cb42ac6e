"""Vision transformer adapter (ViT, DeiT): patch-embedding convolution (epsilon rule, or the gamma
rule with `linear_rule="gamma"`), CLS (and DeiT distillation) token and position embeddings,
pre-norm LayerNorm (std held constant), GELU MLP (identity rule), non-causal attention."""

from lrp_triton.models.base import Adapter, PatchEmbeddings, layer_norm, plain_mlp_named
from lrp_triton.modules.encoder import LRPPooler

VIT_MLP = plain_mlp_named("fc1", "activation_fn", "fc2")


def patch_embeddings(model) -> PatchEmbeddings:
    emb = Adapter.base_model(model).embeddings
    prefix = tuple(getattr(emb, name) for name in ("cls_token", "distillation_token")
                   if getattr(emb, name, None) is not None)
    return PatchEmbeddings(patches=emb.patch_embeddings, summed=emb, prefix=prefix, position=emb.position_embeddings)


ADAPTER = Adapter(
    family="ViT",
    model_types=("vit", "deit"),
    replacements={"LayerNorm": layer_norm, "ViTMLP": VIT_MLP, "DeiTMLP": VIT_MLP,
                  "ViTPooler": LRPPooler.from_hf, "DeiTPooler": LRPPooler.from_hf},
    kind="vision",
    layers_attrs=("layers",),
    embeddings_of=patch_embeddings,
)
