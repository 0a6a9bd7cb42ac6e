"""Models wrapped by other libraries: the transformers model lrp_triton explains inside them, or one
clear error saying what to pass instead.

- PEFT (`peft.PeftModel`, e.g. LoRA): the rules apply to the transformers model inside
  (`get_base_model()`), LoRA layers included: a LoRA layer computes base(x) + B(A(x)) * scale, a
  linear map of x, so the epsilon rule (its exact gradient) holds for it. The gamma rule would boost
  the base weight and the adapter weights separately, which is not the gamma rule of their sum:
  refused while the adapters are unmerged (`merge_and_unload()` first).
- sentence-transformers (`SentenceTransformer`): refused; its pooling and normalisation modules are
  not transformers modules. Explain the transformers model it holds, `model[0].auto_model`, with a
  callable target built from `lrp_triton.mean_pool` / `lrp_cosine_similarity`.
"""

from __future__ import annotations

from torch import nn


def is_peft_model(model) -> bool:
    return type(model).__module__.startswith("peft.") and callable(getattr(model, "get_base_model", None))


def is_adapter_layer(module: nn.Module) -> bool:
    """A PEFT tuner layer (LoRA and the like) wrapping a base layer."""
    return type(module).__module__.startswith("peft.") and hasattr(module, "base_layer")


def unwrap(model, where: str = "lrp_triton"):
    """The transformers model inside a known wrapper (the model itself when it is not wrapped)."""
    if is_peft_model(model):
        return model.get_base_model()
    if type(model).__module__.startswith("sentence_transformers"):
        raise TypeError(f"{where}: a SentenceTransformer is not a transformers model; pass the transformers model "
                        "it holds, model[0].auto_model, with a callable target that scores each row, e.g. "
                        "target=lambda out: lrp_triton.mean_pool(out.last_hidden_state, attention_mask)[:, 0]")
    return model


def check_gamma_compatible(model: nn.Module) -> None:
    """The gamma rule needs plain linear layers: refuse unmerged PEFT adapters (module docstring)."""
    wrapped = [name for name, m in model.named_modules() if is_adapter_layer(m)]
    if wrapped:
        raise NotImplementedError(f"linear_rule='gamma' / 'gamma-signed' cannot be applied to unmerged PEFT adapter "
                                  f"layers ({wrapped[0]}, ...); merge them first with model.merge_and_unload(), or "
                                  "use the epsilon rule")
