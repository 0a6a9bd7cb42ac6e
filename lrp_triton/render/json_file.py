"""An `Attribution` as JSON: raw (not normalised) relevance with the tokens it belongs to."""

from __future__ import annotations

import json
import math

from lrp_triton.render.rows import Row


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN / inf


def document(rows: list[Row], *, model: str, model_type: str, mode: str) -> dict:
    """{version, model, model_type, mode, rows: [{tokens, token_ids, relevance, target, ...}]}."""
    from lrp_triton import __version__

    return {
        "version": __version__,
        "model": model,
        "model_type": model_type,
        "mode": mode,
        "rows": [{
            "batch": row.batch,
            "position": row.position,
            "target": row.target,
            "target_token": row.target_token,
            "contrast": row.contrast,
            "contrast_token": row.contrast_token,
            "logit": _number(row.logit),
            "tokens": row.tokens,
            "token_ids": row.token_ids,
            "indices": row.indices,
            "relevance": [_number(v) for v in row.relevance],
        } for row in rows],
    }


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
