"""Loading a model and its tokenizer for the `evaluate` command and `explain --dataset`.

`--model` is found as `explain` finds it (`cli.model_source`: a local directory checked for a
config.json before anything loads, or a hub id read from the local Hugging Face cache at once when
the hub cannot be reached); the model class follows
the adapter's kind: causal LMs, text encoders with a sequence-classification head, encoder-decoders.
Every failure is a `CLIError`: one line naming the fix.
"""

from __future__ import annotations

from lrp_triton.cli import CLIError, model_source, parse_device
from lrp_triton.cli_placement import dtype_for, placed

LOADERS = {"causal_lm": "AutoModelForCausalLM", "encoder": "AutoModelForSequenceClassification",
           "seq2seq": "AutoModelForSeq2SeqLM"}


def device_and_dtype(device: str | None, dtype: str = "auto"):
    """(torch.device, torch.dtype) from --device / --dtype, checked as `explain` checks them."""
    dev = parse_device(device)
    return dev, dtype_for(dtype, dev)


def load_model(name: str | None, device, dtype, kinds=("causal_lm",), placement: dict | None = None):
    """(model in eval mode on `device`, tokenizer, shown name) for --model `name` (None: the demo model);
    `placement`: from_pretrained's device_map arguments (`cli_placement.device_map_kwargs`), the model
    then left where accelerate puts it. The model is found and loaded as `explain` does (`cli.model_source`)."""
    import transformers

    from lrp_triton.models import ADAPTERS, supported_model_types

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    source = model_source(name)
    config = source.load(transformers.AutoConfig.from_pretrained, "config",
                         "check the model id and your network connection, or pass a local model directory")
    adapter = ADAPTERS.get(config.model_type)
    if adapter is None or adapter.kind not in kinds:
        types = ", ".join(t for kind in kinds for t in supported_model_types(kind))
        raise CLIError(f"--model {source.shown}: model type {config.model_type!r} is not supported here; supported: "
                       f"{types}")
    tokenizer = source.load(transformers.AutoTokenizer.from_pretrained, "tokenizer",
                            "the model directory needs tokenizer files (tokenizer.save_pretrained(dir))",
                            errors=(OSError, ValueError, TypeError))
    model = source.load(getattr(transformers, LOADERS[adapter.kind]).from_pretrained, "weights",
                        "the model directory needs its weights (model.save_pretrained(dir))",
                        errors=(OSError, ValueError, TypeError), dtype=dtype, **(placement or {}))
    model = placed(model, device, placement or {})
    model.name_or_path = source.shown
    return model, tokenizer, source.shown
