"""Attribution of a two-tower contrastive model (adapter kind "contrastive": CLIPModel, SiglipModel).

`attribute(model, input_ids=..., pixel_values=..., target="similarity")` explains, for each row i,
the similarity of image i and text i (one image or one text is paired with every row of the other):

    s_i = logit_scale.exp() * cos(u_i, t_i) (+ logit_bias: SigLIP),  u = image embedding, t = text embedding

which is the model's own `logits_per_image[i, i]`. One forward pass of each tower (the adapter's
`image_embeds` and `text_embeds`), one backward pass. Rules
(`lrp_triton.attribution.scores.lrp_similarity`): each embedding's L2 norm is held constant (the
normalisation is then linear and passes relevance unchanged, as LayerNorm's std), the dot product
of the normalised embeddings takes the uniform rule on each term u_d t_d (half to each side), the
scale is linear and the bias keeps its own share (epsilon rule). So the two embeddings' relevance
sums to s - bias, which each tower passes on to its inputs by its own rules. CP-LRP keeps these
rules (the similarity has no gate); mode "gradient" is the exact gradient of s.

Fields: `relevance` [B, N] at the text's word embeddings (`position_relevance`: the text position
embeddings' share), `pixel_relevance` [B, H, W], `patch_relevance` [B, num_patches],
`cls_relevance` [B, n_prefix] (CLIP's class embedding; SigLIP has none), and in `extras`,
"image_position_relevance" [B, n_prefix + num_patches].
"""

from __future__ import annotations

import torch

from lrp_triton.accelerate_hooks import weights_loaded
from lrp_triton.attribution.core import (OutputTap, applied_for_call, display_extras, frozen_eval, leaf,
                                         one_backward_per_score, token_names, token_relevance)
from lrp_triton.attribution.inputs import check_pixels, check_text_inputs
from lrp_triton.attribution.scores import lrp_similarity
from lrp_triton.attribution.targets import check_finite_scores
from lrp_triton.attribution.result import Attribution
from lrp_triton.attribution.vision import loaded_embedding_shares
from lrp_triton.backend import upcast

TARGETS = 'target="similarity" (the default): the similarity of each row\'s image and text'


def _paired(pixels: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor):
    """Images and texts with the same number of rows: one of either is repeated for every row of the other."""
    b_img, b_txt = pixels.shape[0], input_ids.shape[0]
    if b_img == b_txt:
        return pixels, input_ids, mask
    if b_img == 1:
        return pixels.expand(b_txt, *pixels.shape[1:]), input_ids, mask
    if b_txt == 1:
        return pixels, input_ids.expand(b_img, -1), mask.expand(b_img, -1)
    raise ValueError(f"attribute: {b_img} images and {b_txt} texts: pass as many images as texts (row i explains "
                     "image i with text i), or one image, or one text")


def explain_contrastive(model, adapter, options, *, input_ids, attention_mask, pixel_values, target, tokenizer,
                        progress) -> Attribution:
    """See `lrp_triton.attribute` for the arguments."""
    if not (target is None or (isinstance(target, str) and target == "similarity")):
        raise TypeError(f"attribute: a {type(model).__name__} takes {TARGETS}; got {target!r} (for a class or "
                        "embedding dimension, explain one tower: model.vision_model / model.text_model)")
    if input_ids is None or pixel_values is None:
        raise ValueError(f"attribute: a {type(model).__name__} explains an image-text similarity: pass both "
                         "input_ids [B, N] and pixel_values [B, C, H, W]")
    text_tower = adapter.text_tower(model)
    inputs = check_text_inputs(text_tower, input_ids, None, attention_mask,
                               getattr(text_tower.config, "max_position_embeddings", None))
    pixels, ids, mask = _paired(check_pixels(model, pixel_values), inputs.input_ids, inputs.attention_mask)
    pixels = leaf(pixels.contiguous())
    vision, words_of = adapter.vision_embeddings(model), adapter.text_embeddings(model)
    with frozen_eval(model), applied_for_call(model, options), \
            OutputTap(vision.patches, as_leaf=False, retain=False) as patches, \
            OutputTap(vision.summed, as_leaf=False) as summed, \
            OutputTap(words_of.word) as word_leaf, OutputTap(words_of.position) as pos_leaf:
        with torch.enable_grad():
            image = adapter.image_embeds(model, pixels)
            texts = adapter.text_embeds(model, ids, mask, adapter.position_ids(text_tower.config, mask))
            if image is None or texts is None:
                raise ValueError(f"attribute: {type(model).__name__} gives no image or text embedding (a vision "
                                 "tower without its pooling head: vision_use_head=False?), so no similarity")
            with weights_loaded(model, model, subtree=False):  # the model's own tensors, offloaded or not
                scale, bias = adapter.logit_terms(model)
                scores = lrp_similarity(image, texts, scale, bias, options.mode)
        check_finite_scores(scores, "the explained similarity")
        words = word_leaf.first

        def read():
            shares = loaded_embedding_shares(model, adapter, patches.first, summed.first)
            return {"relevance": token_relevance(words), "position_relevance": pos_leaf.relevance(like=mask),
                    "pixel_relevance": (upcast(pixels) * upcast(pixels.grad if pixels.grad is not None
                                                                else torch.zeros_like(pixels))).sum(1),
                    "patch_relevance": shares["patch_relevance"], "cls_relevance": shares["cls_relevance"],
                    "image_position_relevance": shares["position_relevance"]}

        (fields,) = one_backward_per_score(scores[:, None], [pixels, words, *pos_leaf.tensors, *summed.tensors], read,
                                           progress)
    fields = {k: v.detach() for k, v in fields.items()}
    return Attribution(
        relevance=fields["relevance"], position_relevance=fields["position_relevance"],
        pixel_relevance=fields["pixel_relevance"], patch_relevance=fields["patch_relevance"],
        cls_relevance=fields["cls_relevance"], target=None, logit=upcast(scores.detach()), position=None,
        input_ids=ids, attention_mask=mask, mode=options.mode, model_type=model.config.model_type,
        extras={"target": "similarity", "image_position_relevance": fields["image_position_relevance"],
                **({"linear_rule": options.linear_rule, "gamma": options.gamma}
                   if options.linear_rule != "epsilon" else {}), **display_extras(tokenizer)},
        **token_names(tokenizer, ids))
