"""`lrp_triton.attribute`: explain logits of a causal language model with AttnLRP.

One forward pass through the base model, logits only at the explained positions, then one
backward pass per explained position from the explained score (target logit, minus the contrast
logit). Relevance of a tensor is `x * x.grad` after that backward (see `lrp_triton.apply` for the
rules each layer runs); token relevance is that product at the input embeddings, summed over the
hidden dimension.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from lrp_triton.apply import active_handle, apply
from lrp_triton.attribution import Attribution
from lrp_triton.backend import upcast
from lrp_triton.modules.mlp import _RecordingMixin
from lrp_triton.models import adapter_for
from lrp_triton.ops.attention import ATTENTION_MODES
from lrp_triton.ops.elementwise import lrp_softcap


# ------------------------------------------------------------------------------------------------
# Input checking
# ------------------------------------------------------------------------------------------------
def _check_inputs(model, input_ids, inputs_embeds, attention_mask, max_length):
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("attribute: pass exactly one of input_ids and inputs_embeds")
    device = next(model.parameters()).device
    if input_ids is not None:
        input_ids = torch.as_tensor(input_ids, device=device)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"attribute: input_ids must be integer [batch, seq], got {tuple(input_ids.shape)} "
                             f"{input_ids.dtype}")
        vocab = model.get_input_embeddings().num_embeddings
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab):
            raise ValueError(f"attribute: input_ids outside the vocabulary [0, {vocab})")
        batch, seq = input_ids.shape
    else:
        if inputs_embeds.dim() == 2:
            inputs_embeds = inputs_embeds[None]
        if inputs_embeds.dim() != 3:
            raise ValueError(f"attribute: inputs_embeds must be [batch, seq, hidden], got {tuple(inputs_embeds.shape)}")
        batch, seq = inputs_embeds.shape[:2]
    if seq == 0:
        raise ValueError("attribute: empty input sequence")
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask, device=device)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask[None]
        if tuple(attention_mask.shape) != (batch, seq):
            raise ValueError(f"attribute: attention_mask shape {tuple(attention_mask.shape)} does not match the "
                             f"input's [batch, seq] = {(batch, seq)}")
        attention_mask = attention_mask.to(torch.bool)
        if not attention_mask.any(-1).all():
            raise ValueError("attribute: a row of attention_mask has no token to attend to")
    if max_length is not None and seq > max_length:
        table = model.config.max_position_embeddings
        raise ValueError(f"attribute: sequence length {seq} exceeds the {max_length} tokens this model takes "
                         f"(its max_position_embeddings is {table}); shorten the input")
    return input_ids, inputs_embeds, attention_mask, batch, seq


def _absolute_positions(position, attention_mask, batch, seq, device) -> tuple[torch.Tensor, bool]:
    """[B, P] indices into the padded sequence; positions count over each row's real tokens."""
    several = isinstance(position, (list, tuple))
    positions = list(position) if several else [position]
    if not positions or not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise TypeError(f"attribute: position must be an int or a list of ints, got {position!r}")
    mask = attention_mask if attention_mask is not None else torch.ones(batch, seq, dtype=torch.bool, device=device)
    out = torch.empty(batch, len(positions), dtype=torch.long, device=device)
    for b in range(batch):
        real = mask[b].nonzero().flatten()
        for j, p in enumerate(positions):
            if not -len(real) <= p < len(real):
                raise IndexError(f"attribute: position {p} is out of range for row {b}, which has "
                                 f"{len(real)} tokens")
            out[b, j] = real[p]
    return out, several


def _per_row_ids(value, name, batch, n_positions, several, vocab, device):
    """Token ids as [B, P] (entries -1 where None: filled by the caller), or None."""
    if value is None:
        return None
    entries = list(value) if several else [value]
    if several and len(entries) != n_positions:
        raise ValueError(f"attribute: {name} must have one entry per position ({n_positions}), got {len(entries)}")
    out = torch.full((batch, n_positions), -1, dtype=torch.long, device=device)
    for j, entry in enumerate(entries):
        if entry is None:
            continue
        ids = torch.as_tensor(entry, device=device).long().flatten()
        if ids.numel() not in (1, batch):
            raise ValueError(f"attribute: {name} must be a token id or one id per batch row ({batch}), "
                             f"got {ids.numel()} values")
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"attribute: {name} id {ids.tolist()} is outside the vocabulary [0, {vocab})")
        out[:, j] = ids.expand(batch)
    return out


# ------------------------------------------------------------------------------------------------
# Temporary model state for one call
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _frozen_eval(model):
    """Eval mode (no dropout) and frozen parameters for the call; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@contextlib.contextmanager
def _applied(model, mode, backend):
    handle = active_handle(model)
    if handle is not None:
        if handle.mode != mode:
            raise ValueError(f"attribute: the model is applied with mode {handle.mode!r} but mode {mode!r} "
                             "was asked for; remove the handle or ask for the same mode")
        yield handle
        return
    handle = apply(model, mode, backend=backend)
    try:
        yield handle
    finally:
        handle.remove()


@contextlib.contextmanager
def _checkpointed(layers, enabled):
    """Each decoder layer recomputes its forward in the backward (non-reentrant checkpointing)."""
    if not enabled:
        yield
        return
    saved = []  # (layer, its own instance-level forward or None), e.g. accelerate's hooks
    for layer in layers:
        saved.append((layer, vars(layer).get("forward")))
        original = layer.forward
        layer.forward = (lambda fn: lambda *a, **kw: torch_checkpoint(fn, *a, use_reentrant=False, **kw))(original)
    try:
        yield
    finally:
        for layer, own in saved:
            if own is None:
                del layer.forward  # the class's forward shows through again
            else:
                layer.forward = own


def token_relevance(x: torch.Tensor, grad: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """sum over the last dim of x * grad, in float32 (float64 for float64 x), a chunk of positions at a time.

    x, grad: [..., N, hidden] -> [..., N]; never a float32 copy of the whole activation.
    """
    out = torch.empty(x.shape[:-1], dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    for s in range(0, x.shape[-2], chunk):
        out[..., s:s + chunk] = (upcast(x[..., s:s + chunk, :]) * upcast(grad[..., s:s + chunk, :])).sum(-1)
    return out


class _LatentRecorder:
    """Collects, with retain_grad, the tensors whose relevance `latent=True` reports."""

    def __init__(self, handle, adapter, model):
        self.residual, self.heads, self.neurons = [], [], []
        self._hooks = [layer.register_forward_pre_hook(self._residual_hook, with_kwargs=True)
                       for layer in adapter.decoder_layers(model)]
        self._mlps = [m for m in model.modules() if isinstance(m, _RecordingMixin)]
        self._handle = handle
        handle.set_recorders(self.heads)
        for m in self._mlps:
            m.recorder = self.neurons

    def _residual_hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.requires_grad:
            hidden.retain_grad()
            self.residual.append(hidden)

    def close(self):
        for h in self._hooks:
            h.remove()
        self._handle.set_recorders(None)
        for m in self._mlps:
            m.recorder = None

    def read(self):
        """Relevance of each recorded tensor, from the backward pass just run; resets the grads."""
        out = {
            "residual": [token_relevance(h, h.grad) for h in self.residual],
            "heads": [(upcast(o) * upcast(o.grad)).sum(dim=(1, 3)) for o in self.heads],
            "neurons": [(upcast(n) * upcast(n.grad)).sum(dim=1) for n in self.neurons] or None,
        }
        for t in self.residual + self.heads + self.neurons:
            t.grad = None
        return out


def _stack_latent(per_position, several):
    """Lists over positions of dicts of lists over layers -> dict of lists over layers ([B, P, ...])."""
    if not several:
        return per_position[0]
    out = {}
    for key in per_position[0]:
        if per_position[0][key] is None:
            out[key] = None
            continue
        out[key] = [torch.stack([p[key][i] for p in per_position], dim=1) for i in range(len(per_position[0][key]))]
    return out


# ------------------------------------------------------------------------------------------------
# attribute
# ------------------------------------------------------------------------------------------------
def attribute(model, input_ids=None, *, inputs_embeds=None, attention_mask=None, target=None,
              position: int | Sequence[int] | None = None, contrast=None, mode: str = "attnlrp",
              latent: bool = False, checkpoint: bool = False, backend: str = "auto", decoder_input_ids=None,
              decoder_attention_mask=None, tokenizer=None, progress=None, token_type_ids=None, pixel_values=None,
              linear_rule: str = "epsilon", gamma: float = 0.25) -> Attribution:
    """Explains the logit of `target` at `position` of a HuggingFace causal LM (or another supported model).

    Args:
        model: a supported `*ForCausalLM` model (see `lrp_triton.models.supported_model_types()`).
        input_ids: [B, N] token ids (or [N]); or `inputs_embeds` [B, N, hidden].
        attention_mask: [B, N], 1/True for real tokens, 0 for padding (left or right).
        target: token id to explain, one per row ([B]) or one for all; default: the model's own
            prediction. With several positions, a list with one such entry per position.
        position: index among each row's real tokens (negative from the end), or a list of them;
            all share one forward pass. Default: the last token (-1); for encoder classifiers none.
        contrast: token id (same forms as target): explains target logit minus contrast logit.
        mode: "attnlrp", "cp-lrp" or "gradient" (Input x Gradient).
        latent: also return the relevance of the residual stream, attention heads and MLP neurons.
        checkpoint: recompute each decoder layer in the backward (long contexts in less memory).
        backend: kernel backend for a model that is not applied yet ("auto", "triton", "torch").
        decoder_input_ids, decoder_attention_mask: encoder-decoder models (T5): the decoder prefix;
            `position` then counts over decoder tokens and `relevance` is at the encoder tokens, with
            `decoder_relevance` at the decoder tokens (see `lrp_triton.attribute_seq2seq`).
        tokenizer: optional; fills the result's `tokens`, `target_tokens` and `contrast_tokens`
            (token strings, for display) from `input_ids` (text models). Relevance is unaffected.
        progress: optional callable `progress(done, total)`, called after each explained
            position's (or score's) backward pass.
        token_type_ids, pixel_values, linear_rule ("epsilon", "gamma", "gamma-signed"), gamma: encoders
            and vision transformers (BERT, RoBERTa, ViT, DeiT), see `lrp_triton.attribute_encoder`; there
            `target` may also be a callable on the model outputs returning one scalar per row.

    Returns:
        An `Attribution` (relevance float32 [B, N], or [B, P, N] for several positions).
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attribute: unknown mode {mode!r}; expected one of {', '.join(ATTENTION_MODES)}")
    adapter = adapter_for(model)
    if adapter.kind in ("encoder", "vision"):
        from lrp_triton.attribute_encoder import attribute_encoder

        if contrast is not None or checkpoint or decoder_input_ids is not None:
            raise ValueError(f"attribute: contrast, checkpoint and decoder_input_ids are not available for "
                             f"{adapter.family} models")
        return attribute_encoder(model, input_ids=input_ids, inputs_embeds=inputs_embeds,
                                 attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 pixel_values=pixel_values, target=target, position=position, mode=mode,
                                 linear_rule=linear_rule, gamma=gamma, latent=latent, backend=backend,
                                 tokenizer=tokenizer, progress=progress)
    if token_type_ids is not None or pixel_values is not None or linear_rule != "epsilon":
        raise ValueError(f"attribute: token_type_ids, pixel_values and linear_rule apply to encoder and vision "
                         f"models, not {adapter.family}")
    position = -1 if position is None else position
    if adapter.kind == "seq2seq":
        from lrp_triton.attribute_seq2seq import attribute_seq2seq

        if inputs_embeds is not None:
            raise ValueError("attribute: encoder-decoder models take input_ids, not inputs_embeds")
        return attribute_seq2seq(model, adapter, input_ids, attention_mask=attention_mask,
                                 decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
                                 target=target, position=position, contrast=contrast, mode=mode, latent=latent,
                                 checkpoint=checkpoint, backend=backend, tokenizer=tokenizer, progress=progress)
    if decoder_input_ids is not None or decoder_attention_mask is not None:
        raise ValueError(f"attribute: decoder_input_ids only apply to encoder-decoder models, not {adapter.family}")
    lm_head = model.get_output_embeddings()
    if lm_head is None:
        raise TypeError(f"attribute: {type(model).__name__} has no language-model head; pass a *ForCausalLM model")
    if latent and checkpoint:
        raise ValueError("attribute: latent=True needs the layer activations kept, so it cannot be combined "
                         "with checkpoint=True")
    input_ids, inputs_embeds, attention_mask, batch, seq = _check_inputs(
        model, input_ids, inputs_embeds, attention_mask, adapter.max_length(model.config))
    device = next(model.parameters()).device
    positions, several = _absolute_positions(position, attention_mask, batch, seq, device)
    n_pos = positions.shape[1]
    vocab = lm_head.weight.shape[0]
    targets = _per_row_ids(target, "target", batch, n_pos, several, vocab, device)
    contrasts = _per_row_ids(contrast, "contrast", batch, n_pos, several, vocab, device)
    if contrasts is not None and (contrasts < 0).any():
        raise ValueError("attribute: contrast must give an id for every position (None only as a whole)")

    with _frozen_eval(model), _applied(model, mode, backend) as handle, \
            _checkpointed(adapter.decoder_layers(model), checkpoint):
        if input_ids is not None:
            embeds = model.get_input_embeddings()(input_ids)
        else:
            embeds = inputs_embeds.to(device=device, dtype=next(model.parameters()).dtype)
        embeds = embeds.detach().requires_grad_(True)
        if attention_mask is None:
            attention_mask = torch.ones(batch, seq, dtype=torch.bool, device=device)
        # positions count real tokens only, so left padding does not shift RoPE / learned positions
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

        pos_emb_out = []
        pos_module = adapter.position_embedding(model)
        pos_hook = None
        if pos_module is not None:
            def keep_output(module, args, output):
                output = output.detach().requires_grad_(True)  # a leaf: its grad is its relevance carrier
                pos_emb_out.append(output)
                return output
            pos_hook = pos_module.register_forward_hook(keep_output)
        recorder = _LatentRecorder(handle, adapter, model) if latent else None
        try:
            with torch.enable_grad():
                hidden = adapter.base_model(model)(inputs_embeds=embeds, attention_mask=attention_mask,
                                                   position_ids=position_ids, use_cache=False)[0]
                rows = torch.arange(batch, device=device)[:, None]
                logits = lm_head(hidden[rows, positions])  # [B, P, vocab]: only where explained
                cap = adapter.final_logit_softcap(model.config)
                if cap:
                    logits = cap * torch.tanh(logits / cap) if mode == "gradient" else lrp_softcap(logits, cap)
                predicted = logits.detach().argmax(-1)
                targets = predicted if targets is None else torch.where(targets < 0, predicted, targets)
                scores = logits.gather(-1, targets[..., None])[..., 0]
                if contrasts is not None:
                    scores = scores - logits.gather(-1, contrasts[..., None])[..., 0]
            relevance, pos_relevance, latents = [], [], []
            for j in range(n_pos):
                embeds.grad = None
                for pe in pos_emb_out:
                    pe.grad = None
                scores[:, j].sum().backward(retain_graph=j < n_pos - 1)
                relevance.append(token_relevance(embeds, embeds.grad))
                if pos_emb_out:
                    pe = pos_emb_out[0]
                    pos_relevance.append(token_relevance(pe, pe.grad).expand(batch, seq))
                if recorder is not None:
                    latents.append(recorder.read())
                if progress is not None:
                    progress(j + 1, n_pos)
        finally:
            if pos_hook is not None:
                pos_hook.remove()
            if recorder is not None:
                recorder.close()

    def shaped(items):
        return torch.stack(items, dim=1) if several else items[0]

    squeeze = (lambda t: t) if several else (lambda t: t[:, 0])
    names = token_names(tokenizer, input_ids, squeeze(targets), None if contrasts is None else squeeze(contrasts))
    return Attribution(
        relevance=shaped(relevance).detach(),
        target=squeeze(targets),
        logit=squeeze(upcast(scores.detach())),
        position=squeeze(positions),
        contrast=None if contrasts is None else squeeze(contrasts),
        position_relevance=shaped(pos_relevance).detach() if pos_relevance else None,
        latent=_stack_latent(latents, several) if latent else None,
        input_ids=input_ids,
        attention_mask=attention_mask,
        mode=mode,
        model_type=model.config.model_type,
        model_name=str(getattr(model, "name_or_path", "") or ""),
        **names,
    )


def token_names(tokenizer, input_ids, targets, contrasts) -> dict:
    """Token strings of the inputs, targets and contrasts, as Attribution fields ({} without a tokenizer)."""
    if tokenizer is None:
        return {}

    def convert(ids):
        if ids is None:
            return None
        ids = ids.tolist()
        return [tokenizer.convert_ids_to_tokens(row) for row in ids]

    return {"tokens": convert(input_ids), "target_tokens": convert(targets), "contrast_tokens": convert(contrasts)}
