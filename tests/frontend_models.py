"""Tiny random-weight models and a word-level tokenizer for the frontend integration tests (inseq,
Captum, LXT-style code): built here, nothing downloaded.

The tokenizer knows WORDS (one token each, split on whitespace) plus <pad>, <unk>, <s>, </s>; the
models' vocabularies are exactly its size, weights redrawn at the scale the model zoo uses (attention
far from uniform, every nonlinearity curved).
"""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

WORDS = ("the cat sat on a mat and then it saw dog ran to big red house door was open so in came "
         "rain sun day night who what why where is are").split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
VOCAB = len(SPECIALS) + len(WORDS)
SIZES = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, max_position_embeddings=4096, tie_word_embeddings=False)
TOKENS = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=2, eos_token_id=3)


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                bos_token="<s>", eos_token="</s>")


CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**SIZES, **TOKENS),
    "gemma2": lambda: transformers.Gemma2Config(**SIZES, **TOKENS, query_pre_attn_scalar=8, sliding_window=4,
                                                attn_logit_softcapping=1.5, final_logit_softcapping=3.0,
                                                hidden_activation="gelu_pytorch_tanh"),
    "gpt2": lambda: transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=4096,
                                            activation_function="gelu_new", **TOKENS),
}


def redraw(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 / p.shape[-1] ** 0.5) * 2)
            elif "norm" in name or "ln" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def causal_lm(family: str, seed: int = 0, **config) -> transformers.PreTrainedModel:
    """A tiny random-weight *ForCausalLM of the family (config overrides as keywords)."""
    torch.manual_seed(seed)
    made = CONFIGS[family]()
    for key, value in config.items():
        setattr(made, key, value)
    return redraw(transformers.AutoModelForCausalLM.from_config(made), seed)


def t5(seed: int = 0) -> transformers.T5ForConditionalGeneration:
    config = transformers.T5Config(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                   feed_forward_proj="gated-gelu", decoder_start_token_id=0,
                                   tie_word_embeddings=False, **TOKENS)
    torch.manual_seed(seed)
    return redraw(transformers.T5ForConditionalGeneration(config), seed)
