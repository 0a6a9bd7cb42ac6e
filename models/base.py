"""What an architecture adapter tells `lrp_triton.apply` and the attribution drivers.

An adapter owns all knowledge of one family: which HuggingFace module classes (by class name) are
replaced by which `lrp_triton` layers, where its layer stacks live (several for an
encoder-decoder), how it numbers positions, its final logit soft-capping and output scaling, the
longest input it takes, and its embedding layout. Drivers and the CLI ask the adapter and never
name a family. Attention needs no entry: every supported family calls transformers' attention
interface, which `apply` points at lrp_triton's kernel (T5, which builds its own bias, and
DeBERTa-v2, which computes its own disentangled attention, have attention replacements).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from lrp_triton.modules import (LRPFusedGatedMLP, LRPGatedMLP, LRPLayerNorm, LRPMLP, LRPMoEExperts, LRPRMSNorm,
                                activation_name)
from lrp_triton.modules import LRPGptOssMLP, LRPSharedExpertMoE, LRPSigmoidTopkRouter
from lrp_triton.options import LRPOptions

# A replacement factory: (hf_module, options) -> lrp_triton module
Factory = Callable[[nn.Module, LRPOptions], nn.Module]

# Class-name endings of layers that need an LRP rule; one left unreplaced is an error.
_NEEDS_RULE = ("RMSNorm", "LayerNorm", "MLP", "Experts", "ActDense",
               "Intermediate", "Pooler", "HeadTransform", "ClassificationHead", "MultiheadAttention")

# Activation modules whose gradient is not their identity rule (f'(x) != f(x)/x): every class of
# transformers.activations but the linear one, and torch's curved nonlinearities. ReLU (and leaky
# ReLU) are absent: their gradient is the identity rule. A module holding one of these, of any class
# name (DistilBERT's `FFN`), needs a replacement, or must be replaced itself.
_LINEAR_ACTIVATIONS = ("LinearActivation",)
_CURVED_TORCH_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Mish, nn.Softplus, nn.ELU, nn.SELU, nn.CELU,
                             nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink, nn.GLU)


def is_curved_activation(module: nn.Module) -> bool:
    """Whether `module` is an activation whose plain gradient differs from its identity-rule ratio."""
    cls = type(module)
    if cls.__module__ == "transformers.activations":
        return cls.__name__ not in _LINEAR_ACTIVATIONS
    return isinstance(module, _CURVED_TORCH_ACTIVATIONS)


def unreplaced_activations(model: nn.Module) -> list[tuple[str, str]]:
    """(name, class) of each curved activation module not inside an lrp_triton layer, with the
    class of the module holding it (its parent: the layer that needs a replacement)."""
    found = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if type(child).__name__.startswith("LRP"):
                continue
            path = f"{prefix}.{name}" if prefix else name
            if is_curved_activation(child):
                found.append((path, type(module).__name__))
            walk(child, path)
    walk(model, "")
    return found


def rms_norm(offset: float = 0.0) -> Factory:
    return lambda m, options: LRPRMSNorm.from_hf(m, options, offset=offset)


layer_norm: Factory = LRPLayerNorm.from_hf
gated_mlp: Factory = LRPGatedMLP.from_hf
fused_gated_mlp: Factory = LRPFusedGatedMLP.from_hf
plain_mlp: Factory = LRPMLP.from_hf


def plain_mlp_named(fc: str, act: str, proj: str, dropout: str | None = None) -> Factory:
    """A plain MLP `proj(act(fc(x)))` whose layers have the family's own attribute names -> LRPMLP."""
    def factory(m, options):
        return LRPMLP(getattr(m, fc), getattr(m, proj), activation_name(getattr(m, act)),
                      getattr(m, dropout) if dropout else None, backend=options.backend, taps=options.taps)
    return factory
def fused_gated_mlp_named(gate_up: str, act: str, down: str) -> Factory:
    """A fused gated MLP `down(act(gate) * up)`, (gate, up) the halves of `gate_up`, under the family's own
    attribute names -> LRPFusedGatedMLP."""
    def factory(m, options):
        return LRPFusedGatedMLP(getattr(m, gate_up), getattr(m, down), activation_name(getattr(m, act)),
                                mode=options.mode, backend=options.backend, taps=options.taps)
    return factory
moe_experts: Factory = LRPMoEExperts.from_hf
shared_expert_moe: Factory = LRPSharedExpertMoE.from_hf  # a sparse block with a sigmoid-gated shared expert
sigmoid_topk_router: Factory = LRPSigmoidTopkRouter.from_hf
gpt_oss_moe: Factory = LRPGptOssMLP.from_hf  # gpt-oss's sparse block: untouched router, clamped-SwiGLU experts


def max_position_embeddings(config) -> int | None:
    """The longest input a model takes: its position-embedding table's size (None: no table)."""
    return getattr(config, "max_position_embeddings", None)


def positions_from_zero(config, attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over each row's real tokens (left padding does not shift them); 0 at padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def no_output_scale(config) -> float | None:
    return None


@dataclass(frozen=True)
class TextEmbeddings:
    """Where a text model's input embeddings live: the word embedding (the explained input), and the
    learned position and token-type embeddings summed with it (each a relevance leaf of its own)."""

    word: nn.Module
    position: nn.Module | None = None
    token_type: nn.Module | None = None


@dataclass(frozen=True)
class PatchEmbeddings:
    """A vision transformer's embedding: `summed` outputs cat(prefix tokens, patches(pixels)) + position,
    with `registers` (DINOv2 with registers) inserted after the prefix once the positions are added."""

    patches: nn.Module
    summed: nn.Module
    prefix: tuple[torch.Tensor, ...]  # the prepended token parameters (CLS; DeiT: CLS, distillation)
    position: torch.Tensor  # the position-embedding parameter [1, n_prefix + num_patches, hidden]
    registers: torch.Tensor | None = None  # register-token parameter [1, R, hidden]: no position embedding


@dataclass(frozen=True)
class VisionLanguageParts:
    """A vision-language model's parts (`Adapter.vision_language_of`), as the multimodal driver uses them.

    The driver embeds the text, runs `image_features(pixel_values, image_grid_thw)` (the vision tower
    and its projector / merger: one embedding per image token, images in order), puts them at the
    `image_token_id` positions, and runs `text_model` on the merged sequence with
    `position_ids(input_ids, mm_token_type_ids, image_grid_thw, attention_mask)` (the model's own
    position numbering, e.g. 3-D multimodal rotary ids). `image_maps(values, grid, level)` lays out
    values of the flattened patches (level "pixel": [..., n_patches, patch_dim], "patch": [...,
    n_patches], "token": [..., n_image_tokens]) as one map per image: [..., H, W] in pixels,
    [..., grid_h, grid_w] in patches, [..., grid_h / m, grid_w / m] in merged tokens.

    Fixed-size towers (LLaVA) take pixel_values [n_images, C, H, W] and no image_grid_thw:
    `image_grid(pixel_values, image_sizes)` checks them and returns the grid [n_images, 3] = (1, H / patch,
    W / patch) that the other callables read; level "pixel" values are then [..., n_images, C, H, W].
    LLaVA-NeXT: pixel_values [n_images, n_tiles, C, S, S] with image_sizes, which is its grid; its
    `base_maps` give the base tiles' maps beside `image_maps`' high-resolution canvases (models.llava_next).
    `patch_rows` turns the patch embedding's output (and its grad) into rows [n_patches, hidden].
    `pixel_layout(pixel_values, grid)`: per image its pixel values [C, H, W] laid out as its pixel map
    (what the model saw, for display; None: Qwen2-VL's flattened patches, the resized image itself).
    `deepstack` (Qwen3-VL): image_features also returns the features the text model adds at the image
    tokens after its first layers; their relevance counts at those tokens.
    `image_inputs`: the processor's other image keys the family takes (Idefics3: pixel_attention_mask),
    passed to `image_grid` as keywords after image_sizes; the grid it returns may be any object its own
    callables read.
    `text_masks` builds the decoder's mask where it is more than causal (bidirectional image tokens).
    """

    text_model: nn.Module
    patch_embedding: nn.Module  # its output: one embedding per patch, in the flattened patch order
    image_token_id: int
    image_features: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    position_ids: Callable[..., torch.Tensor]
    image_maps: Callable[[torch.Tensor, torch.Tensor, str], list]
    tokens_per_image: Callable[[torch.Tensor], list]  # image_grid_thw -> image tokens of each image
    patch_dim: int  # values per flattened patch (channels x temporal patch x patch x patch)
    mm_token_types: dict = field(default_factory=lambda: {"image": 1})  # mm_token_type_ids of each modality
    image_grid: Callable[[torch.Tensor, object], torch.Tensor] | None = None  # fixed-size towers: pixels -> grid
    patch_rows: Callable[[torch.Tensor], torch.Tensor] = nn.Identity()  # patch embedding output -> [n, hidden]
    base_maps: Callable[[torch.Tensor, torch.Tensor, str], list] | None = None  # LLaVA-NeXT's base tiles
    pixel_layout: Callable[[torch.Tensor, torch.Tensor], list] | None = None  # per image [C, H, W] as its map
    # Qwen3-VL's DeepStack: image_features returns (embeddings, [features added after decoder layer l, each
    # [n_image_tokens, hidden]]), which text_model takes as deepstack_visual_embeds with visual_pos_masks
    deepstack: bool = False
    image_inputs: tuple[str, ...] = ()  # processor keys besides pixel_values (and image_sizes) image_grid takes
    # models whose decoder mask depends on token_type_ids (PaliGemma's bidirectional prefix, Gemma 3's image
    # blocks): (merged embeds, attention_mask, position_ids, token_type_ids or None) -> the text model's
    # attention_mask (a mask or a mapping per layer type, as the model's own forward builds it); None: the
    # text model builds its causal mask from attention_mask, and token_type_ids do not apply
    text_masks: Callable[..., object] | None = None
    generated_token_type: int = 0  # token_type_ids of generated tokens (PaliGemma's: 1, the causal suffix)


@dataclass(frozen=True)
class Adapter:
    """One model family: which layers to replace, and where its parts live."""

    family: str
    model_types: tuple[str, ...]
    replacements: dict[str, Factory]  # HF class name -> factory
    kind: str = "causal_lm"  # which driver explains it: causal_lm, encoder, vision, seq2seq, contrastive,
    # vision_language
    final_logit_softcap_attr: str | None = None  # config attribute holding the final-logit cap
    position_embedding_attr: str | None = None  # attribute of the base model (GPT-2: "wpe")
    layers_attrs: tuple[str, ...] = ("layers",)  # (dotted) attributes of the base model: its layer stacks
    # attention layers replaced in every mode, "gradient" included (e.g. T5's, for its compact bias)
    attention_replacements: dict[str, Factory] = field(default_factory=dict)
    max_length: Callable[[object], int | None] = max_position_embeddings  # config -> longest input
    position_ids: Callable[[object, torch.Tensor], torch.Tensor] = positions_from_zero  # (config, mask) -> ids
    output_scale: Callable[[object], float | None] = no_output_scale  # config -> multiplier before the head
    embeddings_of: Callable[[nn.Module], TextEmbeddings | PatchEmbeddings] | None = None  # default: decoders'
    # encoder model classes whose logits are one score per token [B, N] (ELECTRA's discriminator):
    # the encoder driver explains the logit at `position`, never reads [B, N] as classes
    token_logit_heads: tuple[str, ...] = ()
    # encoder-decoders: model -> (encoder ids -> inputs_embeds, decoder ids -> inputs_embeds), what each stack
    # would compute from ids itself (default: each stack's own input embedding; the explained leaves)
    stack_embeddings: Callable[[nn.Module], tuple[Callable, Callable]] | None = None
    output_bias_attr: str | None = None  # attribute of the model: a constant added to the logits (BART's)
    # text models that read their input_ids themselves (CLIP's text tower pools at the end-of-text id): the
    # encoder driver passes the ids and takes the word embedding's output as the leaf; inputs_embeds refused
    ids_only: bool = False
    # output fields read as a vector of scores when a model has no logits (an embedding tower's embedding):
    # an int target explains that dimension; the first field present is taken
    vector_outputs: tuple[str, ...] = ()
    # modules (dotted attributes of the base model) whose tensors the HF forward reads without calling them
    # (DeBERTa's encoder.rel_embeddings.weight): offloaded by accelerate, their own hook never loads them, so
    # each attribution call loads them for its duration (`lrp_triton.accelerate_hooks.weights_loaded`)
    read_without_forward: tuple[str, ...] = ()

    def kind_for(self, model: nn.Module) -> str:
        """The driver kind of this model class (a family may hold several, see models.clip)."""
        return self.kind
    # vision-language models (kind "vision_language"): model -> its parts
    vision_language_of: Callable[[nn.Module], VisionLanguageParts] | None = None

    def replacement_for(self, module: nn.Module, options: LRPOptions) -> nn.Module | None:
        """The lrp_triton layer for `module`, or None. Mode "gradient" replaces attention layers only."""
        name = type(module).__name__
        factory = self.attention_replacements.get(name)
        if factory is None and options.mode != "gradient":
            factory = self.replacements.get(name)
        return None if factory is None else factory(module, options)

    def check_all_handled(self, model: nn.Module) -> None:
        """Raises if a layer that needs an LRP rule is of a class this adapter does not know."""
        for name, module in model.named_modules():
            cls = type(module).__name__
            if cls.endswith(_NEEDS_RULE) and cls not in self.replacements and not cls.startswith("LRP"):
                raise NotImplementedError(
                    f"{self.family} adapter: layer {name!r} of class {cls} has no LRP replacement; "
                    f"known classes: {', '.join(sorted(self.replacements))}")
        for name, holder in unreplaced_activations(model):
            raise NotImplementedError(
                f"{self.family} adapter: activation {name!r} (in a {holder}) would run its plain gradient, not "
                f"the identity rule: {holder} (or the activation) has no LRP replacement; known classes: "
                f"{', '.join(sorted(self.replacements))}")

    @staticmethod
    def base_model(model: nn.Module) -> nn.Module:
        return getattr(model, model.base_model_prefix, model)

    def layers(self, model: nn.Module) -> list[nn.Module]:
        """Every transformer layer, stack after stack (encoder-decoders: encoder first)."""
        base = self.base_model(model)
        return [layer for attr in self.layers_attrs for layer in base.get_submodule(attr)]

    @staticmethod
    def head(model: nn.Module) -> nn.Module | None:
        """The output projection to the vocabulary (language-model head), or None."""
        return model.get_output_embeddings()

    def seq2seq_embeddings(self, model: nn.Module) -> tuple[Callable, Callable]:
        """(encoder ids -> inputs_embeds, decoder ids -> inputs_embeds) of an encoder-decoder."""
        if self.stack_embeddings is not None:
            return self.stack_embeddings(model)
        return model.get_encoder().get_input_embeddings(), model.get_decoder().get_input_embeddings()

    def output_bias(self, model: nn.Module) -> torch.Tensor | None:
        return None if self.output_bias_attr is None else getattr(model, self.output_bias_attr)

    def final_logit_softcap(self, config) -> float | None:
        if self.final_logit_softcap_attr is None:
            return None
        return getattr(config, self.final_logit_softcap_attr, None)

    def embeddings(self, model: nn.Module) -> TextEmbeddings | PatchEmbeddings:
        if self.embeddings_of is not None:
            return self.embeddings_of(model)
        position = None
        if self.position_embedding_attr is not None:
            position = getattr(self.base_model(model), self.position_embedding_attr)
        return TextEmbeddings(word=model.get_input_embeddings(), position=position)
