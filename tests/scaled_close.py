"""The one closeness check the relevance tests share: max error relative to the largest magnitude."""

from __future__ import annotations

import torch


def assert_rel_close(actual, expected, tol, what="value"):
    """max |actual - expected| <= tol * max |expected| (float64); returns that relative error.

    Relevance and logits are compared to their own scale: float32 rounding grows with it, and an
    elementwise relative tolerance would be meaningless where relevance crosses zero.
    """
    expected = expected.to(torch.float64)
    actual = actual.to(torch.float64)
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().item()
    assert scale > 0, f"{what}: the reference is all zero, the case tests nothing"
    err = (actual - expected).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3e} vs max magnitude {scale:.3e} (relative {err / scale:.2e}, tol {tol})"
    return err / scale
