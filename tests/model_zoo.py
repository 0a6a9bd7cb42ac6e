"""Tiny random-weight HuggingFace decoder models, one per supported family, for the tests.

Weights are redrawn at a scale where attention is far from uniform and every nonlinearity is in
its curved range (HF's default init of std 0.02 makes most rules trivially linear).
"""

from __future__ import annotations

import math

import torch
import transformers

COMMON = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=False)

FAMILIES = {
    "llama": lambda: transformers.LlamaConfig(
        **COMMON, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 16}),
    "mistral": lambda: transformers.MistralConfig(**COMMON, sliding_window=5),
    "mixtral": lambda: transformers.MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2,
                                                  sliding_window=None),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON),
    "gemma2": lambda: transformers.Gemma2Config(**COMMON, query_pre_attn_scalar=16, sliding_window=4,
                                                attn_logit_softcapping=1.5, final_logit_softcapping=3.0,
                                                hidden_activation="gelu_pytorch_tanh"),
    "gemma3_text": lambda: transformers.Gemma3TextConfig(**COMMON, query_pre_attn_scalar=16, sliding_window=4,
                                                         layer_types=["sliding_attention", "full_attention"],
                                                         final_logit_softcapping=None),
    "phi3": lambda: transformers.Phi3Config(**{k: v for k, v in COMMON.items() if k != "head_dim"}, pad_token_id=0,
                                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                             "partial_rotary_factor": 0.5}),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=101, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                            activation_function="gelu_new", tie_word_embeddings=True),
}


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Redraws every parameter at a scale where the rules are not trivially linear."""
    gemma = model.config.model_type.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(0.1 * torch.randn_like(p) + (0.0 if gemma else 1.0))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed" in name or name.endswith(("wte.weight", "wpe.weight")):
                p.copy_(torch.randn_like(p))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn_like(p) * 1.5 / math.sqrt(fan_in))
    return model


def tiny_model(family: str, seed: int | None = None, config=None):
    """A float32 eval-mode *ForCausalLM of `family` with fresh random weights."""
    if seed is not None:
        torch.manual_seed(seed)
    config = config if config is not None else FAMILIES[family]()
    model = transformers.AutoModelForCausalLM.from_config(config)
    return randomize(model).float().eval()
