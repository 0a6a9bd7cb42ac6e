"""An `Attribution` as display rows: one row per explained (batch row, position).

Every renderer (terminal, HTML, PNG, JSON, `top`) works on these rows. A row holds the real
tokens (padding dropped); tokens after the explained position are dropped too when their
relevance is exactly zero, as it is in a causal model, whose logit there depends on nothing later
(so a generated token's row shows the prompt and the tokens before it). Attributions of a whole
sequence (a classification head, a custom score) have no position, and an encoder-decoder's rows
show its encoder tokens: both keep every real token.
Raw relevance is kept as computed; `normalized` divides it by the row's largest magnitude, for colours.
Without token strings the tokens are shown as their ids (`#5`), which renderers separate by a space
(`separator`); token strings carry their own spacing (see `lrp_triton.render.tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lrp_triton.render.tokens import clean_tokens, vocabulary_style


@dataclass
class Row:
    """One explained logit and the relevance of the tokens before it."""

    tokens: list[str]  # display text of each token (markers cleaned)
    token_ids: list[int] | None  # None for an embeddings input
    indices: list[int]  # index of each token in the (padded) input sequence
    relevance: list[float]  # raw relevance
    normalized: list[float]  # relevance / max |relevance| of the row, in [-1, 1]
    batch: int
    position: int | None  # index of the explained position in the (padded) input; None: the whole sequence
    target: int | None  # None: a custom score (a callable target)
    target_token: str | None
    logit: float
    contrast: int | None
    contrast_token: str | None
    separator: str = ""  # drawn between tokens: " " between ids shown as `#N`, "" between token texts

    @property
    def label(self) -> str:
        if self.target is None:
            return f"custom score  (score {self.logit:+.3f})"
        target = repr(self.target_token) if self.target_token is not None else f"#{self.target}"
        text = f"target {target}"
        if self.contrast is not None:
            text += " vs " + (repr(self.contrast_token) if self.contrast_token is not None else f"#{self.contrast}")
        return f"{text}  (score {self.logit:+.3f})"


def _entry(value, b, j, several):
    """value[b] or value[b][j] of a tensor / nested list (None stays None)."""
    if value is None:
        return None
    item = value[b]
    return item[j] if several else item


def rows(attribution) -> list[Row]:
    """The display rows of `attribution`, in batch-major order."""
    if getattr(attribution, "pixel_relevance", None) is attribution.relevance:  # a vision model's (a joint
        # image-text model's `relevance` is at its tokens, its pixels' in `pixel_relevance`)
        raise NotImplementedError("token heatmaps need token relevance; this attribution holds pixel relevance "
                                  "(plot attribution.pixel_relevance as an image instead)")
    relevance = attribution.relevance.detach().float().cpu()
    several = relevance.dim() == 3
    batch, seq = relevance.shape[0], relevance.shape[-1]
    n_pos = relevance.shape[1] if several else 1
    mask = attribution.attention_mask
    mask = mask.bool().cpu() if mask is not None else None
    ids = attribution.input_ids.cpu() if attribution.input_ids is not None else None
    names = getattr(attribution, "tokens", None)
    target_names = getattr(attribution, "target_tokens", None)
    contrast_names = getattr(attribution, "contrast_tokens", None)
    target = attribution.target.cpu() if attribution.target is not None else None
    logit = attribution.logit.detach().float().cpu()
    position = attribution.position.cpu() if attribution.position is not None else None
    # an encoder-decoder's position counts decoder tokens; its rows show the encoder tokens, all of them
    encoder_decoder = getattr(attribution, "decoder_relevance", None) is not None
    contrast = attribution.contrast.cpu() if attribution.contrast is not None else None

    style = (attribution.extras or {}).get("token_style") if names is not None else None
    if names is not None and style is None:
        style = vocabulary_style([t for row in names for t in row])

    def cleaned(token):
        return None if token is None else clean_tokens([token], style)[0]

    out = []
    for b in range(batch):
        if names is not None:
            shown = clean_tokens(list(names[b]), style)
        elif ids is not None:
            shown = [f"#{i}" for i in ids[b].tolist()]
        else:
            shown = [f"[{i}]" for i in range(seq)]
        for j in range(n_pos):
            pos = None if position is None else int(_entry(position, b, j, several))
            row_relevance = relevance[b, j] if several else relevance[b]
            cut = pos is not None and not encoder_decoder and not row_relevance[pos + 1:].any()
            end = min(pos + 1, seq) if cut else seq
            real = [i for i in range(end) if mask is None or mask[b, i]]
            values = row_relevance[real].tolist()
            largest = max((abs(v) for v in values), default=0.0)
            c = _entry(contrast, b, j, several)
            out.append(Row(
                tokens=[shown[i] for i in real],
                token_ids=[int(ids[b, i]) for i in real] if ids is not None else None,
                indices=real,
                relevance=values,
                normalized=[v / largest if largest > 0 else 0.0 for v in values],
                batch=b,
                position=pos,
                target=None if target is None else int(_entry(target, b, j, several)),
                target_token=cleaned(_entry(target_names, b, j, several)),
                logit=float(_entry(logit, b, j, several)),
                contrast=None if c is None else int(c),
                contrast_token=cleaned(_entry(contrast_names, b, j, several)),
                separator="" if names is not None else " ",
            ))
    return out
