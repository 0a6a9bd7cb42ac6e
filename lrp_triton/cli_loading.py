"""Loading a model and its tokenizer for the `evaluate` command and `explain --dataset`.

`--model` is a local directory (checked for a config.json before anything loads) or a hub id (read
from the local Hugging Face cache at once when the hub cannot be reached); the model class follows
the adapter's kind: causal LMs, text encoders with a sequence-classification head, encoder-decoders.
Every failure is a `CLIError`: one line naming the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from lrp_triton.cli import CLIError
from lrp_triton.cli_placement import placed

LOADERS = {"causal_lm": "AutoModelForCausalLM", "encoder": "AutoModelForSequenceClassification",
           "seq2seq": "AutoModelForSeq2SeqLM"}


def device_and_dtype(device: str | None, dtype: str = "auto"):
    """(torch.device, torch.dtype) from --device / --dtype (auto: CUDA when present; bf16 there, fp32 on CPU)."""
    import torch

    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: no CUDA device is available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise CLIError(f"--device {device}: only cpu and cuda are supported")
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, getattr(torch, dtype)


def load_model(name: str | None, device, dtype, kinds=("causal_lm",), placement: dict | None = None):
    """(model in eval mode on `device`, tokenizer, shown name) for --model `name` (None: the demo model);
    `placement`: from_pretrained's device_map arguments (`cli_placement.device_map_kwargs`), the model
    then left where accelerate puts it."""
    import transformers

    from lrp_triton.demo import DEMO_DIR, DEMO_NAME
    from lrp_triton.hub import hub_unreachable
    from lrp_triton.models import ADAPTERS, supported_model_types

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if name is None:
        path, shown, offline = str(DEMO_DIR), DEMO_NAME, True
    else:
        local = Path(name).expanduser()
        if local.is_absolute() or name.startswith((".", "~")) or name.endswith(("/", os.sep)) or local.exists():
            if not (local / "config.json").is_file():
                raise CLIError(f"--model {name}: not a model directory (no config.json); pass a directory saved "
                               "with save_pretrained, or a Hugging Face model id")
            path, shown, offline = str(local), name, True
        else:
            path, shown, offline = name, name, hub_unreachable() is not None
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=offline)
        adapter = ADAPTERS.get(config.model_type)
        if adapter is None or adapter.kind not in kinds:
            types = ", ".join(t for kind in kinds for t in supported_model_types(kind))
            raise CLIError(f"--model {shown}: model type {config.model_type!r} is not supported here; supported: "
                           f"{types}")
        loader = getattr(transformers, LOADERS[adapter.kind])
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=offline)
        model = loader.from_pretrained(path, dtype=dtype, local_files_only=offline, **(placement or {}))
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"--model {shown}: could not load it ({reason}); check the name, the network, or pass a "
                       "local model directory") from None
    model = placed(model, device, placement or {})
    model.name_or_path = shown
    return model, tokenizer, shown
