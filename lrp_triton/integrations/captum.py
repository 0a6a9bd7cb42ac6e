"""AttnLRP in Captum's shapes: `pip install 'lrp_triton[captum]'`.

    from lrp_triton.integrations.captum import AttnLRP, LLMAttnLRP
    AttnLRP(model).attribute(input_ids, target=token_id)                 # [B, N] token relevance
    LLMAttnLRP(model, tok).attribute(TextTokenInput(prompt, tok), target=" Paris")  # LLMAttributionResult

- `AttnLRP(model, mode="attnlrp")`: a Captum `GradientAttribution` of a causal LM whose forward is
  the logits at each row's last real token, [B, vocab] (so `target` is a token id, in any of
  Captum's target forms). `attribute(inputs, target=..., additional_forward_args=(attention_mask,))`
  with inputs as ids [B, N] gives relevance [B, N] (Captum's LayerGradientXActivation at the input
  embeddings, summed over the hidden dimension); with inputs as embeddings [B, N, hidden], relevance
  of the same shape (Captum's InputXGradient). Either runs on the model applied for the call.
- `LLMAttnLRP(model, tokenizer)`: Captum's LLM route. Its `attribute(inp, target=...)` takes a
  `TextTokenInput` (or a `TextTemplateInput`: each value's relevance is the sum over the tokens
  that overlap its characters; template text is no feature) and a target string or ids (None: the model's greedy generation) and returns
  Captum's `LLMAttributionResult` (`token_attr` [target tokens, input tokens], `seq_attr`, its
  plotting): every target token explained from ONE forward pass over prompt + target
  (`lrp_triton.attribute` at the T positions; Captum's own route runs T forward passes).

Why the logit and not Captum's log-probability: LRP distributes a score over the inputs
conservatively, and a logit is a function of this position's hidden state alone, so its relevance
says what in the input raised this token. log p = z_t - logsumexp(z) also subtracts the relevance of
every other token's logit, weighted by its probability: it explains "this token rather than the
rest of the vocabulary", and is near 0 for a confident prediction whatever the evidence.
`score="log_prob"` offers it (gradient form: the cotangent e_t - softmax(z) at the logits).

Final-logit soft-capping (Gemma 2) takes the identity rule here, as in `lrp_triton.attribute`;
plain Captum code on an applied model (README, "Using lrp_triton under another tool") runs the
cap's exact derivative instead, one scalar factor per explained logit.
"""

from __future__ import annotations

import torch

from lrp_triton.attribute import attribute
from lrp_triton.attribution.core import (applied_for_call, frozen_eval, leaf, one_backward_per_score,
                                         token_relevance)
from lrp_triton.integrations import require
from lrp_triton.models import adapter_for
from lrp_triton.ops.elementwise import softcap_by_mode
from lrp_triton.options import LRPOptions

require("captum", "captum")

from captum.attr import (GradientAttribution, InputXGradient, LayerGradientXActivation,  # noqa: E402
                         LLMAttributionResult, TextTemplateInput, TextTokenInput)

SCORES = ("logit", "log_prob")
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters marking where a template's values go


def template_tokens(inp, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """A TextTemplateInput's text as ids [1, N] and, per token, the feature it belongs to [N] (-1 for
    template text and special tokens): a token belongs to the value whose characters it overlaps."""
    if inp.mask is not None:
        raise NotImplementedError("LLMAttnLRP: a TextTemplateInput with a mask (grouped features) is not supported; "
                                  "sum the groups' columns of token_attr instead")
    marked = [f"{_OPEN}{v}{_CLOSE}" for v in inp.values]
    text = inp.format_fn(**dict(zip(inp.dict_keys, marked))) if inp.dict_keys else inp.format_fn(*marked)
    spans, plain, start = [], "", None
    for ch in text:
        if ch == _OPEN:
            start = len(plain)
        elif ch == _CLOSE:
            spans.append((start, len(plain)))
        else:
            plain += ch
    if plain != inp.to_model_input() or len(spans) != len(inp.values):
        raise ValueError("LLMAttnLRP: the template does not put each value into the text as it is; "
                         "use a TextTokenInput")
    encoded = tokenizer(plain, return_offsets_mapping=True, return_tensors="pt")
    feature = torch.full((encoded.input_ids.shape[1],), -1, dtype=torch.long)
    for t, (a, b) in enumerate(encoded.offset_mapping[0].tolist()):
        for i, (s0, s1) in enumerate(spans):
            if a < s1 and s0 < b:
                feature[t] = i
                break
    return encoded.input_ids, feature


def lm_logits(model, adapter, mode: str, positions: torch.Tensor, input_ids=None, inputs_embeds=None,
              attention_mask=None) -> torch.Tensor:
    """Logits [B, P, vocab] of a causal LM at positions [B, P] (indices into the padded rows), final
    soft-capping by the mode's rule: the head of `lrp_triton.attribute`'s decoder forward."""
    if attention_mask is None:
        batch, n = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        attention_mask = torch.ones(batch, n, dtype=torch.long, device=positions.device)
    if inputs_embeds is None:
        inputs_embeds = adapter.embeddings(model).word(input_ids)
    hidden = adapter.base_model(model)(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False,
                                       position_ids=adapter.position_ids(model.config, attention_mask))[0]
    hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device)[:, None], positions]
    scale = adapter.output_scale(model.config)
    logits = adapter.head(model)(hidden if scale is None else hidden * scale)
    cap = adapter.final_logit_softcap(model.config)
    return softcap_by_mode(logits, cap, mode) if cap else logits


def last_real(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, 1] index of each row's last real token (left or right padding)."""
    index = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * (index + 1)).argmax(-1, keepdim=True)


class AttnLRP(GradientAttribution):
    """AttnLRP relevance in Captum's conventions (module docstring). `mode`: "attnlrp", "cp-lrp" or
    "gradient" (Input x Gradient); `backend` as in `lrp_triton.apply`."""

    def __init__(self, model, mode: str = "attnlrp", backend: str = "auto"):
        self.model, self.adapter = model, adapter_for(model)
        self.options = LRPOptions.checked(mode, backend, "epsilon", 0.25, where="AttnLRP")
        super().__init__(self.last_logits)

    def last_logits(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The forward Captum differentiates: logits [B, vocab] at each row's last real token."""
        ids, embeds = (None, inputs) if inputs.is_floating_point() else (inputs, None)
        if attention_mask is None:
            attention_mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device)
        return lm_logits(self.model, self.adapter, self.options.mode, last_real(attention_mask), ids, embeds,
                         attention_mask)[:, 0]

    def attribute(self, inputs, target=None, additional_forward_args=None):
        """Relevance of `target` (a token id per Captum's target forms; default: no target is an
        error, as Captum's own methods on a [B, vocab] output) for `inputs` (ids or embeddings)."""
        if target is None:
            raise ValueError("AttnLRP.attribute: give target, the token id whose logit is explained (Captum's "
                             "target forms: an int, a list of ints per row, or a tensor)")
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        with torch.enable_grad(), frozen_eval(self.model), applied_for_call(self.model, self.options):
            if x.is_floating_point():
                return InputXGradient(self.forward_func).attribute(inputs, target=target,
                                                                   additional_forward_args=additional_forward_args)
            layer = LayerGradientXActivation(self.forward_func, self.adapter.embeddings(self.model).word)
            out = layer.attribute(inputs, target=target, additional_forward_args=additional_forward_args)
            return out.sum(-1)

    def has_convergence_delta(self) -> bool:
        return False


class LLMAttnLRP:
    """Captum's LLM attribution with AttnLRP (module docstring): `attribute(TextTokenInput(...),
    target="..." or ids)` -> `LLMAttributionResult`. `score`: "logit" (default) or "log_prob"."""

    def __init__(self, model, tokenizer, mode: str = "attnlrp", score: str = "logit", backend: str = "auto"):
        if score not in SCORES:
            raise ValueError(f"LLMAttnLRP: score must be one of {SCORES}, got {score!r}")
        self.model, self.tokenizer, self.score = model, tokenizer, score
        self.adapter = adapter_for(model)
        self.options = LRPOptions.checked(mode, backend, "epsilon", 0.25, where="LLMAttnLRP")

    def target_ids(self, prompt: torch.Tensor, target, gen_args) -> torch.Tensor:
        if target is None:  # the model's own continuation (Captum's default generation), on the plain model
            args = gen_args or {"max_new_tokens": 25, "do_sample": False}
            with torch.no_grad():
                return self.model.generate(prompt, attention_mask=torch.ones_like(prompt), **args)[0, prompt.shape[1]:]
        if gen_args is not None:
            raise ValueError("LLMAttnLRP.attribute: gen_args is for generating the target; a target was given")
        if isinstance(target, str):
            return torch.tensor(self.tokenizer.encode(target, add_special_tokens=False), dtype=torch.long)
        if isinstance(target, torch.Tensor) and not target.is_floating_point():
            return target.flatten().long()
        raise TypeError(f"LLMAttnLRP.attribute: target must be a string, an integer tensor of token ids or None, "
                        f"got {type(target).__name__}")

    def attribute(self, inp, target=None, gen_args=None) -> LLMAttributionResult:
        """token_attr [T, input tokens]: relevance of each target token's score (given the prompt
        and the target tokens before it) at each interpretable input token; seq_attr its sum."""
        if isinstance(inp, TextTemplateInput):
            prompt, feature = template_tokens(inp, self.tokenizer)
        elif isinstance(inp, TextTokenInput):
            prompt, feature = inp.to_model_input(), None
        else:
            raise TypeError(f"LLMAttnLRP.attribute takes a captum TextTokenInput or TextTemplateInput, "
                            f"got {type(inp).__name__}")
        targets = self.target_ids(prompt, target, gen_args).to(prompt.device)
        if targets.numel() == 0:
            raise ValueError("LLMAttnLRP.attribute: the target has no tokens")
        n = prompt.shape[1]
        ids = torch.cat([prompt, targets[None, :-1]], dim=1)  # the last target token is never an input
        positions = list(range(n - 1, n - 1 + targets.numel()))
        if self.score == "logit":
            r = attribute(self.model, ids, position=positions, target=targets.tolist(), mode=self.options.mode,
                          backend=self.options.backend)
            relevance = r.relevance[0]
        else:
            relevance = self.log_prob_relevance(ids, positions, targets)
        token_attr = relevance[:, :n]
        if feature is not None:  # a template's features: the summed relevance of each value's tokens
            sums = torch.zeros(token_attr.shape[0], len(inp.values), dtype=token_attr.dtype, device=token_attr.device)
            kept = feature >= 0
            token_attr = sums.index_add_(1, feature[kept].to(sums.device), token_attr[:, kept.to(sums.device)])
        elif inp.itp_mask is not None:
            token_attr = token_attr[:, inp.itp_mask[0].to(token_attr.device)]
        tokens = self.tokenizer.convert_ids_to_tokens(targets.tolist())
        return LLMAttributionResult(seq_attr=token_attr.sum(0), token_attr=token_attr, input_tokens=inp.values,
                                    output_tokens=tokens, inp=inp)

    def log_prob_relevance(self, ids: torch.Tensor, positions: list[int], targets: torch.Tensor) -> torch.Tensor:
        """[T, N] relevance of log p(target_k) at positions[k], one forward pass, batched backwards."""
        with torch.enable_grad(), frozen_eval(self.model), applied_for_call(self.model, self.options):
            embeds = leaf(self.adapter.embeddings(self.model).word(ids))
            where = torch.tensor([positions], device=ids.device)
            logits = lm_logits(self.model, self.adapter, self.options.mode, where, inputs_embeds=embeds)
            scores = logits.log_softmax(-1).gather(-1, targets.view(1, -1, 1))[..., 0]  # [1, T]
            out = one_backward_per_score(scores, [embeds], lambda: {"relevance": token_relevance(embeds)})
        return torch.stack([o["relevance"][0] for o in out])
