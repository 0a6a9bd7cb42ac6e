"""`Attribution`: what `lrp_triton.attribute` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Attribution:
    """Relevance of the inputs (and optionally of latent units) for explained logits.

    With one explained position, per-position fields have shape [B]; with P positions, [B, P],
    and `relevance` has shape [B, P, N] instead of [B, N].

    Attributes:
        relevance: float32 [B, N] (float64 for a float64 model), token relevance at the input (token)
            embeddings, summed over the hidden dimension; 0 at padding.
        target: explained token id per row (and position); a classification head's class index;
            None for a callable (custom) target.
        logit: the explained score (the target logit, minus the contrast logit if given).
        position: index into the (padded) sequence of each explained position; None when a whole
            sequence is explained (classification heads, custom scores).
        contrast: contrast token id, or None.
        position_relevance: relevance of learned position embeddings (GPT-2), like `relevance`.
        decoder_relevance: encoder-decoder models (T5): relevance of the decoder prefix tokens
            [B, N_dec] (`relevance` then holds the encoder tokens).
        latent: with `latent=True`, lists over layers: "residual" [B, N] (the residual stream
            entering each layer), "heads" [B, H] (each attention head's output), "neurons"
            [B, intermediate] (each MLP neuron, summed over positions); a P axis after B for
            several positions.
        token_type_relevance: encoders (BERT): relevance of the token-type embeddings [B, N]
            (`relevance` holds the word embeddings, `position_relevance` the position embeddings).
        pixel_relevance, patch_relevance, cls_relevance: vision transformers (ViT, DeiT, DINOv2):
            relevance of the pixels [B, H, W] (summed over channels; also in `relevance`), of the patch
            embeddings [B, num_patches] (the patch-embedding output, CLS excluded) and of the
            prepended token parameters [B, n_prefix] (CLS; DeiT: CLS, distillation; DINOv2 with
            registers: CLS, then the register tokens, which take no position embedding); the position
            embeddings' share is `position_relevance` [B, n_prefix + num_patches].
        input_ids, attention_mask: the inputs explained (input_ids None for embeddings input).
        mode: "attnlrp", "cp-lrp" or "gradient". model_type: the model's config.model_type.
        tokens: optional token strings, one list per batch row aligned with the sequence axis of
            `relevance` (filled by `attribute(..., tokenizer=...)` and the CLI); display only.
        target_tokens, contrast_tokens: optional token strings of `target` / `contrast` (same
            nesting as those fields, as lists; a classification head's label names).
        model_name: the model's name or path, for display.

    Outputs (see `lrp_triton.render`): `show()`, `to_html(path)`, `to_png(path)`, `to_json(path)`,
    `top(k)`.
    """

    relevance: torch.Tensor
    target: torch.Tensor
    logit: torch.Tensor
    position: torch.Tensor
    contrast: torch.Tensor | None = None
    position_relevance: torch.Tensor | None = None
    decoder_relevance: torch.Tensor | None = None
    latent: dict | None = None
    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    mode: str = "attnlrp"
    model_type: str = ""
    token_type_relevance: torch.Tensor | None = None
    pixel_relevance: torch.Tensor | None = None
    patch_relevance: torch.Tensor | None = None
    cls_relevance: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)
    tokens: list[list[str]] | None = None
    target_tokens: list | None = None
    contrast_tokens: list | None = None
    model_name: str = ""

    def conservation(self) -> torch.Tensor:
        """sum(relevance) / explained score per row (and position): a diagnostic, not a law."""
        relevance = self.relevance
        if relevance.dim() > self.logit.dim() + 1:  # pixel relevance [B, H, W], or a score for the whole batch
            relevance = relevance.flatten(self.logit.dim())
        return relevance.sum(-1) / self.logit

    # -- outputs: thin wrappers over lrp_triton.render ----------------------------------------
    def show(self, color: bool | None = None) -> None:
        """The heatmap: inline HTML in a notebook, else on stdout (coloured on a terminal)."""
        from lrp_triton import render

        render.show(self, color)

    def to_html(self, path=None, **kwargs) -> str:
        """One self-contained HTML page (written to `path` when given); returns it."""
        from lrp_triton import render

        return render.to_html(self, path, **kwargs)

    def to_png(self, path, **kwargs) -> None:
        """A PNG heatmap at `path` (needs matplotlib: `pip install 'lrp_triton[plot]'`)."""
        from lrp_triton import render

        render.to_png(self, path, **kwargs)

    def to_json(self, path=None) -> dict:
        """Tokens, raw relevance, target, logit, model, mode and version (written to `path` when given)."""
        from lrp_triton import render

        return render.to_json(self, path)

    def top(self, k: int = 5) -> list:
        """The k most relevant tokens as (index, token, relevance), per row (a flat list for one row).

        `k` is a whole number >= 1 (a ValueError otherwise); a row with fewer tokens gives them all."""
        from lrp_triton import render

        return render.top(self, k)


@dataclass
class VisionLanguageAttribution(Attribution):
    """What `lrp_triton.attribute` returns for a vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA,
    LLaVA-NeXT).

    `relevance` [B, N] is over the merged sequence the decoder reads: at a text token its word
    embedding's relevance, at an image token that of the image embedding put there (the vision
    tower's merger output). With P explained positions a P axis follows B (images: leads).

    Attributes (besides Attribution's):
        text_relevance: [B, N], the word embeddings' relevance (0 at image tokens).
        image_mask: bool [B, N], True at image tokens.
        image_rows: the batch row of each image, images in order (of `image_grid_thw` / `pixel_values`).
        image_pixel_relevance: per image [H, W] ([P, H, W]): relevance at the pixel values, summed over
            channels (and the temporal patch's copies of the image), in the resized image's layout.
        image_patch_relevance: per image [grid_h, grid_w]: at the patch embeddings (the patch convolution's output).
        image_token_relevance: per image [grid_h / m, grid_w / m]: at the image tokens (merged patches;
            LLaVA: m = 1, and a "full" image's CLS token is left out of the map).
        image_base_pixel_relevance, image_base_patch_relevance, image_base_token_relevance: LLaVA-NeXT
            only (else empty): the same maps over each image's base tile (the whole image at the tower's
            size), while the three above lie on its high-resolution canvas (the tiles stitched, the
            token map [R, C + 1] with each row's `image_newline` token last); an image's pixel
            relevance is the sum over its two maps (models.llava_next).
        image_total, text_total: [B] sums of `relevance` over image tokens and over text tokens; their sum
            is the total (`relevance.sum(-1)`).
        images: optional, display only: the images as given to the processor (PIL images, arrays or
            tensors; one per image), which `to_png` / `to_html` draw the relevance on, resized to the
            maps (the CLI sets them: LLaVA's and LLaVA-NeXT's as the model saw them, from pixel_values).

    `to_png(path, images=None, alpha=0.6, scale=None, width=80, dpi=150)` and `to_html(path, images=None,
    alpha=0.6, scale=None)` show, per explained row, each image of that row with its pixel relevance
    overlaid (a colour bar beside it) above the text heatmap, where each image's tokens are one
    `[image k]` token; `images` defaults to `self.images` (none: the maps drawn on white).
    """

    text_relevance: torch.Tensor | None = None
    image_mask: torch.Tensor | None = None
    image_rows: list[int] = field(default_factory=list)
    image_pixel_relevance: list[torch.Tensor] = field(default_factory=list)
    image_patch_relevance: list[torch.Tensor] = field(default_factory=list)
    image_token_relevance: list[torch.Tensor] = field(default_factory=list)
    image_base_pixel_relevance: list[torch.Tensor] = field(default_factory=list)
    image_base_patch_relevance: list[torch.Tensor] = field(default_factory=list)
    image_base_token_relevance: list[torch.Tensor] = field(default_factory=list)
    image_total: torch.Tensor | None = None
    text_total: torch.Tensor | None = None
    images: list | None = None

    @property
    def image_share(self) -> torch.Tensor:
        """image_total / (image_total + text_total) per row: the image's share of the input relevance."""
        return self.image_total / (self.image_total + self.text_total)

    @property
    def text_share(self) -> torch.Tensor:
        """text_total / (image_total + text_total) per row."""
        return self.text_total / (self.image_total + self.text_total)

    def image_to_png(self, path, index: int = 0, image=None, score: int = 0, **kwargs) -> None:
        """Image `index`'s pixel relevance overlaid on `image` (the image as the model saw it, [H, W],
        [C, H, W] or [H, W, C]; None: on white) as a PNG with a colour bar (`lrp_triton.render.overlay`;
        needs matplotlib). `score`: which explained position, when several were. kwargs: alpha, scale, dpi."""
        from lrp_triton.render.overlay import save_overlay

        if not 0 <= index < len(self.image_pixel_relevance):
            raise IndexError(f"image_to_png: image {index} does not exist; this result has "
                             f"{len(self.image_pixel_relevance)} image(s)")
        relevance = self.image_pixel_relevance[index]
        save_overlay(relevance[score] if relevance.dim() == 3 else relevance, path, image, **kwargs)
