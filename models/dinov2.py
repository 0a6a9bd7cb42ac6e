"""DINOv2 adapter (Dinov2Model, Dinov2ForImageClassification; DINOv2 with registers alike).

ViT's pre-norm layers (LayerNorm: std held constant) with a layer scale after attention and after the
MLP, `x * lambda` (a constant per channel: linear, the exact gradient), and either the plain MLP
fc2(act(fc1(x))) (identity rule on the activation) or, with `use_swiglu_ffn`, the SwiGLU FFN
down(silu(gate(x)) * up(x)) (identity rule on the SiLU, uniform rule on the product; CP-LRP: the gate
branch is a constant). Drop-path is the identity at attribution time.

Embeddings: cat(CLS, patches(pixels)) + position (the patch convolution: epsilon rule, or the gamma
rule with `linear_rule`); with registers, `cat(cls + pos_0, registers, patches + pos)`: the register
tokens are prepended tokens without a position embedding (`cls_relevance` is [B, 1 + R]: CLS, then
the registers). The classification head reads cat(h[:, 0], mean of the patch tokens) (registers
excluded) through one linear layer: linear with the patch count held constant, the exact gradient.
"""

from lrp_triton.models.base import Adapter, PatchEmbeddings, gated_mlp, layer_norm, plain_mlp_named

DINOV2_MLP = plain_mlp_named("fc1", "activation_fn", "fc2")


def patch_embeddings(model) -> PatchEmbeddings:
    emb = Adapter.base_model(model).embeddings
    return PatchEmbeddings(patches=emb.patch_embeddings, summed=emb, prefix=(emb.cls_token,),
                           position=emb.position_embeddings, registers=getattr(emb, "register_tokens", None))


ADAPTER = Adapter(
    family="DINOv2",
    model_types=("dinov2", "dinov2_with_registers"),
    replacements={"LayerNorm": layer_norm, "Dinov2MLP": DINOV2_MLP, "Dinov2SwiGLUFFN": gated_mlp,
                  "Dinov2WithRegistersMLP": DINOV2_MLP, "Dinov2WithRegistersSwiGLUFFN": gated_mlp},
    kind="vision",
    layers_attrs=("encoder.layer",),
    embeddings_of=patch_embeddings,
)
