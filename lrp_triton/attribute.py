"""`lrp_triton.attribute`: the one entry point of attribution, dispatching by the adapter's kind.

It validates the rule options once (`LRPOptions.checked`), refuses arguments that do not apply to
the model's kind, and hands over to the driver in `lrp_triton.attribution`: `decoder` (causal
LMs), `classifier` (their sequence-classification heads), `encoder` (BERT-family text encoders),
`vision` (ViT, DeiT, CLIP / SigLIP vision towers), `seq2seq` (T5), `contrastive` (the joint
CLIP / SigLIP models: an image-text similarity) or `multimodal` (vision-language models: Qwen2-VL,
Qwen3-VL, LLaVA).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from lrp_triton.attribution.core import attribution_call
from lrp_triton.attribution.classifier import explain_decoder_classifier, sequence_classifier_head
from lrp_triton.attribution.contrastive import explain_contrastive
from lrp_triton.attribution.decoder import explain_decoder
from lrp_triton.attribution.encoder import explain_encoder
from lrp_triton.attribution.multimodal import explain_vision_language
from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.seq2seq import explain_seq2seq
from lrp_triton.attribution.vision import explain_vision
from lrp_triton.models import adapter_for
from lrp_triton.options import LRPOptions


def _refuse(family: str, hint: str = "", **given) -> None:
    """A ValueError naming the arguments given that the model's kind does not take."""
    bad = [name for name, value in given.items() if value is not None and value is not False]
    if bad:
        raise ValueError(f"attribute: {', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not apply to "
                         f"{family} models" + (f" ({hint})" if hint else ""))


@attribution_call
def attribute(model, input_ids=None, *, inputs_embeds=None, attention_mask=None,
              target: int | torch.Tensor | Callable | None = None, position: int | Sequence[int] | None = None,
              contrast=None, mode: str = "attnlrp", latent: bool = False, checkpoint: bool = False,
              backend: str = "auto", decoder_input_ids=None, decoder_attention_mask=None, tokenizer=None,
              progress: Callable[[int, int], None] | None = None, token_type_ids=None, pixel_values=None,
              linear_rule: str = "epsilon", gamma: float = 0.25, image_grid_thw=None,
              mm_token_type_ids=None, image_sizes=None, pixel_attention_mask=None, labels=None) -> Attribution:
    """Explains a score of a supported HuggingFace model (see `lrp_triton.models.supported_model_types()`).

    Args:
        model: a supported model: a `*ForCausalLM` or a decoder `*ForSequenceClassification` (the class
            logit at each row's last real token), a BERT/RoBERTa encoder or task model, a ViT/DeiT, a
            CLIP / SigLIP joint model or tower, or a T5 `ForConditionalGeneration`.
        input_ids: [B, N] token ids (or [N]); or `inputs_embeds` [B, N, hidden] (not for T5).
        attention_mask: [B, N], 1/True for real tokens, 0 for padding (left or right).
        target: token id to explain, one per row ([B]) or one for all; default: the model's own
            prediction. With several positions, a list with one such entry per position. Encoders and
            vision: a class index, or a callable `target(outputs) -> scores` (one scalar per row, or a
            0-d score of the whole batch, e.g. a sentence similarity; see `lrp_triton.attribution.scores`).
            An embedding tower without logits (CLIP / SigLIP towers): a dimension of its embedding. A joint
            CLIP / SigLIP model: "similarity" (the default), each row's image-text logit.
        position: index among each row's real tokens (negative from the end), or a list of them; all
            share one forward pass. Default: the last token (-1); none for classification heads;
            decoder tokens for T5.
        contrast: token id (same forms as target): explains target logit minus contrast logit
            (causal LMs, T5).
        mode: "attnlrp", "cp-lrp" or "gradient" (Input x Gradient); see `lrp_triton.rules`.
        latent: also return the relevance of the residual stream, attention heads and MLP neurons.
        checkpoint: recompute each layer in the backward (long contexts in less memory).
        backend: kernel backend for a model that is not applied yet ("auto", "triton", "torch").
        decoder_input_ids, decoder_attention_mask: T5's decoder prefix (default: the start token);
            `relevance` is then at the encoder tokens and `decoder_relevance` at the decoder tokens.
        tokenizer: optional; fills the result's `tokens`, `target_tokens` and `contrast_tokens`
            (token strings, for display) from `input_ids` (text models). Relevance is unaffected.
        progress: optional callable `progress(done, total)`, called for each explained score once its
            relevance is read (several scores share one batched backward pass).
        token_type_ids: BERT-family encoders. pixel_values: [B, C, H, W], vision transformers and the
            joint CLIP / SigLIP models (with input_ids; one image or one text is paired with every row).
        pixel_values, image_grid_thw, mm_token_type_ids: vision-language models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), as
            the model's processor returns them (`attribute(model, **processor(images=..., text=...))`):
            the flattened patches [n_patches, patch_dim], the (t, h, w) patch grid of each image, and the
            token types (default: images where input_ids holds the image token). LLaVA: pixel_values
            [n_images, C, H, W] alone (the tower's image size; no image_grid_thw). LLaVA-NeXT:
            pixel_values [n_images, n_tiles, C, S, S] with image_sizes [n_images, 2]. Idefics3 / SmolVLM:
            pixel_values [B, n_sub_images, C, H, W] and pixel_attention_mask [B, n_sub_images, H, W]
            (one map per sub-image, see `lrp_triton.models.idefics3`). PaliGemma and Gemma 3: pixel_values
            [n_images, C, H, W] with the processor's token_type_ids (they make the decoder attend
            bidirectionally over PaliGemma's prefix and within each Gemma 3 image; without them, as in
            the model: Gemma 3 causal, PaliGemma bidirectional over the whole sequence). Other
            families accept a processor's token_type_ids (a tokenizer's segment ids) when all 0 and
            ignore them: their decoders have no token-type embedding; others are a ValueError. `labels` (training targets, which PaliGemma's processor returns)
            are accepted and do not change the explained logits. The result is a
            `VisionLanguageAttribution`: relevance over the merged sequence, the text tokens', per image
            pixel [H, W], patch and image-token maps, and the image / text totals.
        linear_rule ("epsilon", "gamma", "gamma-signed"), gamma: the rule of the linear and convolution
            layers of the base model (see `lrp_triton.ops.gamma`); task heads keep the epsilon rule.

    Returns:
        An `Attribution` (relevance float32 [B, N], or [B, P, N] for several positions; [B, H, W]
        for images; float64 for a float64 model).

    Input checks (before any work; the model is left as it was):
        - ids (input_ids, decoder_input_ids, token_type_ids): any integer dtype (int32 / int64 kept,
          int8 / int16 / uint8 / ... widened to int64), inside the vocabulary; bool and float refused
          (ValueError). A batch of 0 rows, or rows of 0 tokens (0 x 0 images), is a ValueError.
        - inputs_embeds: floating point, hidden size = the model's input embeddings; pixel_values:
          floating point, config.num_channels channels, config.image_size; attention masks: 0/1 or bool.
        - target / contrast: ints, integer tensors or lists of ints as above; float, bool, str, a
          callable for a language model, or None inside a per-row list are a TypeError naming the
          argument and what it takes. A callable target must return a float tensor [B] or 0-d.
        - NaN / inf: non-finite inputs_embeds or pixel_values (also after the cast to the model's
          dtype) are a ValueError naming the rows; after the forward, an explained score (logit,
          contrast difference, callable score) that is NaN or inf is a ValueError naming the rows,
          since its relevance would be NaN; so is relevance that comes out NaN or inf behind a
          finite score (a NaN weight on the backward path).

    Calls: works under torch.no_grad and torch.inference_mode; one call at a time per model instance
    (other threads wait); a PEFT model is explained through the transformers model it holds.

    Raises:
        ValueError / TypeError: one clear message per bad argument, as listed above.
    """
    for name, flag in (("latent", latent), ("checkpoint", checkpoint)):
        if not isinstance(flag, bool):
            raise TypeError(f"attribute: {name} must be True or False, got {flag!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"attribute: progress must be a callable progress(done, total) or None, got {progress!r}")
    options = LRPOptions.checked(mode, backend, linear_rule, gamma, where="attribute")
    adapter = adapter_for(model)
    family, kind = adapter.family, adapter.kind_for(model)
    if kind != "seq2seq":
        _refuse(family, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask)
    if kind != "vision_language":
        _refuse(family, "training labels; explain a `target`", labels=labels)
    if kind == "vision_language":
        _refuse(family, "a vision-language model takes input_ids with pixel_values", inputs_embeds=inputs_embeds,
                latent=latent, linear_rule=None if linear_rule == "epsilon" else linear_rule)
        return explain_vision_language(model, adapter, options, input_ids=input_ids, attention_mask=attention_mask,
                                       pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                                       mm_token_type_ids=mm_token_type_ids, token_type_ids=token_type_ids,
                                       pixel_attention_mask=pixel_attention_mask, target=target,
                                       position=-1 if position is None else position, contrast=contrast,
                                       checkpoint=checkpoint, tokenizer=tokenizer, progress=progress,
                                       image_sizes=image_sizes)
    _refuse(family, "for vision-language models", image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids,
            image_sizes=image_sizes, pixel_attention_mask=pixel_attention_mask)
    if kind in ("causal_lm", "seq2seq"):
        _refuse(family, token_type_ids=token_type_ids, pixel_values=pixel_values,
                linear_rule=None if linear_rule == "epsilon" else linear_rule)
        if kind == "causal_lm" and sequence_classifier_head(model) is not None:  # class logit at the last token
            _refuse(family, "a sequence classifier explains a class logit at each row's last real token",
                    position=position, contrast=contrast)
            return explain_decoder_classifier(model, adapter, options, input_ids=input_ids, inputs_embeds=inputs_embeds,
                                              attention_mask=attention_mask, target=target, latent=latent,
                                              checkpoint=checkpoint, tokenizer=tokenizer, progress=progress)
        text = dict(target=target, position=-1 if position is None else position, contrast=contrast, latent=latent,
                    checkpoint=checkpoint, tokenizer=tokenizer, progress=progress, attention_mask=attention_mask)
        if kind == "causal_lm":
            return explain_decoder(model, adapter, options, input_ids=input_ids, inputs_embeds=inputs_embeds, **text)
        _refuse(family, inputs_embeds=inputs_embeds)
        return explain_seq2seq(model, adapter, options, input_ids=input_ids, decoder_input_ids=decoder_input_ids,
                               decoder_attention_mask=decoder_attention_mask, **text)
    _refuse(family, contrast=contrast, checkpoint=checkpoint)
    if kind == "contrastive":
        _refuse(family, "a joint image-text model takes input_ids and pixel_values", inputs_embeds=inputs_embeds,
                token_type_ids=token_type_ids, position=position, latent=latent)
        return explain_contrastive(model, adapter, options, input_ids=input_ids, attention_mask=attention_mask,
                                   pixel_values=pixel_values, target=target, tokenizer=tokenizer, progress=progress)
    if kind == "encoder":
        _refuse(family, "a text encoder takes input_ids or inputs_embeds", pixel_values=pixel_values)
        return explain_encoder(model, adapter, options, input_ids=input_ids, inputs_embeds=inputs_embeds,
                               attention_mask=attention_mask, token_type_ids=token_type_ids, target=target,
                               position=position, latent=latent, tokenizer=tokenizer, progress=progress)
    _refuse(family, "a vision model takes pixel_values", input_ids=input_ids, inputs_embeds=inputs_embeds,
            token_type_ids=token_type_ids, attention_mask=attention_mask, position=position)
    if tokenizer is not None:
        raise ValueError("attribute: tokenizer is for text models; a vision model's relevance is per pixel")
    return explain_vision(model, adapter, options, pixel_values=pixel_values, target=target, latent=latent,
                          progress=progress)
