"""Where the command line puts a model's weights: `--device` / `--dtype`, or accelerate's `--device-map`.

    lrp-triton explain --model DIR --device-map auto --prompt "..."              # every GPU, then CPU, then disk
    lrp-triton explain --model DIR --device-map sequential --max-memory 0=20GiB,cpu=64GiB --offload-folder off/
    lrp-triton explain --model DIR --device-map map.json --offload-folder off/  # {"model.layers.0": "disk", ...}

`--device-map` loads with `from_pretrained(device_map=...)` (accelerate, the optional `accelerate`
extra): "auto", "balanced", "balanced_low_0", "sequential" (accelerate spreads the layers over the
GPUs, then CPU memory, then `--offload-folder`), "cpu", or a JSON file mapping module names to a
device ("cpu", "disk", a GPU index or "cuda:N"). The model is then left where accelerate put it
(never moved to `--device`); `attribute` runs it through its hooks (`lrp_triton.accelerate_hooks`)
and returns the relevance on the inputs' device. Every failure is a `CLIError` naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from lrp_triton.cli import CLIError

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")


def add_placement_arguments(p) -> None:
    """--device and --dtype, and the --device-map options (explain and evaluate)."""
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="model dtype (default auto: float32 on cpu, bfloat16 on cuda); relevance is float32")
    g = p.add_argument_group("models larger than one device (accelerate; lrp_triton.cli_placement)")
    g.add_argument("--device-map", metavar="MAP",
                   help=f"load with from_pretrained(device_map=MAP): {', '.join(DEVICE_MAPS)}, or a JSON file "
                        "{module name: device} (device: cpu, disk, a GPU index); instead of --device")
    g.add_argument("--max-memory", metavar="DEV=SIZE,...", help="with --device-map: the most each device holds, "
                                                                  "e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    g.add_argument("--offload-folder", type=Path, metavar="DIR", help="with --device-map: where weights mapped to "
                                                                        "disk are kept")


def dtype_for(name: str, device):
    """The torch dtype of --dtype `name` on `device` (auto: bfloat16 on CUDA where supported, else float16;
    float32 on the CPU)."""
    import torch

    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def _device_map(value: str):
    if value in DEVICE_MAPS:
        return value
    path = Path(value).expanduser()
    if path.suffix.lower() != ".json":
        raise CLIError(f"--device-map {value}: pass one of {', '.join(DEVICE_MAPS)}, or a .json file mapping "
                       "module names to devices")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"--device-map {value}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CLIError(f"--device-map {value}: not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not mapping or not all(
            isinstance(k, str) and (isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)))
            for k, v in mapping.items()):
        raise CLIError(f"--device-map {value}: the JSON must be an object {{module name: device}}, devices "
                       'being "cpu", "disk", "cuda:N" or a GPU index')
    return mapping


def _max_memory(value: str) -> dict:
    out = {}
    for item in value.split(","):
        device, _, size = item.strip().partition("=")
        if not device or not size.strip():
            raise CLIError(f"--max-memory {value}: write DEVICE=SIZE pairs joined by commas, e.g. 0=20GiB,cpu=64GiB")
        out[int(device) if device.isdigit() else device.strip()] = size.strip()
    return out


def device_map_kwargs(args) -> dict:
    """from_pretrained's keyword arguments for --device-map / --max-memory / --offload-folder ({} without
    --device-map); checked, with accelerate importable."""
    given = [flag for flag, value in (("--max-memory", args.max_memory), ("--offload-folder", args.offload_folder))
             if value is not None]
    if args.device_map is None:
        if given:
            raise CLIError(f"{' and '.join(given)} only apply with --device-map; add --device-map auto (or drop them)")
        return {}
    if args.device is not None:
        raise CLIError("--device and --device-map both say where the model goes; pass one of them")
    device_map = _device_map(args.device_map)
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise CLIError("--device-map needs accelerate to dispatch the model; install it with `pip install "
                       "accelerate` (or `pip install 'lrp_triton[accelerate]'`)") from None
    kwargs = {"device_map": device_map}
    if args.max_memory is not None:
        kwargs["max_memory"] = _max_memory(args.max_memory)
    if isinstance(device_map, dict) and "disk" in device_map.values() and args.offload_folder is None:
        raise CLIError(f"--device-map {args.device_map} puts modules on disk; pass --offload-folder DIR for them")
    if args.offload_folder is not None:
        folder = args.offload_folder.expanduser()
        if folder.exists() and not folder.is_dir():
            raise CLIError(f"--offload-folder {args.offload_folder}: that is a file; pass a directory")
        kwargs["offload_folder"] = str(folder)
    return kwargs


def placed(model, device, kwargs: dict):
    """The loaded model in eval mode: on `device`, or where --device-map put it (`kwargs` non-empty)."""
    return (model if kwargs else model.to(device)).eval()
