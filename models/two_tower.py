"""What CLIP and SigLIP share: their vision and text towers as adapters of their own, and the joint
two-tower adapter (adapter kind "contrastive", `lrp_triton.attribution.contrastive`).

Each tower is usable alone (issue 15's vision-language models reuse the vision towers):
- `vision_tower_adapter`: CLIPVisionModel(WithProjection) / SiglipVisionModel, kind "vision":
  a bias-free (CLIP) or biased (SigLIP) patch convolution, CLIP's class embedding, learned
  positions, pre-norm layers (LayerNorm: std held constant; MLP: identity rule on its activation).
  No logits: an int target explains a dimension of the embedding (`image_embeds`, else
  `pooler_output`), as a class logit.
- `text_tower_adapter`: CLIPTextModel(WithProjection) / SiglipTextModel, kind "encoder", `ids_only`
  (the towers read their ids: CLIP pools at the end-of-text token it finds in them); an int target
  explains a dimension of `text_embeds`, else `pooler_output`.
- `ContrastiveAdapter`: the joint model; the same model type also holds the
  `*ForImageClassification` head on the vision tower alone, explained as a vision model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lrp_triton.models.base import Adapter, Factory, PatchEmbeddings, TextEmbeddings

VECTOR_OUTPUTS = ("image_embeds", "text_embeds", "pooler_output")
VISION_LAYERS, TEXT_LAYERS = "vision_model.encoder.layers", "text_model.encoder.layers"


def vision_tower(model: nn.Module) -> nn.Module:
    """The vision transformer inside a joint / projection / classification model (or the model itself)."""
    return getattr(model, "vision_model", model)


def text_tower(model: nn.Module) -> nn.Module:
    return getattr(model, "text_model", model)


def vision_embeddings(model: nn.Module) -> PatchEmbeddings:
    """cat(class embedding (CLIP; SigLIP has none), patches) + positions, `embeddings` of the vision tower."""
    emb = vision_tower(model).embeddings
    cls = getattr(emb, "class_embedding", None)
    return PatchEmbeddings(patches=emb.patch_embedding, summed=emb, prefix=() if cls is None else (cls.view(1, 1, -1),),
                           position=emb.position_embedding.weight[None])


def text_embeddings(model: nn.Module) -> TextEmbeddings:
    emb = text_tower(model).embeddings
    return TextEmbeddings(word=emb.token_embedding, position=emb.position_embedding)


def vision_tower_adapter(family: str, model_type: str, replacements: dict[str, Factory]) -> Adapter:
    return Adapter(family=f"{family} vision", model_types=(model_type,), replacements=replacements, kind="vision",
                   layers_attrs=("encoder.layers",), embeddings_of=vision_embeddings, vector_outputs=VECTOR_OUTPUTS)


def text_tower_adapter(family: str, model_type: str, replacements: dict[str, Factory]) -> Adapter:
    return Adapter(family=f"{family} text", model_types=(model_type,), replacements=replacements, kind="encoder",
                   layers_attrs=("encoder.layers",), embeddings_of=text_embeddings, ids_only=True,
                   vector_outputs=VECTOR_OUTPUTS)


def image_features(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The joint model's image embedding before normalisation (CLIP: the projection; SigLIP: the pooling head)."""
    return model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output


def text_features(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """The joint model's text embedding before normalisation (CLIP: the projection; SigLIP: the head)."""
    return model.get_text_features(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                   return_dict=True).pooler_output


@dataclass(frozen=True)
class ContrastiveAdapter(Adapter):
    """A joint image-text model: two towers, their embeddings, logit_scale (and SigLIP's logit_bias)."""

    image_embeds: Callable[[nn.Module, torch.Tensor], torch.Tensor] = image_features
    text_embeds: Callable[..., torch.Tensor] = text_features
    logit_bias_attr: str | None = None

    def kind_for(self, model: nn.Module) -> str:
        """"contrastive" for the joint model; "vision" for an image classifier on the vision tower alone."""
        return "contrastive" if hasattr(model, "text_model") else "vision"

    def layers(self, model: nn.Module) -> list[nn.Module]:
        """The vision tower's layers, then the text tower's (where the model holds one)."""
        return [layer for attr in self.layers_attrs if hasattr(model, attr.split(".")[0])
                for layer in model.get_submodule(attr)]

    def embeddings(self, model: nn.Module) -> PatchEmbeddings:
        return vision_embeddings(model)

    vision_embeddings = staticmethod(vision_embeddings)
    text_embeddings = staticmethod(text_embeddings)
    text_tower = staticmethod(text_tower)

    def logit_terms(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logit_scale.exp(), logit_bias or None): the similarity's constant scale and offset."""
        bias = None if self.logit_bias_attr is None else getattr(model, self.logit_bias_attr)
        return model.logit_scale.exp(), bias


def contrastive_adapter(family: str, model_type: str, replacements: dict[str, Factory],
                        logit_bias_attr: str | None = None) -> ContrastiveAdapter:
    return ContrastiveAdapter(family=family, model_types=(model_type,), replacements=replacements, kind="contrastive",
                              layers_attrs=(VISION_LAYERS, TEXT_LAYERS), vector_outputs=VECTOR_OUTPUTS,
                              logit_bias_attr=logit_bias_attr)
