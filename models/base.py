"""What an architecture adapter tells `lrp_triton.apply` and `lrp_triton.attribute`.

An adapter maps HuggingFace module classes of one family (by class name) to the `lrp_triton`
layers that replace them, and says where the family keeps its decoder layers, its final logit
soft-capping and its learned position embeddings. Attention needs no entry: every supported
family calls transformers' attention interface, which `apply` points at lrp_triton's kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from lrp_triton.modules import LRPFusedGatedMLP, LRPGatedMLP, LRPLayerNorm, LRPMLP, LRPMoEExperts, LRPRMSNorm

# A replacement factory: (hf_module, mode, backend) -> lrp_triton module
Factory = Callable[[nn.Module, str, str], nn.Module]

# Class-name endings of layers that need an LRP rule; one left unreplaced is an error.
_NEEDS_RULE = ("RMSNorm", "LayerNorm", "MLP", "Experts", "ActDense",
              "Intermediate", "Pooler", "HeadTransform", "ClassificationHead")


def rms_norm(offset: float = 0.0) -> Factory:
    return lambda m, mode, backend: LRPRMSNorm.from_hf(m, offset=offset, backend=backend)


def layer_norm() -> Factory:
    return lambda m, mode, backend: LRPLayerNorm.from_hf(m, backend=backend)


def gated_mlp() -> Factory:
    return lambda m, mode, backend: LRPGatedMLP.from_hf(m, mode=mode, backend=backend)


def fused_gated_mlp() -> Factory:
    return lambda m, mode, backend: LRPFusedGatedMLP.from_hf(m, mode=mode, backend=backend)


def plain_mlp() -> Factory:
    return lambda m, mode, backend: LRPMLP.from_hf(m, mode=mode, backend=backend)


def moe_experts() -> Factory:
    return lambda m, mode, backend: LRPMoEExperts.from_hf(m, mode=mode, backend=backend)


def max_position_embeddings(config) -> int | None:
    """The longest input a model takes: its position-embedding table's size (None: no table)."""
    return getattr(config, "max_position_embeddings", None)


@dataclass(frozen=True)
class Adapter:
    """One model family: which layers to replace, and where its parts live."""

    family: str
    model_types: tuple[str, ...]
    replacements: dict[str, Factory]  # HF class name -> factory
    kind: str = "causal_lm"  # which `attribute` path explains it: causal_lm, encoder, vision, seq2seq
    final_logit_softcap_attr: str | None = None  # config attribute holding the final-logit cap
    position_embedding_attr: str | None = None  # attribute of the base model (GPT-2: "wpe")
    layers_attr: str = "layers"  # (dotted) attribute of the base model holding its layers
    # attention layers replaced in every mode, "gradient" included (e.g. T5's, for its compact bias)
    attention_replacements: dict[str, Factory] = field(default_factory=dict)
    max_length: Callable[[object], int | None] = max_position_embeddings  # config -> longest input

    def replacement_for(self, module: nn.Module, mode: str, backend: str) -> nn.Module | None:
        """The lrp_triton layer for `module`, or None. Mode "gradient" replaces attention layers only."""
        name = type(module).__name__
        factory = self.attention_replacements.get(name)
        if factory is None and mode != "gradient":
            factory = self.replacements.get(name)
        return None if factory is None else factory(module, mode, backend)

    def check_all_handled(self, model: nn.Module) -> None:
        """Raises if a layer that needs an LRP rule is of a class this adapter does not know."""
        for name, module in model.named_modules():
            cls = type(module).__name__
            if cls.endswith(_NEEDS_RULE) and cls not in self.replacements and not cls.startswith("LRP"):
                raise NotImplementedError(
                    f"{self.family} adapter: layer {name!r} of class {cls} has no LRP replacement; "
                    f"known classes: {', '.join(sorted(self.replacements))}")

    @staticmethod
    def base_model(model: nn.Module) -> nn.Module:
        return getattr(model, model.base_model_prefix, model)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return self.base_model(model).get_submodule(self.layers_attr)

    def final_logit_softcap(self, config) -> float | None:
        if self.final_logit_softcap_attr is None:
            return None
        return getattr(config, self.final_logit_softcap_attr, None)

    def position_embedding(self, model: nn.Module) -> nn.Module | None:
        if self.position_embedding_attr is None:
            return None
        return getattr(self.base_model(model), self.position_embedding_attr)
