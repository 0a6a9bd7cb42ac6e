"""Architecture adapters (installed as `lrp_triton.models`), one module per model family.

`adapter_for(model)` picks the adapter from `model.config.model_type`.
"""

from __future__ import annotations

from lrp_triton.models import (bert, cohere, cohere2, ernie4_5, exaone4, gemma, gemma2, gemma3, glm4, gpt2, gpt_neox,
                               gptj, granite, llama, ministral, mistral, mixtral, olmo, olmo2, olmo3, phi, phi3, qwen2,
                               qwen3, roberta, smollm3, starcoder2, t5, vit)
from lrp_triton.models import bart, camembert, distilbert, electra, marian, mbart, mt5, umt5, xlm_roberta  # issue 14
from lrp_triton.models import deberta, deberta_v2  # issue 14, DeBERTa
from lrp_triton.models import glm4_moe, olmoe, phimoe, qwen2_moe, qwen3_moe  # issue 13, MoE
from lrp_triton.models import clip, siglip  # issue 14, two towers (each module: joint, vision, text adapters)
from lrp_triton.models import dinov2, modernbert  # issue 14
from lrp_triton.models import gemma3_vl, idefics3, llava, llava_next, paligemma  # issue 15, vision-language
from lrp_triton.models import qwen2_5_vl, qwen2_vl, qwen3_vl  # issue 15, vision-language
from lrp_triton.models import gpt_oss, granitemoe, granitemoeshared  # issue 13: sinks, Granite's MoE
from lrp_triton.models import deepseek_v2, deepseek_v3  # issue 13, multi-head latent attention
from lrp_triton.models.base import Adapter

ADAPTERS: dict[str, Adapter] = {
    model_type: adapter
    for module in (llama, mistral, ministral, mixtral, qwen2, qwen3, gemma, gemma2, gemma3, phi, phi3, gpt2, gpt_neox,
                   gptj, olmo, olmo2, starcoder2, smollm3, glm4, granite, cohere, cohere2, ernie4_5, exaone4, olmo3,
                   t5, bert, roberta, vit, xlm_roberta, camembert, distilbert, electra, mt5, umt5, bart, mbart, marian,
                   qwen2_moe, qwen3_moe, olmoe, phimoe, glm4_moe, clip, siglip, modernbert, dinov2,
                   deberta, deberta_v2, qwen2_vl, qwen2_5_vl, qwen3_vl, llava, llava_next, idefics3, paligemma,
                   gemma3_vl,
                   gpt_oss, granitemoe, granitemoeshared, deepseek_v2, deepseek_v3)
    for adapter in getattr(module, "ADAPTERS", (module.ADAPTER,))
    for model_type in adapter.model_types
}


def supported_model_types(kind: str | None = None) -> list[str]:
    """The supported `config.model_type` values (of one adapter kind: "causal_lm", "encoder", ...)."""
    return sorted(t for t, adapter in ADAPTERS.items() if kind is None or adapter.kind == kind)


def adapter_for_config(config, what: str = "") -> Adapter:
    """The adapter of a config's model type, or a NotImplementedError naming the type and the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise NotImplementedError(
            f"lrp_triton does not support model type {model_type!r}{f' ({what})' if what else ''}; "
            f"supported model types: {', '.join(supported_model_types())}")
    return ADAPTERS[model_type]


def adapter_for(model) -> Adapter:
    """The adapter of `model`'s family, or a NotImplementedError naming the type and the supported ones."""
    return adapter_for_config(getattr(model, "config", None), type(model).__name__)
