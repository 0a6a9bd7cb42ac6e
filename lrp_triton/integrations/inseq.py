"""AttnLRP as inseq attribution methods: `pip install 'lrp_triton[inseq]'`.

Importing this module registers two `inseq.attr.FeatureAttribution` subclasses in inseq's own
registry (found by `method_name`; no fork of inseq): "attnlrp" and "cp-lrp".

    import inseq, lrp_triton.integrations.inseq
    m = inseq.load_model(model, "attnlrp", tokenizer=tok)       # a model object or a local directory
    out = m.attribute(prompt, prompt + continuation, attributed_fn="logit")

- The model is applied (`lrp_triton.apply`, this instance only) while the method is hooked to the
  inseq model, and restored when inseq unhooks it (another method, inseq's own generation) or
  when the inseq model is garbage-collected. A model the user applied already with the same rules
  is used as it is and left applied.
- Attention runs through lrp_triton's kernel whatever attention implementation the model was
  loaded with (inseq loads a directory with `attn_implementation="eager"`; `apply` switches this
  instance to "lrp_triton" through a private config copy), so attention memory stays O(N): no
  N x N buffer. inseq's own generation, unhooked, runs the loaded implementation: pass
  `model_kwargs={"attn_implementation": "sdpa"}` to `load_model` for O(N) generation too.
- One forward pass for every generated token (a final-step method, as inseq's attention methods):
  the K steps are K explained positions of one `lrp_triton.attribute` call, so the numbers are
  `lrp_triton.attribute`'s (the K scores go through batched backward passes, 16 at a time).
- What is explained: the target token's logit (`attributed_fn="logit"`, the default while the
  method is hooked), or logit minus the contrast token's logit (`"contrast_logits_diff"` with
  `contrast_targets=...`, the contrast token at each step as inseq aligns it). LRP explains a
  logit: inseq's probability-based functions would explain a softmax over the whole vocabulary,
  whose relevance is not conserved by any LRP rule, and are refused with this explanation.
- Decoder-only models: `target_attributions` [prefix, steps] (token relevance: x * x.grad summed
  over the hidden dimension; learned position embeddings, GPT-2's, are not token relevance).
  Encoder-decoder models (T5): `source_attributions` [source, steps], and with
  `attribute_target=True` also `target_attributions` [target prefix, steps].
"""

from __future__ import annotations

import weakref

import torch

from lrp_triton.apply import active_handle, apply
from lrp_triton.attribute import attribute
from lrp_triton.integrations import require

require("inseq", "inseq")

from inseq.attr.feat import FeatureAttribution  # noqa: E402
from inseq.attr.feat.attribution_utils import check_attribute_positions  # noqa: E402
from inseq.attr.step_functions import get_step_function  # noqa: E402
from inseq.data import DecoderOnlyBatch, FeatureAttributionStepOutput, get_batch_from_inputs  # noqa: E402
from inseq.utils import get_aligned_idx  # noqa: E402

EXPLAINED = ("logit", "contrast_logits_diff")


class AttnLRPAttribution(FeatureAttribution):
    """inseq method "attnlrp": AttnLRP relevance of each generated token's logit (module docstring).

    `backend` ("auto", "triton", "torch", "sdpa") is handed to `lrp_triton.apply`.
    """

    method_name = "attnlrp"
    mode = "attnlrp"

    def __init__(self, attribution_model, backend: str = "auto", **kwargs):
        super().__init__(attribution_model, hook_to_model=False)
        self.is_final_step_method = True  # one pass over the full sequence explains every step
        self.backend = backend
        self._release = None
        self._default_fn = None
        self._first_step = None
        self.hook(**kwargs)

    # ---------------------------------------------------------------- hooking = apply / remove
    def hook(self, **kwargs) -> None:
        super().hook(**kwargs)
        model = self.attribution_model.model
        if self._release is None or not self._release.alive:
            handle = active_handle(model)
            if handle is None:
                handle = apply(model, self.mode, backend=self.backend)
                self._release = weakref.finalize(self.attribution_model, handle.remove)
            elif handle.mode != self.mode:
                raise ValueError(f"inseq method {self.method_name!r}: the model is applied with mode "
                                 f"{handle.mode!r}; remove that handle first")
        if self._default_fn is None:  # while hooked, the default explained score is the logit (inseq's
            # property has no working setter in 0.7.1, hence its attribute)
            self._default_fn = self.attribution_model._default_attributed_fn_id
            self.attribution_model._default_attributed_fn_id = "logit"
        self.attribution_model.is_hooked = True

    def unhook(self, **kwargs) -> None:
        if self._release is not None:
            self._release()  # handle.remove(), once
            self._release = None
        if self._default_fn is not None:
            self.attribution_model._default_attributed_fn_id = self._default_fn
            self._default_fn = None
        super().unhook(**kwargs)

    # ---------------------------------------------------------------- attribution
    def attribute(self, batch, attributed_fn, attr_pos_start=None, attr_pos_end=None, **kwargs):
        explained = [get_step_function(name) for name in EXPLAINED]
        if attributed_fn not in explained:
            name = getattr(attributed_fn, "__name__", repr(attributed_fn))
            raise NotImplementedError(
                f"inseq method {self.method_name!r} explains a logit: attributed_fn='logit' or "
                f"'contrast_logits_diff' (with contrast_targets=...), got {name}. LRP conserves the relevance "
                "of a logit; a probability is a softmax over the whole vocabulary, which no LRP rule explains")
        self._first_step, _ = check_attribute_positions(batch.max_generation_length, attr_pos_start, attr_pos_end)
        return super().attribute(batch, attributed_fn, attr_pos_start=attr_pos_start, attr_pos_end=attr_pos_end,
                                 **kwargs)

    def filtered_attribute_step(self, batch, target_ids, attributed_fn, target_attention_mask=None,
                                attribute_target: bool = False, step_scores=(), attribution_args={},
                                attributed_fn_args={}, step_scores_args={}) -> FeatureAttributionStepOutput:
        """The final step's output: relevance of every attributed step at once, [B, tokens, K] for
        the K steps from the first attributed one (`_build_multistep_output_from_single_step`
        slices step by step out of it): O(N * K), never N x N."""
        if step_scores:
            raise ValueError(f"inseq method {self.method_name!r} attributes every step from one forward pass and "
                             "computes no step scores; compute them separately with method='dummy'")
        if attribution_args:
            raise TypeError(f"inseq method {self.method_name!r} takes no attribution arguments, got "
                            f"{sorted(attribution_args)}")
        encoder_decoder = self.attribution_model.is_encoder_decoder
        prefix = batch.targets if encoder_decoder else batch
        full = torch.cat([prefix.input_ids, target_ids.reshape(-1, 1).to(prefix.input_ids.device)], dim=1)
        last = torch.ones_like(full[:, :1]) if target_attention_mask is None else target_attention_mask.reshape(-1, 1)
        mask = torch.cat([prefix.attention_mask, last.to(prefix.attention_mask)], dim=1).bool()
        steps = full.shape[1] - 1  # the logit at position c explains token c + 1
        columns = range(max(1, self._first_step) - 1, steps)
        contrasts = self._contrast_ids(attributed_fn, attributed_fn_args, full.shape)
        shape = (full.shape[0], steps, len(columns))
        source = torch.zeros(shape[0], batch.sources.input_ids.shape[1], shape[2]) if encoder_decoder else None
        target = torch.zeros(shape) if not encoder_decoder or attribute_target else None
        for b in range(full.shape[0]):
            real = mask[b].nonzero().flatten()  # each row's real tokens (decoder-only rows are padded left)
            explained = [(j, c) for j, c in enumerate(columns) if mask[b, c] and mask[b, c + 1]]
            if not explained:
                continue
            index = {int(p): i for i, p in enumerate(real)}
            kwargs = dict(position=[index[c] for _, c in explained], target=[int(full[b, c + 1]) for _, c in explained],
                          contrast=None if contrasts is None else [int(contrasts[b, c + 1]) for _, c in explained],
                          mode=self.mode, backend=self.backend)
            model = self.attribution_model.model
            if encoder_decoder:
                src = batch.sources.attention_mask[b].bool().nonzero().flatten()
                r = attribute(model, batch.sources.input_ids[b:b + 1, src], decoder_input_ids=full[b:b + 1, real],
                              **kwargs)
                decoder = r.decoder_relevance
            else:
                r = attribute(model, full[b:b + 1, real], **kwargs)
                decoder = r.relevance
            prefix_real = real[real < steps]
            for k, (j, _) in enumerate(explained):
                if source is not None:
                    source[b, src, j] = r.relevance[0, k].float().cpu()
                if target is not None:
                    target[b, prefix_real, j] = decoder[0, k, :len(prefix_real)].float().cpu()
        return FeatureAttributionStepOutput(source_attributions=source, target_attributions=target, step_scores={})

    def _build_multistep_output_from_single_step(self, single_step_output, attr_pos_start: int, attr_pos_end: int):
        """inseq's own slicing, with step s in column s - first (the output holds the attributed steps only)."""
        first = max(1, self._first_step)
        steps = []
        for pos in range(attr_pos_start, attr_pos_end):
            step = single_step_output.clone_empty()
            step.source = single_step_output.source
            step.prefix = [p[:pos] for p in single_step_output.prefix]
            step.target = (single_step_output.target if pos == attr_pos_end - 1
                           else [[p[pos]] for p in single_step_output.prefix])
            if single_step_output.source_attributions is not None:
                step.source_attributions = single_step_output.source_attributions[:, :, pos - first]
            if single_step_output.target_attributions is not None:
                step.target_attributions = single_step_output.target_attributions[:, :pos, pos - first]
            steps.append(step)
        return steps

    def _contrast_ids(self, attributed_fn, attributed_fn_args: dict, shape) -> torch.Tensor | None:
        """[B, length] contrast ids: at p, the one inseq's contrast_logits_fn takes for the token at p
        (the contrast sequence's token aligned with p), or None without a contrast."""
        if attributed_fn is not get_step_function("contrast_logits_diff"):
            return None
        contrast_targets = attributed_fn_args.get("contrast_targets")
        if contrast_targets is None:
            raise ValueError("attributed_fn='contrast_logits_diff' needs contrast_targets=... (the contrastive text)")
        if attributed_fn_args.get("contrast_sources") is not None:
            raise NotImplementedError("contrast_sources (another source text) changes the input, which gradients "
                                      "of one forward pass cannot explain; give contrast_targets only")
        model = self.attribution_model
        contrast = DecoderOnlyBatch.from_batch(get_batch_from_inputs(
            attribution_model=model, inputs=contrast_targets, as_targets=model.is_encoder_decoder)).target_ids
        if contrast.shape[0] != shape[0]:
            raise ValueError(f"contrast_targets has {contrast.shape[0]} sequences for a batch of {shape[0]}")
        alignments = attributed_fn_args.get("contrast_targets_alignments") or []
        alignments = alignments[0] if alignments and isinstance(alignments[0], list) else alignments
        out = torch.zeros(shape, dtype=torch.long)
        for p in range(shape[1]):
            i = get_aligned_idx(p, alignments)  # -1 where unaligned: inseq then takes the last token too
            if i >= contrast.shape[1]:
                continue  # a position inseq never explains against this contrast
            out[:, p] = contrast[:, i]
        return out


class CPLRPAttribution(AttnLRPAttribution):
    """inseq method "cp-lrp": the CP-LRP variant (no relevance through the attention's query and
    key paths; see `lrp_triton.rules`), otherwise as "attnlrp"."""

    method_name = "cp-lrp"
    mode = "cp-lrp"
