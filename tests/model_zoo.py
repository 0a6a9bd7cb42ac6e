"""The model zoo: one entry per supported model, each a tiny random-weight HuggingFace model.

An entry knows how to build its model, make inputs (with padding), call `lrp_triton.attribute` and
compute its explicit float64 reference (reference_lrp / reference_encoders / reference_t5, which
never use lrp_triton's helpers). tests/test_model_contract.py runs every contract check on every
entry of ZOO: a new family gets them all by adding one entry here (an instance of the Entry
subclass of its kind, or a new subclass: build, inputs, reference, and the few head-specific
hooks), with the reference cases (modes, rules, backends, float64) it is checked in.

Weights are redrawn at a scale where attention is far from uniform and every nonlinearity is in
its curved range (HF's default init of std 0.02 makes most rules trivially linear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import transformers

import lrp_triton
from reference_clip import joint_reference, vector_reference
from reference_encoders import bert_reference, vit_reference
from reference_dinov2 import dinov2_reference
from reference_modernbert import modernbert_reference
from reference_lrp import decoder_reference, gpt2_reference, gpt_neox_reference, shared_norm_parallel_reference
from reference_bart import bart_reference
from reference_deberta import deberta_reference
from reference_t5 import t5_reference
from reference_idefics3 import idefics3_reference
from reference_gemma_vl import decoder_extent, gemma_vl_reference
from reference_llava import llava_next_reference, llava_reference
from reference_vlm import vlm_reference

F32, F64 = torch.float32, torch.float64

# ------------------------------------------------------------------------------------------------
# Decoders
# ------------------------------------------------------------------------------------------------
COMMON = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=False)

THREE_LAYERS = dict(COMMON, num_hidden_layers=3)
MLA = dict({k: v for k, v in COMMON.items() if k != "head_dim"}, num_key_value_heads=4, kv_lora_rank=20,
           moe_intermediate_size=48)  # DeepSeek's multi-head latent attention

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
    "gemma": lambda: transformers.GemmaConfig(**COMMON, hidden_act="gelu_pytorch_tanh"),
    # clip_qkv 2.5 clips some q / k / v entries (about 1 in 10 at this scale): both sides of the clamp are checked
    "olmo": lambda: transformers.OlmoConfig(**COMMON, clip_qkv=2.5),
    "olmo2": lambda: transformers.Olmo2Config(**COMMON),
    "starcoder2": lambda: transformers.Starcoder2Config(**COMMON, use_bias=True, sliding_window=5,
                                                        hidden_act="gelu_pytorch_tanh"),
    "smollm3": lambda: transformers.SmolLM3Config(**COMMON, pad_token_id=0, no_rope_layers=[1, 0],
                                                  use_sliding_window=True, sliding_window=4,
                                                  layer_types=["sliding_attention", "full_attention"]),
    "ministral": lambda: transformers.MinistralConfig(**COMMON, sliding_window=5,
                                                      layer_types=["sliding_attention", "full_attention"]),
    "glm4": lambda: transformers.Glm4Config(**COMMON, pad_token_id=0),  # partial (1/2) interleaved RoPE
    "gpt2": lambda: transformers.GPT2Config(vocab_size=101, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                            activation_function="gelu_new", tie_word_embeddings=True),
    # Pythia's layout: parallel residual, rotary on 1/4 of each head (4 of 16 dims), exact GELU, biased LayerNorms
    "gpt_neox": lambda: gpt_neox_config(),
    # shared-LayerNorm parallel blocks: GPT-J (rotary on 8 of 16 dims in interleaved pairs, bias-free attention),
    # Phi (rotary on half of each head, GQA, per-head q / k LayerNorms as Phi's qk_layernorm)
    "gptj": lambda: transformers.GPTJConfig(vocab_size=101, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                            n_inner=96, rotary_dim=8, activation_function="gelu_new",
                                            tie_word_embeddings=False),
    "phi": lambda: transformers.PhiConfig(**{k: v for k, v in COMMON.items() if k != "head_dim"}, qk_layernorm=True,
                                          hidden_act="gelu_new", rope_parameters={
                                              "rope_type": "default", "rope_theta": 10000.0,
                                              "partial_rotary_factor": 0.5}),
    # Granite: every constant factor away from 1 (and the softmax scale away from 1 / sqrt(head_dim) = 0.25)
    "granite": lambda: transformers.GraniteConfig(**COMMON, embedding_multiplier=2.5, residual_multiplier=0.6,
                                                  attention_multiplier=0.11, logits_scaling=3.0),
    # Cohere: parallel block, bias-free LayerNorms, per-head q / k LayerNorms, interleaved rotary, logit_scale
    "cohere": lambda: transformers.CohereConfig(**COMMON, use_qk_norm=True, logit_scale=0.5),
    # Cohere 2: sliding layers with interleaved rotary, global layers without
    "cohere2": lambda: transformers.Cohere2Config(**COMMON, sliding_window=4, logit_scale=0.5,
                                                  layer_types=["sliding_attention", "full_attention"]),
    "ernie4_5": lambda: transformers.Ernie4_5Config(**COMMON, use_bias=True),  # interleaved rotary, biases
    # EXAONE 4: post-norms, per-head q / k norms, RoPE and the window on sliding layers only
    "exaone4": lambda: transformers.Exaone4Config(**COMMON, sliding_window=4,
                                                  layer_types=["sliding_attention", "full_attention"]),
    # OLMo 3: OLMo 2's norms, sliding layers, a rotary table per layer type (two thetas)
    "olmo3": lambda: transformers.Olmo3Config(**COMMON, sliding_window=4,
                                              layer_types=["sliding_attention", "full_attention"],
                                              rope_parameters={
                                                  "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                  "full_attention": {"rope_type": "default", "rope_theta": 500.0}}),
    # mixture-of-experts decoders (4 experts, top-2; GLM4-MoE 8 in 4 groups); a sparse layer before the last
    # one, so that routing matters at every token. Qwen2-MoE: 3 layers, only layer 1 sparse (decoder_sparse_step
    # 2), top-k weights not renormalised, a sigmoid-gated shared expert
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(**THREE_LAYERS, num_experts=4, num_experts_per_tok=2,
                                                     moe_intermediate_size=48, shared_expert_intermediate_size=80,
                                                     decoder_sparse_step=2, norm_topk_prob=False),
    # Qwen3-MoE: layer 1 dense (mlp_only_layers), renormalised top-k, per-head q / k norms
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2,
                                                     moe_intermediate_size=48, norm_topk_prob=True,
                                                     mlp_only_layers=[1]),
    # OLMoE: q / k norms over the whole projection, then clip_qkv (which clips some entries at this scale)
    "olmoe": lambda: transformers.OlmoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2, clip_qkv=2.5,
                                              eos_token_id=100),
    # PhiMoE: biased LayerNorms, attention and LM head; sparsemixer's threshold 2 * 0.5 keeps several experts
    # in its softmaxes (the default 0.01 keeps about one: a weight of 1 and no relevance to the router)
    "phimoe": lambda: transformers.PhimoeConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2,
                                                router_jitter_noise=0.5, attention_bias=True, lm_head_bias=True),
    # GLM4-MoE: 3 layers, layer 0 dense, sigmoid router over 8 experts in 4 groups (2 kept),
    # e_score_correction_bias (drawn in tiny_model), renormalised and scaled weights, one shared expert,
    # per-head q / k norms
    "glm4_moe": lambda: transformers.Glm4MoeConfig(**THREE_LAYERS, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
                                                   topk_group=2, moe_intermediate_size=48, n_shared_experts=1,
                                                   first_k_dense_replace=1, routed_scaling_factor=2.5,
                                                   use_qk_norm=True, norm_topk_prob=True),
    # gpt-oss: a sink logit per head (drawn in tiny_model), sliding / full layers, biased attention, every layer
    # sparse: a biased router (softmax over the top-2), experts with a clamped SwiGLU whose limit 1.0 clips some
    # gate and up entries at this scale (both sides of each clamp are checked), biases in their own layout
    "gpt_oss": lambda: transformers.GptOssConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
                                                 layer_types=["sliding_attention", "full_attention"], swiglu_limit=1.0,
                                                 rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0,
                                                                  "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                                                  "truncate": False,
                                                                  "original_max_position_embeddings": 64}),
    # GraniteMoE: Granite's four factors away from 1 around Mixtral-like layers (top-2 softmax router);
    # GraniteMoE-Shared: the same with an always-on shared expert
    "granitemoe": lambda: transformers.GraniteMoeConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2,
                                                        embedding_multiplier=2.5, residual_multiplier=0.6,
                                                        attention_multiplier=0.11, logits_scaling=3.0),
    "granitemoeshared": lambda: transformers.GraniteMoeSharedConfig(
        **COMMON, num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=80, embedding_multiplier=2.5,
        residual_multiplier=0.6, attention_multiplier=0.11, logits_scaling=3.0),
    # multi-head latent attention (DeepSeek), 2 layers. V3: layer 0 dense (first_k_dense_replace), low-rank query
    # (q_a_proj, q_a_layernorm, q_b_proj), query/key head dim 16 + 8 (no-rope + rope) > value head dim 16,
    # interleaved RoPE, yarn with mscale_all_dim (scale (1 + 0.1 ln 4) ** 2 / sqrt(24)); GLM4-MoE's router
    # (8 experts in 4 groups, 2 kept, e_score_correction_bias), one shared expert
    "deepseek_v3": lambda: transformers.DeepseekV3Config(
        **MLA, first_k_dense_replace=1, q_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2, n_shared_experts=1,
        routed_scaling_factor=2.5, norm_topk_prob=True, rope_interleave=True, rope_parameters={
            "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
            "mscale_all_dim": 1.0, "mscale": 1.0}),
    # V2: both layers sparse (routing matters at every token), q_proj, query/key head dim 8 + 8 < value head dim
    # 24, biased kv_a_proj_with_mqa / o_proj, RoPE on interleaved pairs (complex), softmax router with
    # group-limited greedy top-2 within the best of 2 groups (changes the choice of some tokens), scaled, two
    # shared experts
    "deepseek_v2": lambda: transformers.DeepseekV2Config(
        **MLA, first_k_dense_replace=0, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=24,
        n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, topk_method="group_limited_greedy",
        n_shared_experts=2, routed_scaling_factor=1.5, attention_bias=True),
}
# families whose HF router computes its weights in float32 even in a float64 model
FLOAT32_ROUTERS = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "glm4_moe", "granitemoe", "granitemoeshared",
                   "deepseek_v3", "deepseek_v2")


# float64 cases that cannot reach float64 rounding because the HF forward rounds to float32 on the way:
# Cohere / Cohere 2 / ERNIE 4.5 rotate q and k in float32 (`q.float()` in apply_rotary_pos_emb), measured up
# to 5e-8 of the relevance scale (float64 elsewhere)
F64_TOL = {**{f: 1e-5 for f in FLOAT32_ROUTERS}, "cohere": 1e-6, "cohere2": 1e-6, "ernie4_5": 1e-6}
DENSE = ("granite", "cohere", "cohere2", "ernie4_5", "exaone4", "olmo3")  # checked in every backend and mode


def gpt_neox_config(**kw):
    common = {k: v for k, v in COMMON.items() if k not in ("num_key_value_heads", "head_dim")}
    return transformers.GPTNeoXConfig(**common, rotary_pct=0.25, hidden_act="gelu", **kw)


# zoo entries of a family in another layout than FAMILIES': name -> (model type, config)
VARIANTS = {"gpt_neox-sequential": ("gpt_neox", lambda: gpt_neox_config(use_parallel_residual=False))}


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Redraws every parameter of a decoder at a scale where the rules are not trivially linear."""
    gemma = model.config.model_type.startswith("gemma")
    x_at_w = model.config.model_type == "gpt_oss"  # its experts compute x @ W[e]: W[e] is [in, out]
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm_weight = "norm" in name and name.endswith("weight")  # a LayerNorm's bias is drawn as a bias
            per_head_norm = name.endswith(("q_norm.weight", "k_norm.weight"))  # Cohere's are [H, D]
            if (p.dim() == 1 or per_head_norm) and norm_weight or name.endswith(("ln_1.weight", "ln_2.weight",
                                                                                 "ln_f.weight")):
                p.copy_(0.1 * torch.randn_like(p) + (0.0 if gemma else 1.0))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed" in name or name.endswith(("wte.weight", "wpe.weight")):
                p.copy_(torch.randn_like(p))
            else:
                fan_in = p.shape[-2] if x_at_w and p.dim() == 3 else p.shape[-1]
                p.copy_(torch.randn_like(p) * 1.5 / math.sqrt(fan_in))
    return model


def tiny_model(family: str, seed: int | None = None, config=None):
    """A float32 eval-mode *ForCausalLM of `family` with fresh random weights."""
    if seed is not None:
        torch.manual_seed(seed)
    config = config if config is not None else FAMILIES[family]()
    model = randomize(transformers.AutoModelForCausalLM.from_config(config))
    with torch.no_grad():
        for name, buf in model.named_buffers():  # GLM4-MoE's selection bias: drawn so that it changes choices
            if name.endswith("e_score_correction_bias"):
                buf.copy_(0.1 * torch.randn_like(buf))
        for name, p in model.named_parameters():  # gpt-oss's sinks: logits large enough to take a real share
            if name.endswith("self_attn.sinks"):
                p.copy_(1.0 + torch.randn_like(p))
    return model.float().eval()


# ------------------------------------------------------------------------------------------------
# Encoders (BERT / RoBERTa) and vision transformers (ViT / DeiT)
# ------------------------------------------------------------------------------------------------
TEXT = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3)
VISION = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=48, num_labels=5)

ENCODERS = {  # name -> (model class, config)
    "bert-cls": lambda: (transformers.BertForSequenceClassification, transformers.BertConfig(**TEXT)),
    "bert-mlm": lambda: (transformers.BertForMaskedLM, transformers.BertConfig(**TEXT)),
    "bert-base": lambda: (transformers.BertModel, transformers.BertConfig(**TEXT)),
    "roberta-cls": lambda: (transformers.RobertaForSequenceClassification,
                            transformers.RobertaConfig(**TEXT, pad_token_id=1)),
    "roberta-mlm": lambda: (transformers.RobertaForMaskedLM, transformers.RobertaConfig(**TEXT, pad_token_id=1)),
    # RoBERTa's copies: positions from pad_token_id + 1 (the adapter's position_ids, never a type test)
    "xlm-roberta-cls": lambda: (transformers.XLMRobertaForSequenceClassification,
                                transformers.XLMRobertaConfig(**TEXT, pad_token_id=1)),
    "xlm-roberta-mlm": lambda: (transformers.XLMRobertaForMaskedLM, transformers.XLMRobertaConfig(**TEXT, pad_token_id=1)),
    "camembert-cls": lambda: (transformers.CamembertForSequenceClassification,
                              transformers.CamembertConfig(**TEXT, pad_token_id=1)),
    "camembert-mlm": lambda: (transformers.CamembertForMaskedLM, transformers.CamembertConfig(**TEXT, pad_token_id=1)),
    # DistilBERT: its FFN (no usual layer name), ReLU classification head, GELU in the model's own MLM head
    "distilbert-cls": lambda: (transformers.DistilBertForSequenceClassification, distilbert_config()),
    "distilbert-mlm": lambda: (transformers.DistilBertForMaskedLM, distilbert_config()),
    # ELECTRA: embedding_size 24 < hidden 32 (the embeddings_project linear), GELU classification head,
    # the discriminator's one logit per token, the generator's masked-LM head
    "electra-cls": lambda: (transformers.ElectraForSequenceClassification, electra_config()),
    "electra-disc": lambda: (transformers.ElectraForPreTraining, electra_config()),
    "electra-mlm": lambda: (transformers.ElectraForMaskedLM, electra_config()),
    # ModernBERT: a global then a local layer (the band |i - j| <= 2), GeGLU, RoPE; masked LM with bias-free
    # LayerNorms, classification with biases everywhere and mean pooling
    "modernbert-mlm": lambda: (transformers.ModernBertForMaskedLM, modernbert_config()),
    "modernbert-cls": lambda: (transformers.ModernBertForSequenceClassification,
                               modernbert_config(norm_bias=True, attention_bias=True, mlp_bias=True,
                                                 classifier_bias=True, classifier_pooling="mean")),
    # DeBERTa-v3's layout: relative attention with c2p and p2c terms, log-bucketed positions (6 buckets, 10
    # positions: exact, log-bucketed and clamped offsets all occur at 9 to 11 tokens), share_att_key, LayerNorm'd
    # relative embeddings, no absolute positions, no token types; GELU pooler
    "deberta-v2-cls": lambda: (transformers.DebertaV2ForSequenceClassification, deberta_v2_config()),
    # DeBERTa (v1): fused in_proj with q / v biases, relative positions clamped at 5, absolute positions and
    # token types (the position and token-type shares), DebertaLayerNorm
    "deberta-cls": lambda: (transformers.DebertaForSequenceClassification, transformers.DebertaConfig(
        **TEXT, relative_attention=True, max_relative_positions=5, pos_att_type="c2p|p2c", position_biased_input=True,
        hidden_act="gelu", pooler_hidden_act="gelu", pooler_hidden_size=TEXT["hidden_size"])),
    "vit": lambda: (transformers.ViTForImageClassification, transformers.ViTConfig(**VISION)),
    "deit": lambda: (transformers.DeiTForImageClassification, transformers.DeiTConfig(**VISION)),
    # DINOv2: layer scale and the SwiGLU FFN; with registers: 2 register tokens and the plain GELU MLP
    "dinov2": lambda: (transformers.Dinov2ForImageClassification,
                       transformers.Dinov2Config(**DINO, use_swiglu_ffn=True)),
    "dinov2_with_registers": lambda: (transformers.Dinov2WithRegistersForImageClassification,
                                      transformers.Dinov2WithRegistersConfig(**DINO, num_register_tokens=2)),
}
DINO = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            mlp_ratio=2, num_labels=5)


def distilbert_config():
    return transformers.DistilBertConfig(vocab_size=TEXT["vocab_size"], dim=32, n_layers=2, n_heads=2, hidden_dim=48,
                                         max_position_embeddings=64, num_labels=3, activation="gelu")


def modernbert_config(**kw):
    return transformers.ModernBertConfig(vocab_size=TEXT["vocab_size"], hidden_size=32, intermediate_size=40,
                                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                                         global_attn_every_n_layers=2, local_attention=4, num_labels=3,
                                         pad_token_id=1, bos_token_id=2, eos_token_id=3, cls_token_id=2,
                                         sep_token_id=3, **kw)


def deberta_v2_config(**kw):
    v3 = dict(type_vocab_size=0, relative_attention=True, position_buckets=6, max_relative_positions=10,
              share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False, norm_rel_ebd="layer_norm",
              hidden_act="gelu", pooler_hidden_act="gelu", pooler_hidden_size=TEXT["hidden_size"])
    return transformers.DebertaV2Config(**{**TEXT, **v3, **kw})


def electra_config():
    return transformers.ElectraConfig(**TEXT, embedding_size=24, hidden_act="gelu")


def randomize_encoder(model):
    """Redraws every parameter of an encoder / ViT at a scale where the rules are not trivially linear."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif p.dim() == 4:  # patch-embedding convolution
                p.copy_(torch.randn_like(p) * 1.5 / math.sqrt(p[0].numel()))
            elif "embeddings" in name and "embeddings_project" not in name or name.endswith(("cls_token",
                                                                                            "distillation_token")):
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 1.5 / math.sqrt(p.shape[-1]))
    return model


def tiny(name):
    """A float32 eval-mode encoder / vision model of ENCODERS with fresh random weights."""
    cls, config = ENCODERS[name]()
    return randomize_encoder(cls(config)).float().eval()


def text_inputs(batch=2, n=9, pad_last=0, side="right"):
    """(input_ids, attention_mask, token_type_ids); the last row has `pad_last` padding tokens."""
    ids = torch.randint(2, TEXT["vocab_size"], (batch, n))
    mask = torch.ones(batch, n, dtype=torch.bool)
    if pad_last:
        sl = slice(n - pad_last, n) if side == "right" else slice(0, pad_last)
        mask[-1, sl] = False
        ids[-1, sl] = 1  # RoBERTa's pad id
    types = torch.randint(0, 2, (batch, n))
    return ids, mask, types


def hidden_seed(h):
    """The reference's relevance at the hidden states when explaining last_hidden_state[:, 0, 5]."""
    r = torch.zeros_like(h)
    r[:, 0, 5] = h[:, 0, 5]
    return r, h[:, 0, 5].clone()


def hidden_score(out):
    """The custom score explained for a base encoder: last_hidden_state[:, 0, 5]."""
    return out.last_hidden_state[:, 0, 5]


# ------------------------------------------------------------------------------------------------
# T5 / Flan-T5, mT5, umT5
# ------------------------------------------------------------------------------------------------
T5_VARIANTS = {  # Flan-T5 (T5 v1.1): gated GELU-tanh, no output rescaling; T5 v1.0: ReLU, rescaled tied head
    "flan": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    # mT5: tied embeddings (MT5Config forces them) and never a rescaled output
    "mt5": dict(feed_forward_proj="gated-gelu"),
    # umT5: a bias table in every self-attention layer (3 layers: the bias of layer 2 is not layer 1's), rescaled
    "umt5": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=True, num_layers=3, num_decoder_layers=3),
}
T5_CLASSES = {"mt5": (transformers.MT5Config, transformers.MT5ForConditionalGeneration),
              "umt5": (transformers.UMT5Config, transformers.UMT5ForConditionalGeneration)}
T5_DEFAULT = (transformers.T5Config, transformers.T5ForConditionalGeneration)


def t5_config(variant="flan"):
    kw = dict(vocab_size=101, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=2, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0,
              pad_token_id=0)
    return T5_CLASSES.get(variant, T5_DEFAULT)[0](**{**kw, **T5_VARIANTS[variant]})


def tiny_t5(variant="flan"):
    cfg = t5_config(variant)
    model = T5_CLASSES.get(variant, T5_DEFAULT)[1](cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(0.1 * torch.randn_like(p) + 1.0)
            elif "shared" in name or "relative" in name or "lm_head" in name:
                p.copy_(torch.randn_like(p))
            elif name.endswith(".q.weight"):  # T5's own init: no 1/sqrt(d) in attention, so q is small
                p.copy_(torch.randn_like(p) / (p.shape[-1] * cfg.d_kv) ** 0.5 * 2.0)
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model.float().eval()


def t5_inputs(batch=2, n=29, n_dec=7, pad_from=20):
    """(input_ids, decoder_input_ids, attention_mask); row 1 is padded from `pad_from` on."""
    ids = torch.randint(1, 101, (batch, n))
    dec = torch.randint(1, 101, (batch, n_dec))
    mask = torch.ones(batch, n, dtype=torch.long)
    if batch > 1 and pad_from is not None:
        mask[1, pad_from:] = 0
    return ids, dec, mask


# ------------------------------------------------------------------------------------------------
# The contract: cases, references, entries
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One relevance-against-the-explicit-reference check of an entry."""

    dtype: torch.dtype = F32
    mode: str = "attnlrp"
    rule: str = "epsilon"
    gamma: float = 0.25
    backend: str = "auto"
    tol: float = 1e-5  # relative to the reference's scale (scaled_close.assert_rel_close)
    batch: int = 2
    size: object = None  # the entry's input size (None: its default)
    pad: int = 0  # padding tokens at the end of the last row
    chosen: bool = False  # explain a chosen target (and position) instead of the model's own prediction
    contrast: bool = False  # ... minus a chosen contrast

    @property
    def id(self):
        parts = ["f64" if self.dtype == F64 else "f32", self.mode, self.rule]
        if self.rule != "epsilon" and self.gamma != 0.25:
            parts.append(f"g{self.gamma}")
        if self.backend != "auto":
            parts.append(self.backend)
        if self.contrast:
            parts.append("contrast")
        return "-".join(parts)


@dataclass
class Reference:
    """An entry's explicit float64 reference for one attribution."""

    fields: dict  # Attribution field -> explicit relevance
    score: torch.Tensor  # the explained score per row
    output: torch.Tensor  # the reference forward's output ...
    model_output: object  # ... and a callable giving the model's own, at the same places
    zeros: dict = field(default_factory=dict)  # Attribution field -> bool mask where it must be exactly 0
    position: torch.Tensor | None = None  # the explained index into the padded sequence, per row
    score_scale: float | None = None  # score checked relative to this (max |logit|) instead of to itself


def padded_index(mask, position):
    """Index into the padded sequence of `position` (counted over each row's real tokens)."""
    return torch.tensor([row.nonzero()[position, 0].item() for row in mask.bool()])


def pad_rows(rows, side, pad_id, *others):
    """Pads 1-D rows to one [B, N] batch on `side`; `others` are (rows, fill) padded alike.
    Returns (ids, mask, *padded others)."""
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), n, dtype=torch.bool)
    extra = [torch.full((len(rows), n), fill, dtype=torch.long) for _, fill in others]
    for i, row in enumerate(rows):
        sl = slice(n - len(row), n) if side == "left" else slice(0, len(row))
        ids[i, sl], mask[i, sl] = row, True
        for out, (values, _) in zip(extra, others):
            out[i, sl] = values[i]
    return (ids, mask, *extra)


class Entry:
    """One zoo model. Subclasses fill in the family-specific parts."""

    name: str
    model_type: str
    kind: str
    rules = ("epsilon",)  # linear rules checked in the forward, isolation and save / load contracts
    padding_sides: tuple = ()  # sides of the padded-batch contract (none: the model takes no padding)
    fields: tuple = ("relevance",)  # relevance fields of its Attribution
    aliases: tuple = ()  # (field, field) pairs that must be the very same tensor
    leaf_sum_dim = -1  # the dimension relevance sums over at the input (hidden; pixels: channels)
    output_rel_tol: float | None = None  # None: reference outputs within atol 2e-5, rtol 1e-5; else relative
    cases: tuple = ()

    def __repr__(self):
        return self.name

    def config(self):
        raise NotImplementedError

    def build(self):
        raise NotImplementedError

    def inputs(self, batch=1, size=None, pad=0) -> dict:
        raise NotImplementedError

    def main(self, out):
        """The model's main output tensor."""
        return out.logits

    def outputs(self, model, kwargs):
        return self.main(model(**kwargs))

    def task_kwargs(self) -> dict:
        """What `attribute` always needs for this head (a masked-LM position, a custom score)."""
        return {}

    def padding_kwargs(self) -> dict:
        return self.task_kwargs()

    def explain(self, case, inputs) -> dict:
        """attribute's target / contrast / position for `case`."""
        return {}

    def attribute(self, model, inputs, case=None, **kw):
        """lrp_triton.attribute on `inputs` with this head's arguments (and `case`'s mode, backend, rule)."""
        args = dict(inputs, **self.task_kwargs(), **kw)
        if case is not None:
            args.update(mode=case.mode, backend=case.backend)
            if case.rule != "epsilon":
                args.update(linear_rule=case.rule, gamma=case.gamma)
        return lrp_triton.attribute(model, **args)

    def reference(self, model, inputs, result, case, request) -> Reference:
        raise NotImplementedError

    def leaf(self, model, inputs):
        """(x, kwargs): a differentiable input leaf x (relevance = x * grad) and the forward kwargs using it."""
        ids = inputs["input_ids"]
        x = model.get_input_embeddings()(ids).detach().requires_grad_()
        kwargs = {k: v for k, v in inputs.items() if k != "input_ids"}
        return x, dict(kwargs, inputs_embeds=x)

    def explained(self, out, result):
        """The score `result` explains, per row, from the model's outputs (no padding)."""
        raise NotImplementedError

    def scalar(self, out):
        """A scalar of the outputs whose input gradient the isolation contract compares."""
        raise NotImplementedError

    def padded(self, side):
        """(batched inputs, [single-row inputs], {field: bool mask of the real entries})."""
        raise NotImplementedError


def chosen_request(case, inputs, *, position, vocab):
    """attribute's keywords of a `chosen` case: one position, a random target per row (and a contrast)."""
    if not case.chosen:
        return {}
    b = inputs["input_ids"].shape[0]
    kw = dict(position=position, target=torch.randint(0, vocab, (b,)))
    if case.contrast:
        kw["contrast"] = torch.randint(0, vocab, (b,))
    return kw


class Decoder(Entry):
    kind = "causal_lm"
    padding_sides = ("left", "right")

    def __init__(self, family):
        self.name = family
        self.model_type = VARIANTS[family][0] if family in VARIANTS else family
        self.fields = ("relevance", "position_relevance") if family == "gpt2" else ("relevance",)
        cases = [Case(backend="torch", size=19, chosen=True,
                      contrast=family in ("llama", "gemma2", "gpt2", "granite", "cohere")),
                 # float64 throughout: equal to float64 rounding (a 1e-6 change of the attention factor 1/4 fails
                 # 8 of 9 families); Mixtral and the FLOAT32_ROUTERS keep float32 routing weights (HF's routers
                 # compute the softmax / sigmoid in float32), hence a float32 tolerance (Mixtral: up to 2e-7)
                 Case(dtype=F64, size=19, chosen=True, contrast=True,
                      tol=F64_TOL.get(family, 1e-12))]
        # olmo: weightless LayerNorm; starcoder2: biased LayerNorm, plain GELU-tanh MLP; gpt_neox: parallel residual
        if family in ("llama", "mixtral", "gemma2", "olmo", "starcoder2", "gpt_neox", "gptj", "qwen2_moe",
                      "glm4_moe", "gpt_oss", "deepseek_v3", *DENSE):
            cases.append(Case(backend="triton", batch=1, size=21))
        if family in ("llama", "mixtral", "gpt2", "olmo2", "starcoder2", "gpt_neox", "phi", "qwen2_moe", "phimoe",
                      "glm4_moe", "gpt_oss", "granitemoe", "deepseek_v2", *DENSE):
            cases.append(Case(mode="cp-lrp", size=15))
        self.cases = tuple(cases)

    def config(self):
        return VARIANTS[self.name][1]() if self.name in VARIANTS else FAMILIES[self.name]()

    def build(self):
        return tiny_model(self.model_type, config=self.config())

    def inputs(self, batch=1, size=None, pad=0):
        n = size or 19
        ids = torch.randint(0, 101, (batch, n))
        if not pad:
            return {"input_ids": ids}
        mask = torch.ones(batch, n, dtype=torch.bool)
        mask[-1, n - pad:] = False
        ids[-1, n - pad:] = 0
        return {"input_ids": ids, "attention_mask": mask}

    def explain(self, case, inputs):
        return chosen_request(case, inputs, position=-3, vocab=101)

    def reference(self, model, inputs, result, case, request):
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask", torch.ones_like(ids, dtype=torch.bool)).bool()
        positions = padded_index(mask, request.get("position", -1))
        target = request.get("target", result.target)
        args = (model, ids, mask, positions, target, request.get("contrast"), case.mode)
        if self.name == "gpt2":
            r, r_pos, score, z = gpt2_reference(*args)
            fields = {"relevance": r, "position_relevance": r_pos}
        elif self.model_type in ("gpt_neox", "gptj", "phi"):
            walker = gpt_neox_reference if self.model_type == "gpt_neox" else shared_norm_parallel_reference
            r, score, z = walker(*args)
            fields = {"relevance": r}
        else:
            r, score, z = decoder_reference(*args)
            fields = {"relevance": r}
        rows = torch.arange(len(ids))
        hidden = (torch.arange(ids.shape[1])[None] > positions[:, None]) | ~mask  # causal, and padding
        return Reference(fields, score, z, lambda: self.outputs(model, inputs)[rows, positions],
                         zeros={f: hidden for f in fields}, position=positions)

    def explained(self, out, result):
        return out.logits[:, -1].gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return out.logits[:, -1].max()

    def padding_kwargs(self):
        return dict(position=-2)

    def padded(self, side):
        rows = [torch.randint(1, 101, (n,)) for n in (13, 8)]
        ids, mask = pad_rows(rows, side, 0)
        return ({"input_ids": ids, "attention_mask": mask}, [{"input_ids": r[None]} for r in rows],
                {f: mask for f in self.fields})


def tiny_classifier(family: str, config=None, num_labels: int = 3):
    """A float32 eval-mode *ForSequenceClassification of a decoder family (pad id 0), fresh random weights."""
    config = config if config is not None else FAMILIES[family]()
    config.num_labels, config.pad_token_id = num_labels, 0
    return randomize(transformers.AutoModelForSequenceClassification.from_config(config)).float().eval()


class DecoderClassifier(Decoder):
    """A decoder family's *ForSequenceClassification: the class logit at each row's last real token
    (ids drawn from 1.., so that only padding holds the pad id 0)."""

    def __init__(self, family):
        self.name, self.model_type = f"{family}-cls", family
        self.fields = ("relevance", "position_relevance") if family == "gpt2" else ("relevance",)
        cases = [Case(backend="torch", chosen=True), Case(dtype=F64, chosen=True, pad=4, tol=F64_TOL.get(family, 1e-12)),
                 Case(backend="torch", pad=5)]
        if family == "llama":
            cases += [Case(backend="triton", batch=1, size=21), Case(mode="cp-lrp", size=15, pad=3)]
        self.cases = tuple(cases)

    def config(self):
        return FAMILIES[self.model_type]()

    def build(self):
        return tiny_classifier(self.model_type)

    def inputs(self, batch=1, size=None, pad=0):
        inputs = super().inputs(batch, size, pad)
        ids, real = inputs["input_ids"], inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).bool()
        inputs["input_ids"] = torch.where((ids == 0) & real, 1, ids)  # the pad id 0 at padding only
        return inputs

    def explain(self, case, inputs):
        return dict(target=torch.randint(0, 3, (inputs["input_ids"].shape[0],))) if case.chosen else {}

    def reference(self, model, inputs, result, case, request):
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask", torch.ones_like(ids, dtype=torch.bool)).bool()
        positions = padded_index(mask, -1)
        args = (model, ids, mask, positions, request.get("target", result.target), None, case.mode)
        fields = {}
        if self.model_type == "gpt2":
            r, fields["position_relevance"], score, z = gpt2_reference(*args, head=model.score)
        elif self.model_type in ("gpt_neox", "gptj", "phi"):
            walker = gpt_neox_reference if self.model_type == "gpt_neox" else shared_norm_parallel_reference
            r, score, z = walker(*args, head=model.score)
        else:
            r, score, z = decoder_reference(*args, head=model.score)
        fields["relevance"] = r
        after = (torch.arange(ids.shape[1])[None] > positions[:, None]) | ~mask
        return Reference(fields, score, z, lambda: self.outputs(model, inputs), zeros={f: after for f in fields},
                         position=positions)

    def explained(self, out, result):
        return out.logits.gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return out.logits.max()

    def padding_kwargs(self):
        return {}


CLASSIFIERS = ("llama", "gemma2", "gpt2", "gpt_neox", "phi", "olmo3")  # every other family: test_decoder_classifier


class Text(Entry):
    """BERT-family encoders (BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT, ELECTRA): sequence
    classification (-cls), masked LM (-mlm, position 3), ELECTRA's discriminator (-disc, its logit at
    position 3) or the base model explaining last_hidden_state[:, 0, 5] (-base)."""

    kind = "encoder"
    rules = ("epsilon", "gamma", "gamma-signed")
    fields = ("relevance", "position_relevance", "token_type_relevance")

    def __init__(self, name):
        self.model_type, self.head = name.rsplit("-", 1)
        self.name = name
        # the CLS token sits at index 0: left padding would make the pooled token a pad token
        self.padding_sides = ("left", "right") if self.head in ("mlm", "disc") else ("right",)
        self.types = self.model_type != "distilbert"  # DistilBERT has no token-type embeddings
        if not self.types:
            self.fields = ("relevance", "position_relevance")
        cases = [Case(backend="torch", pad=3)]
        if name in ("bert-cls", "bert-base", "roberta-mlm"):  # the sign-aware gamma rule end to end
            cases.append(Case(rule="gamma-signed", backend="torch", pad=2, tol=2e-5))
        cases += [Case(dtype=F64, rule=rule, backend="torch", pad=3, tol=1e-12) for rule in ("epsilon", "gamma-signed")]
        if name in ("bert-cls", "xlm-roberta-cls", "distilbert-cls", "electra-cls"):
            # non-causal attention with a padding mask, LayerNorm and GELU in Triton
            cases += [Case(backend="triton", pad=3), Case(mode="cp-lrp", backend="torch", pad=2)]
        if name in ("electra-disc", "distilbert-mlm"):
            cases.append(Case(mode="cp-lrp", backend="torch", pad=2))
        self.cases = tuple(cases)

    def config(self):
        return ENCODERS[self.name]()[1]

    def build(self):
        return tiny(self.name)

    def inputs(self, batch=1, size=None, pad=0):
        ids, mask, types = text_inputs(batch, size or 9, pad_last=pad)
        return {"input_ids": ids, "attention_mask": mask, **({"token_type_ids": types} if self.types else {})}

    def main(self, out):
        return out.last_hidden_state if self.head == "base" else out.logits

    def task_kwargs(self):
        return {"mlm": dict(position=3), "disc": dict(position=3), "base": dict(target=hidden_score)}.get(self.head, {})

    def reference(self, model, inputs, result, case, request):
        ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids")
        kw = dict(mode=case.mode, rule=case.rule, gamma=case.gamma)
        position = padded_index(mask, 3) if self.head in ("mlm", "disc") else None
        if self.head == "base":
            ref = bert_reference(model, ids, mask, types, seed=hidden_seed, **kw)
        else:
            ref = bert_reference(model, ids, mask, types, target=result.target, position=position, **kw)
        output = ref["out"]
        real = mask[..., None].expand_as(output) if self.head == "base" else None  # the hidden states of real tokens

        def model_output():
            out = self.outputs(model, inputs)
            if position is not None:
                return out[torch.arange(len(ids)), position]
            return out if real is None else out[real]
        if real is not None:
            output = output[real]
        fields = {"relevance": ref["word"], "position_relevance": ref["pos"], "token_type_relevance": ref["type"]}
        fields = {f: fields[f] for f in self.fields}
        return Reference(fields, ref["score"], output, model_output, zeros={f: ~mask for f in fields},
                         position=position)

    def explained(self, out, result):
        if self.head == "base":
            return hidden_score(out)
        if self.head == "disc":
            return out.logits[:, 3]
        logits = out.logits[:, 3] if self.head == "mlm" else out.logits
        return logits.gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return self.main(out)[:, 2].max()

    def padded(self, side):
        lengths = (11, 6)
        rows = [torch.randint(2, TEXT["vocab_size"], (n,)) for n in lengths]
        types = [torch.randint(0, 2, (n,)) for n in lengths]
        ids, mask, tt = pad_rows(rows, side, 1, (types, 0))
        if not self.types:
            return ({"input_ids": ids, "attention_mask": mask}, [{"input_ids": r[None]} for r in rows],
                    {f: mask for f in self.fields})
        singles = [{"input_ids": r[None], "token_type_ids": t[None]} for r, t in zip(rows, types)]
        return ({"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}, singles,
                {f: mask for f in self.fields})


class ModernBert(Text):
    """ModernBERT: masked LM (-mlm, position 3) and sequence classification with mean pooling (-cls), no
    position or token-type tables (RoPE), against reference_modernbert."""

    fields = ("relevance",)
    rules = ("epsilon", "gamma-signed")  # (the plain gamma rule on encoders: BERT's entries)
    output_rel_tol = 1e-5  # tied decoder: float32 forward noise of a few 1e-5 absolute on the larger logits

    def __init__(self, name):
        super().__init__(name)
        self.types = False
        self.padding_sides = ("left", "right")  # masked LM, mean pooling: either side
        # float64: HF's ModernBERT rotates q and k in float32 whatever the model's dtype (apply_rotary_pos_emb
        # calls q.float()), forward and backward, so a float64 model is float32-accurate there: tol 1e-6
        cases = [Case(backend="torch", pad=3), Case(dtype=F64, backend="torch", pad=3, tol=1e-6)]
        if self.head == "mlm":
            cases += [Case(backend="triton", pad=3), Case(mode="cp-lrp", backend="torch", pad=2),
                      Case(rule="gamma-signed", backend="torch", pad=2, tol=2e-5)]
        self.cases = tuple(cases)

    def reference(self, model, inputs, result, case, request):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        position = padded_index(mask, 3) if self.head == "mlm" else None
        ref = modernbert_reference(model, ids, mask, target=result.target, position=position, mode=case.mode,
                                   rule=case.rule, gamma=case.gamma)

        def model_output():
            out = self.outputs(model, inputs)
            return out if position is None else out[torch.arange(len(ids)), position]
        return Reference({"relevance": ref["word"]}, ref["score"], ref["out"], model_output,
                         zeros={"relevance": ~mask}, position=position)


class Deberta(Text):
    """DeBERTa-v2 / v3 and DeBERTa (v1) (reference_deberta): "deberta-v2-cls" has the v3 layout (no token
    types, no absolute positions: word relevance only), "deberta-cls" v1's with both."""

    def __init__(self, name):
        super().__init__(name)
        cfg = self.config()
        self.types = cfg.type_vocab_size > 0
        self.fields = ("relevance", *(("position_relevance",) if cfg.position_biased_input else ()),
                       *(("token_type_relevance",) if self.types else ()))
        if self.model_type == "deberta-v2":
            self.cases = (Case(backend="torch", pad=3), Case(backend="triton", pad=3),
                          Case(mode="cp-lrp", backend="torch", pad=2),
                          Case(dtype=F64, backend="torch", pad=3, tol=1e-12),
                          Case(dtype=F64, rule="gamma-signed", backend="torch", pad=3, tol=1e-12))
        else:  # v1 shares the op and the layers: its own attention layout in float32 and float64
            self.rules = ("epsilon", "gamma-signed")
            self.cases = (Case(backend="torch", pad=3), Case(dtype=F64, rule="gamma-signed", backend="torch", pad=3,
                                                             tol=1e-12))

    def reference(self, model, inputs, result, case, request):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        ref = deberta_reference(model, ids, mask, inputs.get("token_type_ids"), target=result.target, mode=case.mode,
                                rule=case.rule, gamma=case.gamma)
        every = {"relevance": ref["word"], "position_relevance": ref["pos"], "token_type_relevance": ref["type"]}
        fields = {f: every[f] for f in self.fields}
        return Reference(fields, ref["score"], ref["out"], lambda: self.outputs(model, inputs),
                         zeros={f: ~mask for f in fields})


class Vision(Entry):
    kind = "vision"
    rules = ("epsilon", "gamma", "gamma-signed")
    fields = ("relevance", "patch_relevance", "cls_relevance", "position_relevance")
    aliases = (("pixel_relevance", "relevance"),)
    leaf_sum_dim = 1

    def __init__(self, name):
        self.name = self.model_type = name
        cases = [Case(backend="torch", gamma=0.5), Case(rule="gamma-signed", gamma=0.5, backend="torch", tol=2e-5)]
        if name == "vit":
            cases += [Case(backend="triton", batch=1, rule="gamma-signed", tol=2e-5), Case(mode="cp-lrp")]
        self.cases = tuple(cases)

    def config(self):
        return ENCODERS[self.name]()[1]

    def build(self):
        return tiny(self.name)

    def inputs(self, batch=1, size=None, pad=0):
        return {"pixel_values": torch.randn(batch, 3, 32, 32)}

    def reference(self, model, inputs, result, case, request):
        px = inputs["pixel_values"]
        ref = vit_reference(model, px, result.target, mode=case.mode, rule=case.rule, gamma=case.gamma)
        fields = {"relevance": ref["pixel"], "patch_relevance": ref["patch"], "cls_relevance": ref["cls"],
                  "position_relevance": ref["pos"]}
        return Reference(fields, ref["score"], ref["logits"], lambda: self.outputs(model, inputs))

    def leaf(self, model, inputs):
        x = inputs["pixel_values"].to(model.dtype).clone().requires_grad_()
        return x, {"pixel_values": x}

    def explained(self, out, result):
        return out.logits.gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return out.logits.max()


class Dinov2(Vision):
    """DINOv2 image classification (cat(CLS, mean of the patch tokens) -> classifier), against reference_dinov2;
    with registers, `cls_relevance` holds CLS and the register tokens."""

    rules = ("epsilon", "gamma-signed")  # (the plain gamma rule on vision: ViT's and DeiT's entries)

    def __init__(self, name):
        super().__init__(name)
        cases = [Case(backend="torch"), Case(dtype=F64, backend="torch", tol=1e-12)]
        if name == "dinov2":
            cases += [Case(backend="triton", batch=1), Case(mode="cp-lrp", backend="torch"),
                      Case(rule="gamma-signed", gamma=0.5, backend="torch", tol=2e-5)]
        self.cases = tuple(cases)

    def build(self):
        model = tiny(self.name)
        with torch.no_grad():  # layer scales of either sign and size (randomize_encoder draws them near 0)
            for name, p in model.named_parameters():
                if name.endswith("lambda1"):
                    p.copy_(0.6 + 0.4 * torch.randn_like(p))
        return model

    def reference(self, model, inputs, result, case, request):
        ref = dinov2_reference(model, inputs["pixel_values"], result.target, mode=case.mode, rule=case.rule,
                               gamma=case.gamma)
        fields = {"relevance": ref["pixel"], "patch_relevance": ref["patch"], "cls_relevance": ref["cls"],
                  "position_relevance": ref["pos"]}
        return Reference(fields, ref["score"], ref["logits"], lambda: self.outputs(model, inputs))


class T5(Entry):
    """T5 / Flan-T5, mT5, umT5: `relevance` at the encoder tokens, `decoder_relevance` at the decoder prefix."""

    kind = "seq2seq"
    fields = ("relevance", "decoder_relevance")
    padding_sides = ("right",)
    output_rel_tol = 1e-5  # tied, unscaled embeddings: the logits are large

    def __init__(self, variant):
        self.variant = variant
        self.model_type = variant if variant in T5_CLASSES else "t5"
        self.name = variant if variant in T5_CLASSES else f"t5-{variant}"
        # T5's relative bias, gated or ReLU feed-forward and the rescaled tied head over 2 x 2 layers of
        # float32: 5e-5 of max |R|; the score (target - contrast logit) within 1e-5 of max |logit|
        cases = [Case(chosen=True, contrast=True, pad=9, tol=5e-5),
                 Case(dtype=F64, chosen=True, contrast=True, pad=9, tol=1e-12)]
        if variant in ("flan", "umt5"):
            cases.append(Case(backend="triton", batch=1, size=(23, 5), tol=5e-5))
        if variant in ("flan", "mt5", "umt5"):
            cases.append(Case(mode="cp-lrp", batch=1, size=(23, 5), tol=5e-5))
        self.cases = tuple(cases)

    def config(self):
        return t5_config(self.variant)

    def build(self):
        return tiny_t5(self.variant)

    def inputs(self, batch=1, size=None, pad=0):
        n, n_dec = size or (29, 7)
        ids, dec, mask = t5_inputs(batch, n, n_dec, pad_from=None)
        if pad:
            mask[-1, n - pad:] = 0
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}

    def outputs(self, model, kwargs):  # lrp_triton's T5 attention keeps no cache
        return model(**kwargs, use_cache=False).logits

    def leaf(self, model, inputs):
        x, kwargs = super().leaf(model, inputs)
        return x, dict(kwargs, use_cache=False)

    def explain(self, case, inputs):
        if not case.chosen:
            return {}
        b = inputs["input_ids"].shape[0]
        return dict(position=4, target=torch.randint(0, 101, (b,)), contrast=torch.randint(0, 101, (b,)))

    def reference(self, model, inputs, result, case, request):
        ids, mask, dec = inputs["input_ids"], inputs["attention_mask"], inputs["decoder_input_ids"]
        positions = padded_index(torch.ones_like(dec), request.get("position", -1))
        r_enc, r_dec, score, z = t5_reference(model, ids, mask, dec, positions, request.get("target", result.target),
                                              request.get("contrast"), case.mode)
        rows = torch.arange(len(ids))
        after = torch.arange(dec.shape[1])[None] > positions[:, None]  # causal decoder
        return Reference({"relevance": r_enc, "decoder_relevance": r_dec}, score, z,
                         lambda: self.outputs(model, inputs)[rows, positions],
                         zeros={"relevance": ~mask.bool(), "decoder_relevance": after}, position=positions,
                         score_scale=z.abs().max().item())

    def explained(self, out, result):
        return out.logits[:, -1].gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return out.logits[:, -1].max()

    def padded(self, side):
        rows = [torch.randint(1, 101, (n,)) for n in (29, 20)]
        dec = torch.randint(1, 101, (2, 7))
        ids, mask = pad_rows(rows, side, 0)
        singles = [{"input_ids": r[None], "decoder_input_ids": dec[i][None]} for i, r in enumerate(rows)]
        return ({"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}, singles,
                {"relevance": mask, "decoder_relevance": torch.ones_like(dec, dtype=torch.bool)})


# ------------------------------------------------------------------------------------------------
# BART / mBART / Marian
# ------------------------------------------------------------------------------------------------
BART_COMMON = dict(vocab_size=101, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, max_position_embeddings=64,
                   pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, activation_function="gelu")
BART_FAMILIES = {  # BART: post-norm, sqrt(d_model)-scaled embeddings; mBART: pre-norm with final LayerNorms
    "bart": lambda: (transformers.BartForConditionalGeneration, transformers.BartConfig(**BART_COMMON,
                                                                                       scale_embedding=True)),
    "mbart": lambda: (transformers.MBartForConditionalGeneration, transformers.MBartConfig(**BART_COMMON)),
    # Marian: fixed sinusoidal positions, no embedding LayerNorm, scaled embeddings, SiLU ("swish")
    "marian": lambda: (transformers.MarianMTModel, transformers.MarianConfig(
        **{**BART_COMMON, "activation_function": "swish"}, scale_embedding=True)),
}


def tiny_bart(name):
    cls, cfg = BART_FAMILIES[name]()
    model = cls(cfg)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "layer_norm" in pname or "layernorm" in pname:
                p.copy_(0.1 * torch.randn_like(p) + (1.0 if pname.endswith("weight") else 0.0))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed_positions" in pname and not p.requires_grad:  # Marian's fixed sinusoids
                continue
            elif "embed" in pname or "shared" in pname:
                p.copy_(torch.randn_like(p) * (0.2 if cfg.scale_embedding else 1.0))
            else:
                p.copy_(torch.randn_like(p) * 1.5 / p.shape[-1] ** 0.5)
        model.final_logits_bias.copy_(torch.randn_like(model.final_logits_bias))  # a buffer: drawn too
    return model.float().eval()


class Bart(T5):
    """BART / mBART / Marian: the T5 entry's inputs and checks, BART's model and reference."""

    output_rel_tol = 1e-5

    def __init__(self, name):
        self.variant, self.name, self.model_type = name, name, name
        self.cases = (Case(chosen=True, contrast=True, pad=9, tol=5e-5),
                      Case(dtype=F64, chosen=True, contrast=True, pad=9, tol=1e-12),
                      Case(backend="triton", batch=1, size=(23, 5), tol=5e-5),
                      Case(mode="cp-lrp", batch=1, size=(23, 5), tol=5e-5))

    def config(self):
        return BART_FAMILIES[self.name]()[1]

    def leaf(self, model, inputs):
        """The encoder's inputs_embeds as the encoder computes them from ids: Marian scales them by
        embed_scale outside embed_tokens, and not when handed inputs_embeds (BART inside the module)."""
        encoder = model.get_encoder()
        ids = inputs["input_ids"]
        x = (encoder.embed_tokens(ids) * getattr(encoder, "embed_scale", 1.0)).detach().requires_grad_()
        kwargs = {k: v for k, v in inputs.items() if k != "input_ids"}
        return x, dict(kwargs, inputs_embeds=x, use_cache=False)

    def build(self):
        return tiny_bart(self.name)

    def reference(self, model, inputs, result, case, request):
        ids, mask, dec = inputs["input_ids"], inputs["attention_mask"], inputs["decoder_input_ids"]
        positions = padded_index(torch.ones_like(dec), request.get("position", -1))
        r_enc, r_dec, score, z = bart_reference(model, ids, mask, dec, positions, request.get("target", result.target),
                                                request.get("contrast"), case.mode)
        rows = torch.arange(len(ids))
        after = torch.arange(dec.shape[1])[None] > positions[:, None]
        return Reference({"relevance": r_enc, "decoder_relevance": r_dec}, score, z,
                         lambda: self.outputs(model, inputs)[rows, positions],
                         zeros={"relevance": ~mask.bool(), "decoder_relevance": after}, position=positions,
                         score_scale=z.abs().max().item())


# ------------------------------------------------------------------------------------------------
# CLIP and SigLIP: the joint model (image-text similarity) and each tower alone
# ------------------------------------------------------------------------------------------------
TOWER_TEXT = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=16, pad_token_id=1, bos_token_id=0, eos_token_id=60)
TOWER_VISION = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, intermediate_size=48,
                    num_hidden_layers=2, num_attention_heads=2)
TWO_TOWER = {  # family -> (config class, joint, vision tower, text tower, joint config extras)
    "clip": (transformers.CLIPConfig, transformers.CLIPModel, transformers.CLIPVisionModelWithProjection,
             transformers.CLIPTextModel, dict(projection_dim=24)),
    "siglip": (transformers.SiglipConfig, transformers.SiglipModel, transformers.SiglipVisionModel,
               transformers.SiglipTextModel, {}),
}


def two_tower_config(family, part):
    """The config of a CLIP / SigLIP joint model or tower. CLIP's text tower alone keeps HF's legacy
    eos_token_id 2 (it pools at the largest id); the joint model's pools at the first eos id 60."""
    config_cls, *_ = TWO_TOWER[family]
    config = config_cls(text_config=TOWER_TEXT, vision_config=TOWER_VISION, **TWO_TOWER[family][4])
    if part == "joint":
        return config
    tower = config.vision_config if part == "vision" else config.text_config
    if family == "clip" and part == "text":
        tower.eos_token_id = 2
    if family == "clip" and part == "vision":
        tower.projection_dim = 24
    return tower


def randomize_two_tower(model):
    """randomize_encoder's scales for a CLIP / SigLIP model; logit_scale = log 3, SigLIP's logit_bias -0.7."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 0 or name in ("logit_scale", "logit_bias"):
                continue
            if p.dim() == 1 and "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif p.dim() == 4:
                p.copy_(torch.randn_like(p) * 1.5 / math.sqrt(p[0].numel()))
            elif "embedding" in name:
                p.copy_(torch.randn_like(p))
            else:  # linears, the packed in_proj of SigLIP's pooling head, its probe
                p.copy_(torch.randn_like(p) * 1.5 / math.sqrt(p.shape[-1]))
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(math.log(3.0))
        if hasattr(model, "logit_bias"):
            model.logit_bias.fill_(-0.7)
    return model.float().eval()


def tower_text_inputs(batch, n, pad, side):
    """ids in [3, 59] ending (before padding) in the end-of-text id 60 (also the largest id), pad id 1."""
    ids = torch.randint(3, 60, (batch, n))
    mask = torch.ones(batch, n, dtype=torch.bool)
    if pad:
        sl = slice(n - pad, n) if side == "right" else slice(0, pad)
        mask[-1, sl], ids[-1, sl] = False, 1
    for row in range(batch):
        ids[row, mask[row].nonzero().max()] = 60
    return ids, mask


class TwoTowerHooks:
    """The text leaf of a model that reads its ids itself: the token embedding's next output is replaced by x."""

    @staticmethod
    def text_leaf(model, inputs):
        emb = getattr(model, "text_model", model).embeddings.token_embedding
        x = emb(inputs["input_ids"]).detach().requires_grad_()

        def hook(module, args, output):
            handle.remove()
            return x
        handle = emb.register_forward_hook(hook)
        return x, dict(inputs)


class TwoTower(Entry):
    """CLIPModel / SiglipModel: `attribute(model, input_ids, pixel_values)` explains each row's image-text
    similarity into tokens and pixels. SigLIP's text tower pools the last token: padding on the left."""

    kind = "contrastive"
    output_rel_tol = 1e-5

    def __init__(self, family):
        self.name = self.model_type = family
        self.side = "right" if family == "clip" else "left"
        self.padding_sides = ("left", "right") if family == "clip" else ("left",)
        self.fields = ("relevance", "position_relevance", "pixel_relevance", "patch_relevance",
                       *(("cls_relevance",) if family == "clip" else ()))
        cases = [Case(backend="torch", pad=2), Case(dtype=F64, backend="torch", pad=2, tol=1e-12)]
        # Triton (interpreted) once: the pooling head's one query over 16 keys, GELU-tanh, a padded text
        # (CLIP's QuickGELU kernel: test_mlp_ops; its causal text attention is the decoders' kernel)
        cases.append(Case(mode="cp-lrp", backend="torch", pad=2) if family == "clip"
                     else Case(mode="cp-lrp", backend="triton", pad=2))
        self.cases = tuple(cases)

    def config(self):
        return two_tower_config(self.name, "joint")

    def build(self):
        return randomize_two_tower(TWO_TOWER[self.name][1](self.config()))

    def inputs(self, batch=1, size=None, pad=0):
        ids, mask = tower_text_inputs(batch, size or 9, pad, self.side)
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(batch, 3, 32, 32)}

    def main(self, out):
        return out.logits_per_image

    def reference(self, model, inputs, result, case, request):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        ref = joint_reference(model, ids, mask, inputs["pixel_values"], case.mode)
        fields = {"relevance": ref["word"], "position_relevance": ref["pos"], "pixel_relevance": ref["pixel"],
                  "patch_relevance": ref["patch"], "cls_relevance": ref["cls"]}
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # the numbering attribute passes

        def model_output():
            return model(**inputs, position_ids=positions).logits_per_image.diag()
        return Reference({f: fields[f] for f in self.fields}, ref["score"], ref["logits"], model_output,
                         zeros={"relevance": ~mask, "position_relevance": ~mask})

    def leaf(self, model, inputs):
        return TwoTowerHooks.text_leaf(model, inputs)

    def explained(self, out, result):
        return out.logits_per_image.diag()

    def scalar(self, out):
        return out.logits_per_image.max()

    def padded(self, side):
        rows = [torch.randint(3, 60, (n,)) for n in (11, 6)]
        for r in rows:
            r[-1] = 60
        ids, mask = pad_rows(rows, side, 1)
        px = torch.randn(2, 3, 32, 32)
        singles = [{"input_ids": r[None], "pixel_values": px[i:i + 1]} for i, r in enumerate(rows)]
        return ({"input_ids": ids, "attention_mask": mask, "pixel_values": px}, singles,
                {"relevance": mask, "position_relevance": mask})


class TowerVision(Vision):
    """A CLIP / SigLIP vision tower alone (CLIP: with its projection): an int target explains a dimension
    of its embedding (image_embeds; SigLIP: the attention-pooling head's pooler_output)."""

    def __init__(self, family):
        self.family, self.name, self.model_type = family, f"{family}-vision", f"{family}_vision_model"
        self.fields = ("relevance", "patch_relevance", "position_relevance",
                       *(("cls_relevance",) if family == "clip" else ()))
        # the gamma rules: once, on SigLIP's (its pooling head's packed in-projection and out_proj); CLIP's
        # convolution and linears are ViT's
        self.rules = ("epsilon", "gamma-signed") if family == "siglip" else ("epsilon",)
        cases = [Case(backend="torch"), Case(dtype=F64, backend="torch", tol=1e-12)]
        if family == "siglip":
            cases.append(Case(rule="gamma-signed", gamma=0.5, backend="torch", tol=2e-5))
        self.cases = tuple(cases)

    def config(self):
        return two_tower_config(self.family, "vision")

    def build(self):
        return randomize_two_tower(TWO_TOWER[self.family][2](self.config()))

    def main(self, out):
        return out.image_embeds if self.family == "clip" else out.pooler_output

    def explain(self, case, inputs):
        return {"target": [3, 17][:len(inputs["pixel_values"])]}

    def reference(self, model, inputs, result, case, request):
        ref = vector_reference(model, inputs, result.target, case.mode, case.rule, case.gamma)
        fields = {"relevance": ref["pixel"], "patch_relevance": ref["patch"], "cls_relevance": ref["cls"],
                  "position_relevance": ref["pos"]}
        return Reference({f: fields[f] for f in self.fields}, ref["score"], ref["out"],
                         lambda: self.outputs(model, inputs))

    def explained(self, out, result):
        return self.main(out).gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return self.main(out).max()


class TowerText(Entry):
    """A CLIP / SigLIP text tower alone: an int target explains a dimension of its pooler_output (CLIP: the
    final-norm state at the end-of-text token, legacy eos_token_id 2: the largest id; SigLIP: its head)."""

    kind = "encoder"
    fields = ("relevance", "position_relevance")

    def __init__(self, family):
        self.family, self.name, self.model_type = family, f"{family}-text", f"{family}_text_model"
        self.side = "right" if family == "clip" else "left"
        self.padding_sides = ("left", "right") if family == "clip" else ("left",)
        self.cases = (Case(backend="torch", pad=2), Case(dtype=F64, backend="torch", pad=2, tol=1e-12))

    def config(self):
        return two_tower_config(self.family, "text")

    def build(self):
        return randomize_two_tower(TWO_TOWER[self.family][3](self.config()))

    def inputs(self, batch=1, size=None, pad=0):
        ids, mask = tower_text_inputs(batch, size or 9, pad, self.side)
        return {"input_ids": ids, "attention_mask": mask}

    def main(self, out):
        return out.pooler_output

    def explain(self, case, inputs):
        return {"target": 5}

    def reference(self, model, inputs, result, case, request):
        mask = inputs["attention_mask"]
        ref = vector_reference(model, inputs, result.target, case.mode, case.rule, case.gamma)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return Reference({"relevance": ref["word"], "position_relevance": ref["pos"]}, ref["score"], ref["out"],
                         lambda: model(**inputs, position_ids=positions).pooler_output,
                         zeros={"relevance": ~mask, "position_relevance": ~mask})

    def leaf(self, model, inputs):
        return TwoTowerHooks.text_leaf(model, inputs)

    def explained(self, out, result):
        return out.pooler_output.gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return out.pooler_output.max()

    def padding_kwargs(self):
        return {"target": 5}

    def padded(self, side):
        batch, singles, masks = TwoTower.padded(self, side)
        batch.pop("pixel_values")
        for row in singles:
            row.pop("pixel_values")
        return batch, singles, masks


# ------------------------------------------------------------------------------------------------
# Vision-language models (Qwen2-VL, Qwen2.5-VL, LLaVA, LLaVA-NeXT)
# ------------------------------------------------------------------------------------------------
VLM_TEXT = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                rope_parameters={"rope_type": "default", "rope_theta": 1000.0, "mrope_section": [2, 3, 3]})
VLM_VISION = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=2, temporal_patch_size=2,
                  spatial_merge_size=2, in_channels=3)
VLM_TOKENS = dict(image_token_id=90, video_token_id=91, vision_start_token_id=92, vision_end_token_id=93)
VLM_IMAGES = ((1, 4, 4), (1, 2, 4), (1, 4, 2))  # (t, h, w) patches: 4, 2 and 2 image tokens


def randomize_vlm(model):
    """Redraws every parameter at a scale where the rules are not trivially linear (norm weights near 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln_q" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 1.5 / math.sqrt(p[0].numel()))
    return model.float().eval()


def vlm_row(n_text, images):
    """Token ids of one prompt: text, then each image as <start> image tokens <end>, then text."""
    pieces = [torch.randint(3, 90, (n_text - n_text // 2,))]
    for t, h, w in images:
        pieces += [torch.tensor([92]), torch.full((t * h * w // 4,), 90), torch.tensor([93])]
    pieces.append(torch.randint(3, 90, (n_text // 2,)))
    return torch.cat(pieces)


def vlm_batch(rows, images, side="right"):
    """The processor's outputs for prompts `rows` showing `images` (a list of grids per row)."""
    ids, mask = pad_rows(rows, side, 0)
    grids = [g for per_row in images for g in per_row]
    grid = torch.tensor(grids, dtype=torch.long).reshape(-1, 3)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(int(grid.prod(-1).sum()), 24),
            "image_grid_thw": grid, "mm_token_type_ids": (ids == 90).long()}


class VisionLanguage(Entry):
    kind = "vision_language"
    padding_sides = ("left", "right")
    fields = ("relevance", "text_relevance")

    images = VLM_IMAGES

    def __init__(self, name):
        self.name = self.model_type = name
        self.cases = (Case(backend="torch", chosen=True, pad=3),
                      # float64: HF's vision rotary computes q and k in float32 (apply_rotary_pos_emb_vision casts
                      # them, and its cos / sin tables are float32), so the forward and the gradient through them
                      # carry float32 rounding: score and relevance agree to 1e-8..5e-7 (seed-dependent at these
                      # weights), not to float64 rounding
                      Case(dtype=F64, chosen=True, contrast=True, tol=2e-6),
                      Case(backend="triton", batch=1),
                      Case(mode="cp-lrp", batch=1))

    def config(self):
        return transformers.Qwen2VLConfig(text_config=VLM_TEXT, vision_config=VLM_VISION, **VLM_TOKENS)

    def build(self):
        return randomize_vlm(transformers.Qwen2VLForConditionalGeneration(self.config()))

    def inputs(self, batch=1, size=None, pad=0):
        n = size or 7
        images = [list(self.images[:2])] + [[self.images[2]]] * (batch - 1)  # two images in the first prompt
        length = n + sum(t * h * w // 4 + 2 for t, h, w in images[0])
        rows = [vlm_row(length - sum(t * h * w // 4 + 2 for t, h, w in per_row), per_row) for per_row in images]
        out = vlm_batch(rows, images)  # rows of one length; the last one's last `pad` (text) tokens padding
        if pad:
            out["input_ids"][-1, -pad:] = 0
            out["attention_mask"][-1, -pad:] = False
            out["mm_token_type_ids"][-1, -pad:] = 0
        return out

    def explain(self, case, inputs):
        return chosen_request(case, inputs, position=-2, vocab=97)

    def reference(self, model, inputs, result, case, request):
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        positions = padded_index(mask, request.get("position", -1))
        fields, score, z = vlm_reference(model, ids, mask, inputs["pixel_values"], inputs["image_grid_thw"],
                                         positions, request.get("target", result.target), request.get("contrast"),
                                         case.mode)
        rows = torch.arange(len(ids))
        hidden = (torch.arange(ids.shape[1])[None] > positions[:, None]) | ~mask  # causal, and padding
        return Reference({k: fields[k] for k in self.fields}, score, z,
                         lambda: self.outputs(model, inputs)[rows, positions],
                         zeros={"relevance": hidden, "text_relevance": hidden | (ids == 90)}, position=positions)

    def leaf(self, model, inputs):
        """The merged sequence (word embeddings, image embeddings at the image tokens), with the model's own
        3-D position ids."""
        inner, ids, grid = model.model, inputs["input_ids"], inputs["image_grid_thw"]
        image = torch.cat(inner.get_image_features(inputs["pixel_values"], grid).pooler_output)
        embeds = inner.get_input_embeddings()(ids)
        x = embeds.masked_scatter((ids == 90)[..., None], image.to(embeds.dtype)).detach().requires_grad_()
        position_ids = inner.get_rope_index(ids, inputs["mm_token_type_ids"], grid,
                                            attention_mask=inputs["attention_mask"])[0]
        return x, {"inputs_embeds": x, "attention_mask": inputs["attention_mask"], "position_ids": position_ids}

    def explained(self, out, result):
        return out.logits[:, -1].gather(-1, result.target[:, None])[:, 0]

    def scalar(self, out):
        return out.logits[:, -1].max()

    def padding_kwargs(self):
        return dict(position=-2)

    def padded(self, side):
        images = [list(self.images[:2]), [self.images[2]]]
        rows = [vlm_row(n, per_row) for n, per_row in zip((9, 4), images)]
        batch = vlm_batch(rows, images, side)
        split = [int(torch.tensor(per_row).prod(-1).sum()) for per_row in images]
        singles = [dict(vlm_batch([r], [per_row]), pixel_values=pixels)
                   for r, per_row, pixels in zip(rows, images, batch["pixel_values"].split(split))]
        return batch, singles, {f: batch["attention_mask"] for f in self.fields}


class VisionLanguage25(VisionLanguage):
    """Qwen2.5-VL: RMSNorms and a gated SiLU MLP in the vision blocks, windowed attention in block 0 (windows of
    2 x 2 merged tokens: the 4 x 8 patch image spans two), full attention in block 1."""

    images = ((1, 4, 8), (1, 2, 4), (1, 4, 2))
    padding_sides = ("left",)

    def __init__(self, name):
        super().__init__(name)
        self.cases = self.cases[:2]  # the ops of the other cases are Qwen2-VL's, checked there

    def config(self):
        vision = dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=32, patch_size=2,
                      temporal_patch_size=2, spatial_merge_size=2, in_channels=3, window_size=8,
                      fullatt_block_indexes=[1])
        return transformers.Qwen2_5_VLConfig(text_config=VLM_TEXT, vision_config=vision, **VLM_TOKENS)

    def build(self):
        return randomize_vlm(transformers.Qwen2_5_VLForConditionalGeneration(self.config()))


class Qwen3VL(VisionLanguage):
    """Qwen3-VL: learned position embeddings (a 3 x 3 table, bilinearly resized to each grid), GELU-tanh MLPs
    and LayerNorms in the vision blocks, DeepStack features of both blocks added after both decoder layers,
    a Qwen3 decoder (q / k norms) with interleaved multimodal rotary tables (mrope_section [4, 2, 2] of the 8
    frequencies: t on 0, 3, 6, 7, h on 1, 4, w on 2, 5)."""

    text = dict(VLM_TEXT, head_dim=16, rope_parameters=dict(VLM_TEXT["rope_parameters"], mrope_section=[4, 2, 2],
                                                             mrope_interleaved=True))
    vision = dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=32, patch_size=2,
                  temporal_patch_size=2, spatial_merge_size=2, in_channels=3, num_position_embeddings=9,
                  deepstack_visual_indexes=[0, 1])
    leaf_sum_dim = (-2, -1)

    def config(self):
        return transformers.Qwen3VLConfig(text_config=self.text, vision_config=self.vision, **VLM_TOKENS)

    def build(self):
        return randomize_vlm(transformers.Qwen3VLForConditionalGeneration(self.config()))

    def leaf(self, model, inputs):
        """x [B, N, 1 + L, hidden]: the merged sequence (word embeddings, image embeddings at the image tokens),
        then each DeepStack feature at the image tokens (0 elsewhere), passed to the model as its precomputed
        image outputs (`mm_encoder_outputs`) with inputs_embeds holding the image token's embedding at the
        image tokens (where the model finds them), and the model's own 3-D position ids."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        inner, ids, grid = model.model, inputs["input_ids"], inputs["image_grid_thw"]
        image = inner.get_image_features(inputs["pixel_values"], grid)
        embeds = inner.get_input_embeddings()(ids)
        is_image = ids == 90
        stacked = [embeds.masked_scatter(is_image[..., None], torch.cat(image.pooler_output).to(embeds.dtype))]
        for feature in image.deepstack_features:
            stacked.append(torch.zeros_like(embeds).masked_scatter(is_image[..., None], torch.cat(feature)))
        x = torch.stack(stacked, -2).detach().requires_grad_()
        placeholder = torch.where(is_image[..., None], embeds, x[..., 0, :])
        outputs = BaseModelOutputWithDeepstackFeatures(
            pooler_output=(x[..., 0, :][is_image],), deepstack_features=[(x[..., k, :][is_image],)
                                                                         for k in range(1, x.shape[-2])])
        position_ids = inner.get_rope_index(ids, inputs["mm_token_type_ids"], grid,
                                            attention_mask=inputs["attention_mask"])[0]
        return x, {"inputs_embeds": placeholder, "mm_encoder_outputs": {"image": outputs},
                   "attention_mask": inputs["attention_mask"], "position_ids": position_ids}


class Qwen3VLMoe(Qwen3VL):
    """Qwen3-VL-MoE: Qwen3-VL's tower, a dense first decoder layer (mlp_only_layers) and a sparse second one (4
    experts, top 2, softmax router renormalised), the MoE rules of Qwen3-MoE."""

    text = dict(Qwen3VL.text, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, mlp_only_layers=[0])
    padding_sides = ("left",)

    def __init__(self, name):
        super().__init__(name)
        self.cases = self.cases[:2]  # the ops of the other cases are Qwen3-VL's and Qwen3-MoE's, checked there

    def config(self):
        return transformers.Qwen3VLMoeConfig(text_config=self.text, vision_config=self.vision, **VLM_TOKENS)

    def build(self):
        return randomize_vlm(transformers.Qwen3VLMoeForConditionalGeneration(self.config()))


# LLaVA: a CLIP tower on 24 x 24 images in patches of 8 (3 x 3 = 9 image tokens per image), a Llama decoder
LLAVA_VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=24,
                    patch_size=8, projection_dim=16)
LLAVA_TEXT = dict(model_type="llama", vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, bos_token_id=1,
                  eos_token_id=2)


def llava_config(text=None, **kw):
    return transformers.LlavaConfig(vision_config=LLAVA_VISION, text_config=dict(LLAVA_TEXT, **(text or {})),
                                    image_token_index=90, **kw)


def llava_row(n_text, n_images, per_image=9):
    """Token ids of one LLaVA prompt: text, each image's `per_image` image tokens followed by a text token, text."""
    pieces = [torch.randint(3, 90, (n_text - n_text // 2 - n_images,))]
    for _ in range(n_images):
        pieces += [torch.full((per_image,), 90), torch.randint(3, 90, (1,))]
    pieces.append(torch.randint(3, 90, (n_text // 2,)))
    return torch.cat(pieces)


def llava_batch(rows, n_images, side="right", size=24):
    ids, mask = pad_rows(rows, side, 0)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(sum(n_images), 3, size, size)}


class Llava(VisionLanguage):
    """LLaVA: CLIP vision tower (feature layer -2, CLS dropped), GELU projector, Llama decoder; pixel_values
    [n_images, 3, 24, 24], no image_grid_thw."""

    def __init__(self, name):
        super().__init__(name)
        self.cases = (Case(backend="torch", chosen=True, pad=3),
                      Case(dtype=F64, chosen=True, contrast=True, tol=1e-12),  # float64 throughout: to its rounding
                      Case(backend="triton", batch=1),
                      Case(mode="cp-lrp", batch=1))

    def config(self):
        return llava_config()

    def build(self):
        return randomize_vlm(transformers.LlavaForConditionalGeneration(self.config()))

    def inputs(self, batch=1, size=None, pad=0):
        n = size or 7
        images = [2] + [1] * (batch - 1)  # two images in the first prompt
        rows = [llava_row(n + 9 * (2 - k), k) for k in images]  # rows of one length
        out = llava_batch(rows, images)
        if pad:  # the last row's last `pad` (text) tokens padding
            out["input_ids"][-1, -pad:] = 0
            out["attention_mask"][-1, -pad:] = False
        return out

    def walk(self, model, inputs, positions, target, contrast, mode):
        """(fields, score, z) of the explicit float64 reference at `positions` (the family's walker)."""
        return llava_reference(model, inputs["input_ids"], inputs["attention_mask"].bool(), inputs["pixel_values"],
                               positions, target, contrast, mode)

    def reference(self, model, inputs, result, case, request):
        """The walker's fields; zero relevance after the explained token (causal) and at padding."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        positions = padded_index(mask, request.get("position", -1))
        fields, score, z = self.walk(model, inputs, positions, request.get("target", result.target),
                                     request.get("contrast"), case.mode)
        rows = torch.arange(len(ids))
        hidden = (torch.arange(ids.shape[1])[None] > positions[:, None]) | ~mask  # causal, and padding
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return Reference({k: fields[k] for k in self.fields}, score, z,
                         lambda: self.outputs(model, dict(inputs, position_ids=position_ids))[rows, positions],
                         zeros={"relevance": hidden, "text_relevance": hidden | (ids == 90)}, position=positions)

    def leaf(self, model, inputs):
        """The merged sequence (word embeddings, projected image features at the image tokens)."""
        inner, ids, mask = model.model, inputs["input_ids"], inputs["attention_mask"]
        image = torch.cat(list(inner.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output))
        embeds = inner.get_input_embeddings()(ids)
        x = embeds.masked_scatter((ids == 90)[..., None], image.to(embeds.dtype)).detach().requires_grad_()
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return x, {"inputs_embeds": x, "attention_mask": mask, "position_ids": position_ids}

    def padded(self, side):
        rows = [llava_row(n, k) for n, k in ((9, 2), (5, 1))]
        batch = llava_batch(rows, [2, 1], side)
        singles = [{"input_ids": r[None], "pixel_values": px}
                   for r, px in zip(rows, batch["pixel_values"].split([2, 1]))]
        return batch, singles, {f: batch["attention_mask"] for f in self.fields}


# LLaVA-NeXT: the same tower on 28 x 28 tiles in patches of 14 (2 x 2 features a tile), pinpoints of one or two
# tiles; the images' (height, width) and tokens (base 4 + the unpadded canvas's R x (C + 1)): A (20, 45): [28, 56],
# 2 x 4 kept, 14; B (28, 40): [28, 56], columns cut to 2 x 2, 10; C (40, 30): [56, 28], rows cut to 2 x 2, 10;
# D (30, 30): [28, 28], one canvas tile (its third tile slot unused), 10
LLAVA_NEXT_VISION = dict(LLAVA_VISION, image_size=28, patch_size=14)
LLAVA_NEXT_PINPOINTS = [[28, 28], [28, 56], [56, 28]]
LLAVA_NEXT_IMAGES = {"A": ((20, 45), 14), "B": ((28, 40), 10), "C": ((40, 30), 10), "D": ((30, 30), 10)}


def llava_next_config(**kw):
    return transformers.LlavaNextConfig(vision_config=LLAVA_NEXT_VISION, text_config=LLAVA_TEXT, image_token_index=90,
                                        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, **kw)


def llava_next_row(n_text, images):
    """Token ids of one prompt: text, each image's tokens followed by a text token, text (n_text text tokens)."""
    pieces = [torch.randint(3, 90, (n_text - n_text // 2 - len(images),))]
    for name in images:
        pieces += [torch.full((LLAVA_NEXT_IMAGES[name][1],), 90), torch.randint(3, 90, (1,))]
    pieces.append(torch.randint(3, 90, (n_text // 2,)))
    return torch.cat(pieces)


def llava_next_batch(rows, images, side="right"):
    """The processor's outputs: pixel_values [n_images, 3 tiles, 3, 28, 28] (random in the unused tile slots:
    the model must not read them), image_sizes."""
    ids, mask = pad_rows(rows, side, 0)
    sizes = [LLAVA_NEXT_IMAGES[name][0] for per_row in images for name in per_row]
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(len(sizes), 3, 3, 28, 28),
            "image_sizes": torch.tensor(sizes)}


def tokens_of(images):
    return sum(LLAVA_NEXT_IMAGES[name][1] for name in images)


class LlavaNext(Llava):
    """LLaVA-NeXT: LLaVA's tower (feature layer -2, CLS dropped), projector and Llama decoder on any-resolution
    tiles: images A and C in the first prompt, D in the others (see LLAVA_NEXT_IMAGES)."""

    images = (("A", "C"), ("D",))

    def config(self):
        return llava_next_config()

    def build(self):
        return randomize_vlm(transformers.LlavaNextForConditionalGeneration(self.config()))

    def inputs(self, batch=1, size=None, pad=0):
        n = size or 7
        images = [self.images[0]] + [self.images[1]] * (batch - 1)
        length = n + tokens_of(images[0])
        out = llava_next_batch([llava_next_row(length - tokens_of(per_row), per_row) for per_row in images], images)
        if pad:  # the last row's last `pad` (text) tokens padding
            out["input_ids"][-1, -pad:] = 0
            out["attention_mask"][-1, -pad:] = False
        return out

    def walk(self, model, inputs, positions, target, contrast, mode):
        return llava_next_reference(model, inputs["input_ids"], inputs["attention_mask"].bool(),
                                    inputs["pixel_values"], inputs["image_sizes"], positions, target, contrast, mode)

    def leaf(self, model, inputs):
        """The merged sequence (word embeddings, the packed image features at the image tokens)."""
        inner, ids, mask = model.model, inputs["input_ids"], inputs["attention_mask"]
        image = torch.cat(list(inner.get_image_features(pixel_values=inputs["pixel_values"],
                                                        image_sizes=inputs["image_sizes"]).pooler_output))
        embeds = inner.get_input_embeddings()(ids)
        x = embeds.masked_scatter((ids == 90)[..., None], image.to(embeds.dtype)).detach().requires_grad_()
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return x, {"inputs_embeds": x, "attention_mask": mask, "position_ids": position_ids}

    def padded(self, side):
        images = [("A", "B"), ("C",)]
        rows = [llava_next_row(n, per_row) for n, per_row in zip((9, 5), images)]
        batch = llava_next_batch(rows, images, side)
        singles = [{"input_ids": r[None], "pixel_values": px, "image_sizes": sizes} for r, px, sizes
                   in zip(rows, batch["pixel_values"].split([2, 1]), batch["image_sizes"].split([2, 1]))]
        return batch, singles, {f: batch["attention_mask"] for f in self.fields}


# Idefics3 / SmolVLM: a SigLIP-like tower on sub-images of 56 x 56 in patches of 14 (4 x 4 patches), the pixel
# shuffle by 2 (2 x 2 = 4 image tokens per sub-image), a Llama decoder. SmolVLM's tower has a 2 x 2 position
# table (image_size 28): its 4 x 4 patches read it at bucketed coordinates.
IDEFICS3_VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=56,
                       patch_size=14)


def idefics3_config(smolvlm=False, **vision):
    config = transformers.SmolVLMConfig if smolvlm else transformers.Idefics3Config
    return config(vision_config=dict(IDEFICS3_VISION, **vision), text_config=dict(LLAVA_TEXT, pad_token_id=0),
                  image_token_id=90, scale_factor=2)


def idefics3_batch(rows, n_sub, side="right", size=56):
    """The processor's outputs for prompts `rows` with n_sub[b] sub-images each: pixel_values [B, max n_sub, 3,
    size, size] (zero slots pad the rows with fewer) and pixel_attention_mask [B, max n_sub, size, size]."""
    ids, mask = pad_rows(rows, side, 0)
    pixels = torch.zeros(len(rows), max(n_sub), 3, size, size)
    pixel_mask = torch.zeros(len(rows), max(n_sub), size, size, dtype=torch.long)
    for b, k in enumerate(n_sub):
        pixels[b, :k] = torch.randn(k, 3, size, size)
        pixel_mask[b, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "pixel_attention_mask": pixel_mask}


class Idefics3(Llava):
    """Idefics3 (SmolVLM: `smolvlm`, bucketed tower positions): pixel_values [B, n_sub_images, 3, 56, 56] with
    a zero padding slot, pixel_attention_mask, 4 image tokens per sub-image."""

    def __init__(self, name, smolvlm=False):
        super().__init__(name)
        self.smolvlm = smolvlm
        if smolvlm:  # the ops are Idefics3's, checked there; its own: the class names, the bucketed positions
            self.cases, self.padding_sides = self.cases[:2], ("left",)

    def config(self):
        return idefics3_config(self.smolvlm, **({"image_size": 28} if self.smolvlm else {}))

    def build(self):
        cls = (transformers.SmolVLMForConditionalGeneration if self.smolvlm
               else transformers.Idefics3ForConditionalGeneration)
        return randomize_vlm(cls(self.config()))

    def inputs(self, batch=1, size=None, pad=0):
        n = size or 7
        images = [2] + [1] * (batch - 1)  # two sub-images in the first prompt
        rows = [llava_row(n + 4 * (2 - k), k, 4) for k in images]  # rows of one length
        out = idefics3_batch(rows, images)
        if pad:  # the last row's last `pad` (text) tokens padding
            out["input_ids"][-1, -pad:] = 0
            out["attention_mask"][-1, -pad:] = False
        return out

    def walk(self, model, inputs, positions, target, contrast, mode):
        return idefics3_reference(model, inputs["input_ids"], inputs["attention_mask"].bool(), inputs["pixel_values"],
                                  positions, target, contrast, mode, inputs["pixel_attention_mask"])

    def leaf(self, model, inputs):
        """The merged sequence (word embeddings, the connector's image features at the image tokens)."""
        inner, ids, mask = model.model, inputs["input_ids"], inputs["attention_mask"]
        image = torch.cat(list(inner.get_image_features(inputs["pixel_values"],
                                                        inputs["pixel_attention_mask"]).pooler_output))
        embeds = inner.get_input_embeddings()(ids)
        x = embeds.masked_scatter((ids == 90)[..., None], image.to(embeds.dtype)).detach().requires_grad_()
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return x, {"inputs_embeds": x, "attention_mask": mask, "position_ids": position_ids}

    def padded(self, side):
        n_sub = [2, 1]
        rows = [llava_row(n, k, 4) for n, k in zip((9, 5), n_sub)]
        batch = idefics3_batch(rows, n_sub, side)
        singles = [{"input_ids": r[None], "pixel_values": batch["pixel_values"][b:b + 1, :k],
                    "pixel_attention_mask": batch["pixel_attention_mask"][b:b + 1, :k]}
                   for b, (r, k) in enumerate(zip(rows, n_sub))]
        return batch, singles, {f: batch["attention_mask"] for f in self.fields}


# PaliGemma and Gemma 3: a SigLIP tower on 28 x 28 images (PaliGemma: patches of 14, 2 x 2 = 4 image tokens per
# image; Gemma 3: patches of 7, 4 x 4 pooled to 2 x 2 = 4 image tokens), a Gemma (1) / Gemma 3 decoder
SIGLIP_VL_VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                        patch_size=14, vision_use_head=False)
GEMMA_VL_TEXT = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=16, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                     pad_token_id=0)


def paligemma_config(text=None):
    return transformers.PaliGemmaConfig(vision_config=dict(SIGLIP_VL_VISION, projection_dim=32), projection_dim=32,
                                        text_config=dict(GEMMA_VL_TEXT, **{"model_type": "gemma", **(text or {})}),
                                        image_token_index=90)


def gemma3_vl_config(text=None):
    """Gemma 3 with a sliding layer (window 3: shorter than an image's block of 4 tokens) and a full one."""
    text = dict(GEMMA_VL_TEXT, sliding_window=3, layer_types=["sliding_attention", "full_attention"], **(text or {}))
    return transformers.Gemma3Config(vision_config=dict(SIGLIP_VL_VISION, patch_size=7), text_config=text,
                                     image_token_index=90, boi_token_index=91, eoi_token_index=92,
                                     mm_tokens_per_image=4)


def paligemma_row(n_text, n_images, n_suffix=2):
    """(ids, token types) of one PaliGemma prompt: the image tokens, <bos> and the prompt (type 0, the
    bidirectional prefix), then a suffix of `n_suffix` tokens (type 1, causal)."""
    ids = torch.cat([torch.full((4 * n_images,), 90), torch.tensor([1]), torch.randint(3, 90, (n_text - 1,))])
    types = torch.zeros_like(ids)
    types[len(ids) - n_suffix:] = 1
    return ids, types


def gemma3_vl_row(n_text, n_images):
    """(ids, token types) of one Gemma 3 prompt: text, each image as <boi> 4 image tokens <eoi>, text; type 1
    at the image tokens."""
    pieces = [torch.randint(3, 90, (n_text - n_text // 2,))]
    for _ in range(n_images):
        pieces += [torch.tensor([91]), torch.full((4,), 90), torch.tensor([92])]
    ids = torch.cat(pieces + [torch.randint(3, 90, (n_text // 2,))])
    return ids, (ids == 90).long()


def randomize_gemma_vl(model):
    """randomize_vlm, then Gemma's (1 + w) norms near 1 (w near 0: randomize_vlm draws w near 1, a factor 2 per
    norm that grows the residual stream and its float32 rounding), and unit-size text embeddings after Gemma's
    sqrt(hidden) scale (as the image features)."""
    model = randomize_vlm(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") and (".language_model." in name or "mm_soft_emb_norm" in name):
                p.sub_(1.0)
        model.get_input_embeddings().weight /= math.sqrt(model.config.text_config.hidden_size)
    return model


class GemmaVisionLanguage(Llava):
    """PaliGemma / Gemma 3: SigLIP tower, projector, Gemma decoder with bidirectional attention over
    PaliGemma's prefix or within each Gemma 3 image (token_type_ids); pixel_values [n_images, 3, 28, 28]."""

    def __init__(self, name):
        super().__init__(name)
        self.row, self.block = (paligemma_row, 4) if name == "paligemma" else (gemma3_vl_row, 6)  # tokens per image
        if name == "paligemma":  # (the Triton case: Gemma 3's, the same tower and kernels, with sliding layers)
            self.cases = tuple(c for c in self.cases if c.backend != "triton")

    def config(self):
        return paligemma_config() if self.name == "paligemma" else gemma3_vl_config()

    def build(self):
        cls = (transformers.PaliGemmaForConditionalGeneration if self.name == "paligemma"
               else transformers.Gemma3ForConditionalGeneration)
        return randomize_gemma_vl(cls(self.config()))

    def position_ids(self, mask):
        return (mask.long().cumsum(-1) - 1).clamp(min=0) + (self.name == "paligemma")  # PaliGemma counts from 1

    def batch(self, rows, n_images, side="right"):
        ids, mask, types = pad_rows([r for r, _ in rows], side, 0, ([t for _, t in rows], 0))
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(sum(n_images), 3, 28, 28),
                "token_type_ids": types}

    def inputs(self, batch=1, size=None, pad=0):
        n = size or 7
        images = [2] + [1] * (batch - 1)  # two images in the first prompt
        out = self.batch([self.row(n + self.block * (2 - k), k) for k in images], images)  # rows of one length
        if pad:  # the last row's last `pad` tokens padding
            out["input_ids"][-1, -pad:] = 0
            out["attention_mask"][-1, -pad:] = False
            out["token_type_ids"][-1, -pad:] = 0
        return out

    def reference(self, model, inputs, result, case, request):
        ids, mask, types = inputs["input_ids"], inputs["attention_mask"].bool(), inputs["token_type_ids"]
        positions = padded_index(mask, request.get("position", -1))
        fields, score, z = gemma_vl_reference(model, ids, mask, inputs["pixel_values"], types, positions,
                                              request.get("target", result.target), request.get("contrast"),
                                              case.mode)
        rows = torch.arange(len(ids))
        reach = decoder_extent(model, types, ids.shape[1])[rows, positions]  # the explained token's block end
        hidden = (torch.arange(ids.shape[1])[None] > reach[:, None]) | ~mask
        position_ids = self.position_ids(mask)
        return Reference({k: fields[k] for k in self.fields}, score, z,
                         lambda: self.outputs(model, dict(inputs, position_ids=position_ids))[rows, positions],
                         zeros={"relevance": hidden, "text_relevance": hidden | (ids == 90)}, position=positions)

    def leaf(self, model, inputs):
        """The merged sequence (word embeddings, projected image features at the image tokens)."""
        inner, ids, mask = model.model, inputs["input_ids"], inputs["attention_mask"]
        image = inner.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        embeds = inner.get_input_embeddings()(ids)
        x = embeds.masked_scatter((ids == 90)[..., None], image.to(embeds.dtype)).detach().requires_grad_()
        return x, {"inputs_embeds": x, "attention_mask": mask, "position_ids": self.position_ids(mask),
                   "token_type_ids": inputs["token_type_ids"]}

    def padded(self, side):
        rows = [self.row(n, k) for n, k in ((9, 2), (5, 1))]
        batch = self.batch(rows, [2, 1], side)
        singles = [{"input_ids": r[None], "token_type_ids": t[None], "pixel_values": px}
                   for (r, t), px in zip(rows, batch["pixel_values"].split([2, 1]))]
        return batch, singles, {f: batch["attention_mask"] for f in self.fields}


ZOO = ([Decoder(f) for f in (*FAMILIES, *VARIANTS)]
       + [Text(n) for n in ("bert-cls", "bert-mlm", "bert-base", "roberta-cls", "roberta-mlm", "xlm-roberta-cls",
                            "xlm-roberta-mlm", "camembert-cls", "camembert-mlm", "distilbert-cls", "distilbert-mlm",
                            "electra-cls", "electra-disc", "electra-mlm")]
       + [ModernBert(n) for n in ("modernbert-mlm", "modernbert-cls")]
       + [Deberta(n) for n in ("deberta-v2-cls", "deberta-cls")]
       + [Vision(n) for n in ("vit", "deit")] + [T5(v) for v in T5_VARIANTS] + [Bart(n) for n in BART_FAMILIES]
       + [Dinov2(n) for n in ("dinov2", "dinov2_with_registers")]
       + [DecoderClassifier(f) for f in CLASSIFIERS]
       + [cls(f) for f in TWO_TOWER for cls in (TwoTower, TowerVision, TowerText)]
       + [VisionLanguage("qwen2_vl"), VisionLanguage25("qwen2_5_vl"), Qwen3VL("qwen3_vl"), Qwen3VLMoe("qwen3_vl_moe"),
          Llava("llava"), LlavaNext("llava_next")]
       + [Idefics3("idefics3"), Idefics3("smolvlm", smolvlm=True)]
       + [GemmaVisionLanguage(n) for n in ("paligemma", "gemma3")])
BY_NAME = {e.name: e for e in ZOO}
