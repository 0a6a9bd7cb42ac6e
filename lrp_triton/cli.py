"""`lrp-triton explain`: explain a language model's next token from the command line.

    lrp-triton explain                                   # the bundled demo model on its demo prompt
    lrp-triton explain --prompt "a=7 k=3 x=9 ?k" --top 3 --out heatmap.html
    lrp-triton explain --model Qwen/Qwen2.5-0.5B --prompt "The capital of France is" --target " Paris"
    lrp-triton explain --prompt "a=7 k=3 x=9 ?x" --generate 5
    lrp-triton explain --model DIR --device-map auto --prompt "..."   # over GPUs / CPU / disk (cli_placement)

Prints the prompt as a heatmap (red: positive relevance, blue: negative; when stdout is not a
terminal, plain text with the most relevant tokens' ranks marked under it), optionally the most
relevant tokens, and writes .html / .png / .json files.
Errors are one line naming the fix; the exit status is then 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import NamedTuple

from lrp_triton.backend import BACKENDS
from lrp_triton.rules import MODES

OUT_FORMATS = {".html": "html", ".htm": "html", ".png": "png", ".json": "json"}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    from lrp_triton import __version__

    top = argparse.ArgumentParser(prog="lrp-triton", description="AttnLRP relevance for HuggingFace language models.")
    top.add_argument("--version", action="version", version=f"lrp_triton {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="command")
    p = sub.add_parser("explain", help="explain the next token (or generated tokens) of a prompt",
                       description="Explain which prompt tokens made the model predict a token.")
    p.add_argument("--model", help="HuggingFace model id or local directory (default: the bundled demo model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="the text to explain (default with the demo model: a demo prompt)")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from this file (UTF-8)")
    p.add_argument("--target", help="the token to explain: a token string (as written, or with a leading space), "
                                    "or a token id as id:N. A bare number is always text: --target 12 is the "
                                    "token '12' when that is one token (stderr notes it), else an error; token "
                                    "id 12 is id:12. Default: the model's own next-token prediction")
    p.add_argument("--contrast", help="explain target minus this token's logit (same forms as --target)")
    p.add_argument("--image", action="append", default=[], type=Path, metavar="FILE",
                   help="a PNG / JPEG image for a vision-language model (repeatable; lrp_triton.cli_vision)")
    p.add_argument("--position", type=int, default=-1,
                   help="the prompt position whose next token is explained (default -1: the last)")
    p.add_argument("--mode", choices=MODES, default="attnlrp",
                   help="attnlrp (default), cp-lrp, or gradient (Input x Gradient)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="attention kernels (default auto: triton on cuda, torch on cpu)")
    p.add_argument("--checkpoint", action="store_true",
                   help="recompute each layer in the backward pass (long prompts in less memory)")
    p.add_argument("--generate", type=int, metavar="N",
                   help="generate N tokens greedily, then explain every generated token against the prompt and "
                        "the tokens before it (one shared forward pass)")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="print the K most relevant tokens of each explained token (default 5; 0: none)")
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="write the attribution to FILE: .html, .png or .json by extension (repeatable)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="terminal colours (default auto: when stdout is a terminal and NO_COLOR is unset)")
    from lrp_triton.cli_evaluate import add_evaluate_parser
    from lrp_triton.cli_placement import add_placement_arguments
    from lrp_triton.dataset.cli import add_dataset_arguments

    add_placement_arguments(p)  # --device, --dtype, --device-map
    add_dataset_arguments(p)
    add_evaluate_parser(sub)
    return top


def _check_args(args) -> None:
    if args.generate is not None:
        if args.generate < 1:
            raise CLIError(f"--generate {args.generate}: the number of tokens must be at least 1; pass N >= 1")
        if args.target is not None:
            raise CLIError("--target cannot be combined with --generate (the generated tokens are the targets); "
                           "drop --target")
        if args.position != -1:
            raise CLIError("--position cannot be combined with --generate (each generated token is explained "
                           "at its own position); drop --position")
    if args.top < 0:
        raise CLIError(f"--top {args.top}: K cannot be negative; pass 0 (no list) or more")
    seen = set()
    for out in args.out:  # every output is checked before any work is done
        path = Path(out).expanduser()
        fmt = OUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise CLIError(f"--out {out}: unknown file type {path.suffix or '(none)'!r}; "
                           "use a name ending in .html, .png or .json")
        if path.is_dir():
            raise CLIError(f"--out {out}: that is an existing directory, not a file; pass a file name, e.g. "
                           f"{path / ('heatmap' + path.suffix)}")
        parent = path.resolve().parent
        if not parent.is_dir():
            raise CLIError(f"--out {out}: the directory {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise CLIError(f"--out {out}: no permission to write {'it' if path.exists() else 'in ' + str(parent)}; "
                           "pass a file in a directory you can write to")
        if path.resolve() in seen:
            raise CLIError(f"--out {out}: given twice; pass each output file once")
        seen.add(path.resolve())
        if fmt == "png":
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise CLIError(f"--out {out}: PNG output needs matplotlib; install it with "
                               "`pip install matplotlib` (or `pip install 'lrp_triton[plot]'`)") from None


# ------------------------------------------------------------------------------------------------
# Device, model, prompt, tokens
# ------------------------------------------------------------------------------------------------
def parse_device(name: str | None):
    """The torch.device of --device `name` (None: CUDA when present, else the CPU), or a CLIError."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise CLIError(f"--device {name}: no CUDA device is available (torch {torch.__version__} is {build}); "
                           "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices; "
                           f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise CLIError(f"--device {name}: only cpu and cuda are supported")
    return device


class ModelSource(NamedTuple):
    """Where --model loads from: `path` goes to from_pretrained, `shown` to messages; `offline` is why
    the hub cannot be reached (then only the local Hugging Face cache is read), None otherwise."""

    path: str
    shown: str
    offline: str | None = None

    def load(self, loader, what: str, fix: str, errors=(OSError, ValueError), **kwargs):
        """loader(path, **kwargs), with a one-line CLIError naming `what` failed and `fix`."""
        try:
            return loader(self.path, local_files_only=self.offline is not None, **kwargs)
        except errors as exc:
            if self.offline is not None and isinstance(exc, OSError):
                raise CLIError(f"--model {self.shown}: its {what} is not in the local Hugging Face cache, and "
                               f"{self.offline}; download it where there is a network (hf download {self.shown}) "
                               "or pass a local model directory") from None
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CLIError(f"--model {self.shown}: could not load its {what} ({reason}); {fix}") from None


def model_source(name: str | None) -> ModelSource:
    """Where --model loads from; checks local directories, and whether the hub answers for model ids."""
    from lrp_triton.demo import DEMO_DIR, DEMO_NAME
    from lrp_triton.hub import hub_unreachable

    if name is None:
        return ModelSource(str(DEMO_DIR), DEMO_NAME)
    path = Path(name).expanduser()
    looks_local = (path.is_absolute() or name.startswith((".", "~")) or name.endswith(("/", os.sep))
                   or name.count("/") > 1 or path.exists())
    if looks_local:
        if not path.is_dir():
            raise CLIError(f"--model {name}: no such model directory; pass an existing directory saved with "
                           "save_pretrained (holding config.json), or a Hugging Face model id like Qwen/Qwen2.5-0.5B")
        if not (path / "config.json").is_file():
            raise CLIError(f"--model {name}: the directory has no config.json, so it is not a HuggingFace model; "
                           "save one there with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)")
        return ModelSource(str(path), name)
    return ModelSource(name, name, hub_unreachable())


def _load_config(source: ModelSource):
    """The model's config and its family's adapter (a causal LM's, or a CLIError)."""
    import transformers

    from lrp_triton.models import ADAPTERS, supported_model_types

    config = source.load(transformers.AutoConfig.from_pretrained, "config",
                         "check the model id and your network connection, or pass a local model directory")
    adapter = ADAPTERS.get(config.model_type)
    if adapter is None or adapter.kind not in ("causal_lm", "vision_language"):
        raise CLIError(f"--model {source.shown}: model type {config.model_type!r} cannot be explained by "
                       f"`lrp-triton explain`; it supports causal language models of type "
                       f"{', '.join(supported_model_types('causal_lm') + supported_model_types('vision_language'))}")
    return config, adapter


def _load_tokenizer(source: ModelSource):
    import transformers

    return source.load(transformers.AutoTokenizer.from_pretrained, "tokenizer",
                       "the model directory needs tokenizer files (tokenizer.save_pretrained(dir))",
                       errors=(OSError, ValueError, TypeError))


def _prompt(args, is_demo: bool) -> str:
    from lrp_triton.demo import DEMO_PROMPT

    if args.prompt_file is not None:
        try:
            text = args.prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CLIError(f"--prompt-file {args.prompt_file}: cannot read it ({exc.strerror or exc}); "
                           "pass a readable UTF-8 text file") from None
        except UnicodeDecodeError:
            raise CLIError(f"--prompt-file {args.prompt_file}: not UTF-8 text; save it as UTF-8") from None
        text = text[:-1] if text.endswith("\n") else text
    elif args.prompt is not None:
        text = args.prompt
    elif is_demo:
        text = DEMO_PROMPT
    else:
        raise CLIError("no prompt: pass --prompt TEXT or --prompt-file FILE")
    if not text:
        raise CLIError("the prompt is empty: pass some text with --prompt or --prompt-file")
    return text


def token_id(tokenizer, text: str, flag: str, vocab_size: int) -> int:
    """A token id from a --target / --contrast value: `id:N` is token id N, anything else is text that
    must be one token (see the --target help). A bare number is text too; stderr notes how it was read."""
    from lrp_triton.render import clean_tokens

    def checked(i: int) -> int:
        if not 0 <= i < vocab_size:
            raise CLIError(f"{flag} {text}: token id {i} is outside the vocabulary; pass an id from 0 to "
                           f"{vocab_size - 1}")
        return i

    if text.startswith("id:"):
        if not text[3:].strip().isdigit():
            raise CLIError(f"{flag} {text}: id: takes a whole number; pass a token id like id:42")
        return checked(int(text[3:]))
    number = text.strip().isdigit()
    found = tokenizer.get_vocab().get(text)
    for candidate in (text, " " + text) if found is None else ():
        ids = tokenizer.encode(candidate, add_special_tokens=False)
        if len(ids) == 1:
            found = ids[0]
            break
    if found is not None:
        if number:  # loud: say that the number was read as text, and how to ask for the id instead
            shown = clean_tokens(tokenizer.convert_ids_to_tokens([found]))[0]
            print(f"lrp-triton: note: {flag} {text} is the token {shown!r} (id {found}); for the token with id "
                  f"{text.strip()}, pass {flag} id:{text.strip()}", file=sys.stderr)
        return checked(found)
    pieces = clean_tokens(tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False)))
    fix = (f"a bare number is read as text, never as an id: for the token with id {text.strip()}, pass id:"
           f"{text.strip()}" if number else "pass one token, or a token id as id:N")
    raise CLIError(f"{flag} {text!r} is not a single token of this model (it splits into {len(pieces)}: "
                   f"{' '.join(repr(p) for p in pieces)}); {fix}")


# ------------------------------------------------------------------------------------------------
# explain
# ------------------------------------------------------------------------------------------------
def _generate(model, input_ids, n: int, tokenizer):
    """Greedy generation of up to n tokens with a progress bar; returns the full sequence [1, L]."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from lrp_triton.console import ProgressBar

    bar = ProgressBar(n, "generating")

    class Counter(BaseStreamer):
        def __init__(self):
            self.calls = 0

        def put(self, value):
            self.calls += 1
            if self.calls > 1:  # the first call carries the prompt
                bar.update(self.calls - 1)

        def end(self):
            pass

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        full = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=n,
                              do_sample=False, streamer=Counter(), pad_token_id=pad)
    bar.close()
    return full


def _print_top(attribution, k: int) -> None:
    from lrp_triton import render

    rows = render.display_rows(attribution)
    for row in rows:
        order = sorted(range(len(row.relevance)), key=lambda i: row.relevance[i], reverse=True)[:k]
        print(f"top {len(order)} token{'s' if len(order) != 1 else ''} for {row.label}:")
        width = max(len(repr(row.tokens[i])) for i in order)
        for rank, i in enumerate(order, 1):
            print(f"  {rank:2d}. {row.tokens[i]!r:<{width}}  token {row.indices[i]:<4d} {row.relevance[i]:+.4f}")


def explain(args) -> int:
    if args.dataset is not None:  # a whole data set: lrp_triton.dataset.cli
        from lrp_triton.dataset.cli import explain_dataset

        return explain_dataset(args)
    _check_args(args)
    from lrp_triton.cli_placement import device_map_kwargs, dtype_for, placed

    placement = device_map_kwargs(args)  # {} or from_pretrained's device_map=... (accelerate)
    source = model_source(args.model)
    shown = source.shown
    is_demo = args.model is None
    device = parse_device(args.device)
    dtype = dtype_for(args.dtype, device)
    prompt = _prompt(args, is_demo)

    import transformers

    from lrp_triton.console import Status

    transformers.utils.logging.disable_progress_bar()  # the status line says what is loading
    transformers.utils.logging.set_verbosity_error()
    status = Status()
    status.set(f"Loading {shown}: config and tokenizer ...")
    config, adapter = _load_config(source)
    if args.image or adapter.kind == "vision_language":  # images and a processor: lrp_triton.cli_vision
        from lrp_triton.cli_vision import explain_vision

        return explain_vision(args, source, config, adapter, device, dtype, prompt, status)
    tokenizer = _load_tokenizer(source)

    import torch

    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    n_prompt = input_ids.shape[1]
    if n_prompt == 0:
        status.clear()
        raise CLIError("the prompt encodes to no tokens: pass some text with --prompt or --prompt-file")
    limit = adapter.max_length(config)
    extra = args.generate or 0
    if limit is not None and n_prompt + extra > limit:
        status.clear()
        more = f" + {extra} to generate" if extra else ""
        raise CLIError(f"the prompt is {n_prompt} tokens{more}, but {shown} takes at most {limit}; "
                       "shorten the prompt" + (" or lower --generate" if extra else ""))
    if not -n_prompt <= args.position < n_prompt:
        status.clear()
        raise CLIError(f"--position {args.position} is outside the prompt, which has {n_prompt} tokens; "
                       f"use -{n_prompt} to {n_prompt - 1}")
    vocab_size = config.get_text_config().vocab_size if hasattr(config, "get_text_config") else config.vocab_size
    status.clear()
    target = None if args.target is None else token_id(tokenizer, args.target, "--target", vocab_size)
    contrast = None if args.contrast is None else token_id(tokenizer, args.contrast, "--contrast", vocab_size)
    if args.backend == "triton" and device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton is first imported

    status.set(f"Loading {shown}: weights, on {args.device_map or device} as {str(dtype).removeprefix('torch.')} ...")
    try:
        model = source.load(transformers.AutoModelForCausalLM.from_pretrained, "weights",
                            "the model directory needs its weights (model.save_pretrained(dir))", dtype=dtype,
                            **placement)
    finally:
        status.clear()
    model = placed(model, device, placement)
    input_ids = input_ids.to(device)

    from lrp_triton import attribute, render
    from lrp_triton.console import ProgressBar

    if args.generate:
        full = _generate(model, input_ids, args.generate, tokenizer)
        generated = full[0, n_prompt:].tolist()
        positions = list(range(n_prompt - 1, n_prompt - 1 + len(generated)))
        bar = ProgressBar(len(positions), "explaining")
        result = attribute(model, full[:, :-1], position=positions, target=generated,
                           contrast=None if contrast is None else [contrast] * len(positions), mode=args.mode,
                           checkpoint=args.checkpoint, backend=args.backend, tokenizer=tokenizer,
                           progress=lambda done, total: bar.update(done))
        bar.close()
        print(f"generated: {tokenizer.decode(generated)!r}")
    else:
        status.set(f"Explaining with {args.mode} ...")
        result = attribute(model, input_ids, position=args.position, target=target, contrast=contrast,
                           mode=args.mode, checkpoint=args.checkpoint, backend=args.backend, tokenizer=tokenizer)
        status.clear()
    result = dataclasses.replace(result, model_name=shown)  # the token style comes with it (attribute's tokenizer=)
    return report(result, args)


def report(result, args) -> int:
    """Prints the heatmap and the --top list, writes the --out files; 0."""
    from lrp_triton import render

    color = {"always": True, "never": False}.get(args.color)
    print(render.terminal_text(result, color=color))
    if args.top:
        _print_top(result, args.top)
    for out in args.out:
        path = Path(out).expanduser()
        try:
            getattr(result, f"to_{OUT_FORMATS[path.suffix.lower()]}")(path)  # images: the result's own
        except OSError as exc:  # checked before the work; this is a change since, or a full disk
            raise CLIError(f"--out {out}: could not write it ({exc.strerror or exc}); pass another file") from None
        print(f"wrote {out}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "explain":
            return explain(args)
        if args.command == "evaluate":
            from lrp_triton.cli_evaluate import run_evaluate

            return run_evaluate(args)
    except CLIError as exc:
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")  # over a status line still shown
        print(f"lrp-triton: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lrp-triton: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
