"""What is explained, scored on the model as it is (no LRP rules), for batches of inputs.

`Scorer` prepares each data-set row as an `Example` (tokens and the positions that may be
perturbed, or an image and its patches; the explained target and its unperturbed score), scores
batches of perturbed variants (one forward pass per batch) and gives the gradient methods the
input they differentiate (word embeddings or pixels). The explained score per model kind:

- causal LMs: the next-token logit at the last real token (default target: the model's prediction);
  computed as `attribute` does: base model, then the LM head at that token only.
- encoders (BERT family): a classification head's class logit (default: the top class), or a
  callable `score(outputs, attention_mask, row) -> [B]` (e.g. a sentence similarity).
- vision (ViT, DeiT): the class logit (default: the top class) or a callable score.
- seq2seq (T5, BART): the first decoder token's logit, decoding from the start token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lrp_triton.apply import active_handle
from lrp_triton.attribution.classifier import sequence_classifier_head
from lrp_triton.attribution.devices import execution_device
from lrp_triton.evaluation.perturbation import (fill_image, patch_sums, perturb_patches, perturb_tokens,
                                                replacement_token)
from lrp_triton.models import adapter_for


@dataclass
class Example:
    """One prepared row: its inputs, the features that may be perturbed, the target and its score."""

    index: int
    row: object
    features: torch.Tensor  # text: token positions [F]; images: patch indices [F]
    target: int | None = None  # None with a callable score
    score: float = 0.0  # the unperturbed explained score
    input_ids: torch.Tensor | None = None  # [N]
    token_type_ids: torch.Tensor | None = None  # [N]
    pixel_values: torch.Tensor | None = None  # [C, H, W]
    fill: torch.Tensor | None = None  # images: the fill image of the perturbation


def _row_fields(row, index: int) -> dict:
    """A text row as a dict: a str is {"text": row}; a dict needs a "text" entry."""
    if isinstance(row, str):
        return {"text": row}
    if isinstance(row, dict) and isinstance(row.get("text"), str):
        return row
    raise ValueError(f"evaluate: row {index} must be a string or a dict with a 'text' string, got {row!r:.80}")


class Scorer:
    """The explained score of `model` (see the module docstring); `perturbation` as in `perturbation`."""

    def __init__(self, model, tokenizer=None, score: Callable | None = None, perturbation=None):
        self.model, self.tokenizer, self.score_fn = model, tokenizer, score
        self.adapter = adapter_for(model)
        if active_handle(model) is not None:
            raise ValueError("evaluate: the model is applied (lrp_triton.apply); remove the handle first: the "
                             "gradient methods need the model's plain backward, and each LRP method applies its "
                             "own rules")
        self.kind = self.adapter.kind
        self.device = execution_device(model)  # a dispatched model's input device (its weights may be on meta)
        if score is not None and not callable(score):
            raise TypeError(f"evaluate: score must be a callable score(outputs, attention_mask, row) -> [B], got "
                            f"{score!r}")
        if self.kind in ("causal_lm", "seq2seq") and score is not None:
            raise ValueError(f"evaluate: a callable score is for encoders and vision models; {self.adapter.family} "
                             "explains its next-token logit")
        if self.kind == "causal_lm" and sequence_classifier_head(model) is not None:
            raise NotImplementedError("evaluate: decoder sequence classifiers are not supported yet; pass the "
                                      "causal LM, an encoder or a vision model")
        if self.kind == "vision":
            self.patch = int(model.config.patch_size)
            self.perturbation = "zero" if perturbation is None else perturbation
            fill_image(torch.zeros(1, self.patch, self.patch), self.perturbation, self.patch)  # checks the name
        else:
            if tokenizer is None:
                raise ValueError("evaluate: text models need their tokenizer (evaluate(model, tokenizer, rows))")
            self.perturbation = "unk" if perturbation is None else perturbation
            self.replacement = replacement_token(tokenizer, self.perturbation)
            pad = tokenizer.pad_token_id
            self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
            self.special = set(tokenizer.all_special_ids) - ({self.replacement} if self.replacement is not None
                                                             else set())

    # -- examples ---------------------------------------------------------------------------------
    def prepare(self, row, index: int) -> Example:
        if self.kind == "vision":
            pixels = row.get("pixel_values") if isinstance(row, dict) else row
            if not isinstance(pixels, torch.Tensor) or pixels.dim() != 3:
                raise ValueError(f"evaluate: row {index} of a vision model must be pixel_values [C, H, W] (or a "
                                 "dict holding them)")
            pixels = pixels.to(self.device, next(self.model.parameters()).dtype)
            h, w = pixels.shape[1:]
            if h % self.patch or w % self.patch:
                raise ValueError(f"evaluate: row {index}: image {h}x{w} is not a whole number of {self.patch}-pixel "
                                 "patches")
            example = Example(index, row, torch.arange((h // self.patch) * (w // self.patch)), pixel_values=pixels,
                              fill=fill_image(pixels, self.perturbation, self.patch))
        else:
            fields = _row_fields(row, index)
            pair = fields.get("text_pair")
            enc = self.tokenizer(fields["text"], pair, return_tensors="pt") if pair else \
                self.tokenizer(fields["text"], return_tensors="pt")
            ids = enc["input_ids"][0].to(self.device)
            types = enc.get("token_type_ids")
            features = torch.tensor([i for i, t in enumerate(ids.tolist()) if t not in self.special], dtype=torch.long)
            if features.numel() == 0:
                raise ValueError(f"evaluate: row {index} has no token that can be perturbed")
            types = None if types is None or self.kind != "encoder" else types[0].to(self.device)
            example = Example(index, row, features, input_ids=ids, token_type_ids=types)
            example.target = self._given_target(fields, index)
        with torch.no_grad():
            if example.target is None and self.score_fn is None:
                example.target = int(self._outputs_logits(example, self._unperturbed(example)).argmax(-1)[0])
            example.score = float(self._scores(example, self._unperturbed(example))[0])
        return example

    def _given_target(self, fields: dict, index: int) -> int | None:
        target = fields.get("target")
        if target is None or isinstance(target, int) and not isinstance(target, bool):
            return target
        if isinstance(target, str) and self.kind != "encoder":
            ids = self.tokenizer.encode(target, add_special_tokens=False)
            if len(ids) == 1:
                return ids[0]
        raise ValueError(f"evaluate: row {index}: target {target!r} must be a token id / class index (or, for "
                         "language models, a string of one token)")

    # -- model inputs -------------------------------------------------------------------------------
    def _unperturbed(self, example: Example) -> dict:
        if example.pixel_values is not None:
            return {"pixel_values": example.pixel_values[None]}
        inputs = {"input_ids": example.input_ids[None],
                  "attention_mask": torch.ones(1, example.input_ids.shape[0], dtype=torch.bool, device=self.device)}
        if example.token_type_ids is not None:
            inputs["token_type_ids"] = example.token_type_ids[None]
        return inputs

    def variants(self, example: Example, perturbed: torch.Tensor) -> dict:
        """The model inputs of the variants perturbed [V, F] of `example`."""
        if example.pixel_values is not None:
            return {"pixel_values": perturb_patches(example.pixel_values, example.fill, perturbed, self.patch)}
        ids, mask, types = perturb_tokens(example.input_ids, example.features, perturbed, self.replacement,
                                          self.pad_id, example.token_type_ids)
        return {"input_ids": ids, "attention_mask": mask, **({} if types is None else {"token_type_ids": types})}

    def _outputs_logits(self, example: Example, inputs: dict):
        """The model's outputs (a callable score's argument), or the explained logits [B, classes]."""
        model, adapter, mask = self.model, self.adapter, inputs.get("attention_mask")
        if self.kind == "causal_lm":
            text = {k: v for k, v in inputs.items() if k in ("input_ids", "inputs_embeds")}
            hidden = adapter.base_model(model)(**text, attention_mask=mask, use_cache=False,
                                               position_ids=adapter.position_ids(model.config, mask))[0]
            hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.long().sum(1) - 1]
            scale = adapter.output_scale(model.config)
            logits = adapter.head(model)(hidden if scale is None else hidden * scale)
            cap = adapter.final_logit_softcap(model.config)
            return logits if not cap else cap * torch.tanh(logits / cap)
        if self.kind == "seq2seq":
            batch = mask.shape[0]
            start = torch.full((batch, 1), model.config.decoder_start_token_id, dtype=torch.long, device=self.device)
            return model(**inputs, decoder_input_ids=start, use_cache=False).logits[:, -1]
        if self.kind == "encoder":
            inputs = {**inputs, "position_ids": adapter.position_ids(model.config, mask)}
        outputs = model(**inputs)
        if self.score_fn is not None:
            return outputs
        logits = getattr(outputs, "logits", None)
        if logits is None or logits.dim() != 2:
            raise ValueError(f"evaluate: {type(model).__name__} has no classification logits [B, classes]; pass a "
                             "callable score(outputs, attention_mask, row)")
        return logits

    def _scores(self, example: Example, inputs: dict) -> torch.Tensor:
        out = self._outputs_logits(example, inputs)
        if self.score_fn is not None:
            scores = self.score_fn(out, inputs.get("attention_mask"), example.row)
            batch = next(iter(inputs.values())).shape[0]
            if not isinstance(scores, torch.Tensor) or scores.shape != (batch,):
                raise ValueError(f"evaluate: the score callable must return a tensor [B] = [{batch}], got "
                                 f"{getattr(scores, 'shape', scores)}")
            return scores
        return out[:, example.target]

    def score_variants(self, example: Example, perturbed: torch.Tensor, batch_size: int) -> list[float]:
        """The explained score of each variant perturbed [V, F], `batch_size` variants per forward pass."""
        out = []
        with torch.no_grad():
            for s in range(0, perturbed.shape[0], batch_size):
                out += self._scores(example, self.variants(example, perturbed[s:s + batch_size])).float().tolist()
        return out

    # -- gradient methods ---------------------------------------------------------------------------
    def gradient_input(self, example: Example) -> torch.Tensor:
        """What the gradient methods differentiate: word embeddings [N, D], or pixels [C, H, W]."""
        if example.pixel_values is not None:
            return example.pixel_values
        embed = self.adapter.seq2seq_embeddings(self.model)[0] if self.kind == "seq2seq" else \
            self.adapter.embeddings(self.model).word
        with torch.no_grad():
            return embed(example.input_ids[None])[0]

    def input_scores(self, example: Example, x: torch.Tensor) -> torch.Tensor:
        """The explained score [B] of a batch x [B, *gradient_input] (differentiable)."""
        if example.pixel_values is not None:
            return self._scores(example, {"pixel_values": x})
        inputs = {"inputs_embeds": x, "attention_mask": torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)}
        if example.token_type_ids is not None:
            inputs["token_type_ids"] = example.token_type_ids.expand(x.shape[:2])
        return self._scores(example, inputs)

    def feature_relevance(self, example: Example, relevance: torch.Tensor) -> torch.Tensor:
        """Per-token [N] or per-pixel [H, W] relevance -> per feature [F] (float64, on the CPU)."""
        relevance = relevance.detach().double().cpu()
        if example.pixel_values is not None:
            return patch_sums(relevance, self.patch)
        return relevance[example.features]

    def attribute_kwargs(self, example: Example) -> dict:
        """The inputs and target of `lrp_triton.attribute` for this example."""
        if example.pixel_values is not None:
            inputs = {"pixel_values": example.pixel_values[None]}
        else:
            inputs = self._unperturbed(example)
        if self.score_fn is not None:
            mask, row = inputs.get("attention_mask"), example.row
            return {**inputs, "target": lambda outputs: self.score_fn(outputs, mask, row)}
        return {**inputs, "target": example.target}
