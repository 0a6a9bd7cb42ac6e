"""lrp_triton under the attribution frontends people already use: one module per frontend, each an
optional extra (`pip install 'lrp_triton[inseq]'`, `'lrp_triton[captum]'`), so the core install stays small.

- `lrp_triton.integrations.inseq`: importing it registers the inseq attribution methods "attnlrp"
  and "cp-lrp" (`inseq.load_model(model, "attnlrp", tokenizer=tok)`).
- `lrp_triton.integrations.captum`: `AttnLRP` (a Captum `Attribution`) and `LLMAttnLRP` (Captum's
  LLM route, returning its `LLMAttributionResult`).

Every integration stands on one contract: on a model after `lrp_triton.apply`, `x * x.grad` at the
input embeddings (or any hidden state) after a backward pass is the relevance of x. Code written for
LXT needs no module at all: it runs as it is inside `with lrp_triton.apply(model):` (README, "Coming
from LXT").
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """`import module`, or an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"lrp_triton.integrations.{extra} needs {module}, which is not installed: "
                          f"pip install 'lrp_triton[{extra}]'") from error
