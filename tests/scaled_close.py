"""The one closeness check the relevance tests share: max error relative to the largest magnitude."""

from __future__ import annotations

import torch


def summed(terms: torch.Tensor, dim) -> torch.Tensor:
    """terms.sum(dim), carrying `.magnitude` = |terms|.sum(dim) for assert_rel_close.

    A reference's token relevance is a sum over the hidden (or channel) dimension whose terms can
    cancel: the float32 rounding of such a sum scales with the terms, not with the cancelled result.
    """
    out = terms.sum(dim)
    out.magnitude = terms.abs().sum(dim)
    return out


def assert_rel_close(actual, expected, tol, what="value"):
    """max |actual - expected| <= tol * scale (float64); returns max |actual - expected| / scale.

    scale = max |expected|, or, for a reference made by `summed`, the largest sum of |terms|.
    Relevance and logits are compared to their own scale: float32 rounding grows with it, and an
    elementwise relative tolerance would be meaningless where relevance crosses zero.
    """
    magnitude = getattr(expected, "magnitude", None)
    expected = expected.to(torch.float64)
    actual = actual.to(torch.float64)
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().item() if magnitude is None else magnitude.max().item()
    assert scale > 0, f"{what}: the reference is all zero, the case tests nothing"
    err = (actual - expected).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3e} vs max magnitude {scale:.3e} (relative {err / scale:.2e}, tol {tol})"
    return err / scale
