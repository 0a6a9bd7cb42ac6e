"""`attribute_encoder`: AttnLRP for bidirectional encoders (BERT, RoBERTa) and vision transformers
(ViT, DeiT).

One forward pass of the whole model (task head included), then one backward pass per explained
score. What is explained:
- sequence / image classification (`logits` [B, C]): the logit of class `target` (default: the
  predicted class);
- token-level heads, masked LM or token classification (`logits` [B, N, V]): the logit of token
  id / class `target` at `position` (an index among each row's real tokens; required);
- anything else: `target` is a callable, `target(outputs) -> scores`, explained as it is (every
  operation in it keeps its exact gradient, i.e. the epsilon rule, unless it uses lrp_triton ops).
  Scores [B] explain one score per row; a 0-d score explains the batch as a whole (e.g. the
  cosine similarity of two sentences batched together, see `lrp_cosine_similarity`).

Relevance of a tensor is `x * x.grad` after the backward (see `lrp_triton.apply` for the rules).
Text: `relevance` at the word embeddings, summed over the hidden dimension; the position and
token-type embeddings (summed with the word embeddings before the embedding LayerNorm: epsilon
rule, the exact gradient) are leaves of their own, reported as `position_relevance` and
`token_type_relevance`. Images: `relevance` = `pixel_relevance` [B, H, W] (pixel_values * grad,
summed over channels); `patch_relevance` [B, num_patches] at the patch-embedding output (the
convolution's bias keeps its share); the embedding sum `cat(CLS, patches) + position` is split by
the epsilon rule into `cls_relevance` [B, n_prefix] (the CLS token parameter, and DeiT's
distillation token), `patch_relevance` and `position_relevance` [B, n_prefix + num_patches].
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from lrp_triton.apply import LINEAR_RULES, active_handle, apply
from lrp_triton.attribute import (_LatentRecorder, _absolute_positions, _applied, _check_inputs, _frozen_eval,
                                  _per_row_ids, _stack_latent, token_names)
from lrp_triton.attribution import Attribution
from lrp_triton.backend import upcast
from lrp_triton.models import adapter_for
from lrp_triton.ops.attention import ATTENTION_MODES
from lrp_triton.ops.elementwise import lrp_uniform_product


# ------------------------------------------------------------------------------------------------
# Helpers for callable targets (sentence embeddings)
# ------------------------------------------------------------------------------------------------
def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over each row's real tokens, as sentence-transformers pools: [B, N, H] -> [B, H].

    A linear map (the mask weights are constants): epsilon rule, the exact gradient.
    """
    if attention_mask is None:
        return hidden.mean(1)
    w = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * w).sum(1) / w.sum(1).clamp(min=1)


def lrp_cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) = sum_d a_d b_d / (|a| |b|) over the last dimension, with LRP rules:

    the norms are held constant (like the standard deviation of LayerNorm) and each product
    a_d * b_d takes the uniform rule (half of its relevance to a, half to b), so the relevance of
    a and b together sums to the similarity itself.
    """
    scale = (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).detach()
    return lrp_uniform_product(a, b / scale).sum(-1)


# ------------------------------------------------------------------------------------------------
# Model state for one call
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _applied_with_rule(model, mode, backend, linear_rule, gamma):
    """`attribute._applied`, applying with the linear rule first when the model is not applied yet."""
    own = None
    handle = active_handle(model)
    if handle is None:
        own = apply(model, mode, backend=backend, linear_rule=linear_rule, gamma=gamma)
    else:
        rule = getattr(handle, "linear_rule", "epsilon")
        if rule != linear_rule or (rule != "epsilon" and float(handle.gamma) != float(gamma)):
            raise ValueError(f"attribute: the model is applied with linear_rule={rule!r}"
                             f"{f', gamma={handle.gamma}' if rule != 'epsilon' else ''} but linear_rule="
                             f"{linear_rule!r}{f', gamma={gamma}' if linear_rule != 'epsilon' else ''} was asked "
                             "for; remove the handle or ask for the same rule")
    try:
        with _applied(model, mode, backend) as handle:
            yield handle
    finally:
        if own is not None:
            own.remove()


class _Leaf:
    """A forward hook that replaces a module's output by a detached leaf (its grad carries relevance)."""

    def __init__(self, module):
        self.tensors = []
        self.hook = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        output = output.detach().requires_grad_(True)
        self.tensors.append(output)
        return output

    def relevance(self):
        if not self.tensors:
            return None
        t = self.tensors[0]
        return (upcast(t) * upcast(t.grad)).sum(-1) if t.grad is not None else upcast(t.new_zeros(t.shape[:-1]))

    def zero(self):
        for t in self.tensors:
            t.grad = None


class _Retained:
    """A forward hook that keeps a module's output (and its grad, with retain_grad)."""

    def __init__(self, module, retain=True):
        self.tensors = []
        self.retain = retain
        self.hook = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.retain and output.requires_grad:
            output.retain_grad()
        self.tensors.append(output)


# ------------------------------------------------------------------------------------------------
# Input checking
# ------------------------------------------------------------------------------------------------
def _check_token_type_ids(model, token_type_ids, batch, seq, device):
    if token_type_ids is None:
        return None
    token_type_ids = torch.as_tensor(token_type_ids, device=device)
    if token_type_ids.dim() == 1:
        token_type_ids = token_type_ids[None]
    if tuple(token_type_ids.shape) != (batch, seq) or token_type_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"attribute: token_type_ids must be integer {(batch, seq)}, got "
                         f"{tuple(token_type_ids.shape)} {token_type_ids.dtype}")
    types = getattr(model.config, "type_vocab_size", None)
    if types is not None and (token_type_ids.min() < 0 or token_type_ids.max() >= types):
        raise ValueError(f"attribute: token_type_ids outside [0, {types})")
    return token_type_ids.long()


def _check_pixels(model, pixel_values):
    if pixel_values is None:
        raise ValueError("attribute: a vision model needs pixel_values [B, C, H, W]")
    param = next(model.parameters())
    pixel_values = torch.as_tensor(pixel_values, device=param.device)
    if pixel_values.dim() == 3:
        pixel_values = pixel_values[None]
    if pixel_values.dim() != 4 or not pixel_values.is_floating_point():
        raise ValueError(f"attribute: pixel_values must be float [batch, channels, height, width], got "
                         f"{tuple(pixel_values.shape)} {pixel_values.dtype}")
    return pixel_values.to(param.dtype)


def _text_position_ids(model, attention_mask):
    """Absolute positions counting real tokens only (left padding does not shift them).

    BERT: 0, 1, 2, ... (HF's default for unpadded and right-padded rows). RoBERTa: padding_idx + 1,
    + 2, ... for real tokens and padding_idx at padding, as RoBERTa derives them from input_ids.
    """
    count = attention_mask.long().cumsum(-1)
    if model.config.model_type == "roberta":
        pad = model.config.pad_token_id
        return torch.where(attention_mask, count + pad, torch.full_like(count, pad))
    return (count - 1).clamp(min=0)


def _class_targets(target, batch, n_classes, device):
    """[B] class ids, -1 where the prediction is to be filled in."""
    if target is None:
        return torch.full((batch,), -1, dtype=torch.long, device=device)
    ids = torch.as_tensor(target, device=device).long().flatten()
    if ids.numel() not in (1, batch):
        raise ValueError(f"attribute: target must be a class index or one per batch row ({batch}), got "
                         f"{ids.numel()} values")
    if ids.min() < 0 or ids.max() >= n_classes:
        raise ValueError(f"attribute: target {ids.tolist()} is outside the classes [0, {n_classes})")
    return ids.expand(batch).clone()


# ------------------------------------------------------------------------------------------------
# attribute_encoder
# ------------------------------------------------------------------------------------------------
def attribute_encoder(model, *, input_ids=None, inputs_embeds=None, attention_mask=None, token_type_ids=None,
                      pixel_values=None, target: int | torch.Tensor | Callable | None = None,
                      position: int | list[int] | None = None, mode: str = "attnlrp", linear_rule: str = "epsilon",
                      gamma: float = 0.25, latent: bool = False, backend: str = "auto", tokenizer=None,
                      progress: Callable[[int, int], None] | None = None) -> Attribution:
    """Explains an output of a BERT-family encoder or a vision transformer (see the module docstring).

    Args:
        model: a supported encoder (BertModel, Bert/RobertaFor{SequenceClassification, MaskedLM,
            TokenClassification}, ...) or vision model (ViT/DeiT{Model, ForImageClassification}).
        input_ids / inputs_embeds, attention_mask, token_type_ids: text inputs ([B, N]; 1/True
            for real tokens). pixel_values: image inputs [B, C, H, W].
        target: class index (one, or one per row; default: predicted), token id at `position`
            for token-level heads (default: predicted), or a callable `target(outputs) -> scores`.
        position: token-level heads only: index among each row's real tokens, or a list of them.
        mode: "attnlrp", "cp-lrp" or "gradient" (Input x Gradient).
        linear_rule: "epsilon" (default), "gamma" or "gamma-signed": that gamma rule (with `gamma`,
            see `lrp_triton.ops.gamma`) on every linear and convolution layer of the base model;
            task heads keep the epsilon rule. "gamma-signed" is numerically safe for signed inputs.
        latent: also return residual-stream, head and neuron relevance (as `attribute`).
        backend: kernel backend for a model that is not applied yet ("auto", "triton", "torch").
        tokenizer: text models: fills `tokens` (and `target_tokens` for token-level heads) for display.
            A classification head's `target_tokens` are its label names (config.id2label) either way.
        progress: optional `progress(done, total)`, called after each explained score's backward pass.

    Returns:
        An `Attribution` (relevance float32 [B, N] or [B, P, N] for text, [B, H, W] for images).
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attribute: unknown mode {mode!r}; expected one of {', '.join(ATTENTION_MODES)}")
    if linear_rule not in LINEAR_RULES:
        raise ValueError(f"attribute: unknown linear_rule {linear_rule!r}; expected one of {', '.join(LINEAR_RULES)}")
    adapter = adapter_for(model)
    if adapter.kind not in ("encoder", "vision"):
        raise TypeError(f"attribute_encoder explains encoders and vision transformers; {type(model).__name__} "
                        f"is a {adapter.kind} model")
    vision = adapter.kind == "vision"
    if vision and tokenizer is not None:
        raise ValueError("attribute: tokenizer is for text models; a vision model's relevance is per pixel")
    device = next(model.parameters()).device
    base = adapter.base_model(model)
    if vision:
        if input_ids is not None or inputs_embeds is not None or token_type_ids is not None:
            raise ValueError("attribute: a vision model takes pixel_values, not token inputs")
        if attention_mask is not None:
            raise ValueError("attribute: a vision model takes no attention_mask")
        pixel_values = _check_pixels(model, pixel_values)
        batch = pixel_values.shape[0]
    else:
        if pixel_values is not None:
            raise ValueError("attribute: a text encoder takes input_ids or inputs_embeds, not pixel_values")
        input_ids, inputs_embeds, attention_mask, batch, seq = _check_inputs(
            model, input_ids, inputs_embeds, attention_mask, adapter.max_length(model.config))
        token_type_ids = _check_token_type_ids(model, token_type_ids, batch, seq, device)
        if attention_mask is None:
            attention_mask = torch.ones(batch, seq, dtype=torch.bool, device=device)
    if callable(target) and position is not None:
        raise ValueError("attribute: position is for token-level heads; a callable target picks its own scores")

    with _frozen_eval(model), _applied_with_rule(model, mode, backend, linear_rule, gamma) as handle:
        hooks, recorder = [], None
        try:
            if vision:
                leaf = pixel_values.detach().requires_grad_(True)
                emb = base.embeddings
                patches = _Retained(emb.patch_embeddings, retain=False)
                summed = _Retained(emb)
                hooks += [patches, summed]
                inputs = dict(pixel_values=leaf)
            else:
                emb = base.embeddings
                leaf = (emb.word_embeddings(input_ids) if input_ids is not None
                        else inputs_embeds.to(device=device, dtype=next(model.parameters()).dtype))
                leaf = leaf.detach().requires_grad_(True)
                pos_leaf = _Leaf(emb.position_embeddings)
                type_leaf = _Leaf(emb.token_type_embeddings) if hasattr(emb, "token_type_embeddings") else None
                hooks += [h for h in (pos_leaf, type_leaf) if h is not None]
                inputs = dict(inputs_embeds=leaf, attention_mask=attention_mask,
                              position_ids=_text_position_ids(model, attention_mask))
                if token_type_ids is not None:
                    inputs["token_type_ids"] = token_type_ids
            recorder = _LatentRecorder(handle, adapter, model) if latent else None

            with torch.enable_grad():
                outputs = model(**inputs)
                positions, several, targets = None, False, None
                if callable(target):
                    scores = target(outputs)
                    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
                        raise TypeError("attribute: a callable target must return a float tensor of scores")
                    if not scores.requires_grad:
                        raise ValueError("attribute: the callable target's scores do not depend on the input")
                    scores = scores[..., None]  # one explained score (set) per backward pass
                else:
                    logits = getattr(outputs, "logits", None)
                    if logits is None:
                        raise TypeError(f"attribute: {type(model).__name__} returns no logits; pass a callable "
                                        "target, e.g. target=lambda out: out.last_hidden_state[:, 0, 5]")
                    if logits.dim() == 2:
                        if position is not None:
                            raise ValueError("attribute: position is for token-level heads; this model returns "
                                             "one logit vector per row")
                        targets = _class_targets(target, batch, logits.shape[-1], device)
                        targets = torch.where(targets < 0, logits.detach().argmax(-1), targets)
                        scores = logits.gather(-1, targets[:, None])  # [B, 1]
                    elif logits.dim() == 3 and not vision:
                        if position is None:
                            raise ValueError("attribute: a token-level head (masked LM, token classification) "
                                             "needs the explained position")
                        positions, several = _absolute_positions(position, attention_mask, batch, seq, device)
                        rows = torch.arange(batch, device=device)[:, None]
                        selected = logits[rows, positions]  # [B, P, V]
                        targets = _per_row_ids(target, "target", batch, positions.shape[1], several,
                                               logits.shape[-1], device)
                        predicted = selected.detach().argmax(-1)
                        targets = predicted if targets is None else torch.where(targets < 0, predicted, targets)
                        scores = selected.gather(-1, targets[..., None])[..., 0]  # [B, P]
                    else:
                        raise TypeError(f"attribute: cannot tell what to explain in logits of shape "
                                        f"{tuple(logits.shape)}; pass a callable target")

            n_scores = scores.shape[-1]
            relevance, pos_rel, type_rel, patch_rel, cls_rel, latents = [], [], [], [], [], []
            for j in range(n_scores):
                leaf.grad = None
                for h in hooks:
                    if isinstance(h, _Leaf):
                        h.zero()
                    else:
                        for t in h.tensors:
                            t.grad = None
                scores[..., j].sum().backward(retain_graph=j < n_scores - 1)
                grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                if vision:
                    relevance.append((upcast(leaf) * upcast(grad)).sum(1))
                    parts = _vision_shares(emb, patches.tensors[0], summed.tensors[0])
                    pos_rel.append(parts[0])
                    patch_rel.append(parts[1])
                    cls_rel.append(parts[2])
                else:
                    relevance.append((upcast(leaf) * upcast(grad)).sum(-1))
                    pos_rel.append(pos_leaf.relevance().expand(batch, seq))
                    if type_leaf is not None:
                        type_rel.append(type_leaf.relevance().expand(batch, seq))
                if recorder is not None:
                    latents.append(recorder.read())
                if progress is not None:
                    progress(j + 1, n_scores)
        finally:
            for h in hooks:
                h.hook.remove()
            if recorder is not None:
                recorder.close()

    def shaped(items):
        if not items:
            return None
        return (torch.stack(items, dim=1) if several else items[0]).detach()

    squeeze = (lambda t: t) if several else (lambda t: t[..., 0])
    logit = squeeze(upcast(scores.detach()))
    relevance = shaped(relevance)
    names = {}
    if input_ids is not None:
        names = token_names(tokenizer, input_ids, None if positions is None else squeeze(targets), None)
    if positions is None and targets is not None:  # a classification head: its label names
        labels = getattr(model.config, "id2label", None) or {}
        names["target_tokens"] = [labels.get(t, f"class {t}") for t in targets.tolist()]
    return Attribution(
        relevance=relevance,
        target=None if targets is None else (squeeze(targets) if positions is not None else targets),
        logit=logit,
        position=None if positions is None else squeeze(positions),
        position_relevance=shaped(pos_rel),
        latent=_stack_latent(latents, several) if latent else None,
        input_ids=input_ids,
        attention_mask=attention_mask,
        mode=mode,
        model_type=model.config.model_type,
        token_type_relevance=shaped(type_rel),
        pixel_relevance=relevance if vision else None,
        patch_relevance=shaped(patch_rel),
        cls_relevance=shaped(cls_rel),
        extras={"linear_rule": linear_rule, "gamma": gamma} if linear_rule != "epsilon" else {},
        **names,
    )


def _vision_shares(emb, patch_out, summed):
    """Epsilon-rule split of summed = cat(prefix tokens, patches) + position embeddings.

    All three summands share the gradient of the sum; each share is summand * grad, summed over
    the hidden dimension: (position [B, T], patches [B, P], prefix tokens [B, n_prefix]).
    """
    g = upcast(summed.grad if summed.grad is not None else summed.detach().new_zeros(summed.shape))
    n_prefix = summed.shape[1] - patch_out.shape[1]
    prefix = [getattr(emb, name) for name in ("cls_token", "distillation_token")
              if getattr(emb, name, None) is not None][:n_prefix]
    prefix = upcast(torch.cat(prefix, dim=1)) if prefix else g.new_zeros(1, 0, g.shape[-1])
    pos = emb.position_embeddings
    if pos.shape[1] != summed.shape[1]:
        raise NotImplementedError("attribute: interpolated position embeddings are not supported")
    pos_rel = (upcast(pos) * g).sum(-1)
    patch_rel = (upcast(patch_out.detach()) * g[:, n_prefix:]).sum(-1)
    cls_rel = (prefix * g[:, :n_prefix]).sum(-1)
    return pos_rel, patch_rel, cls_rel
