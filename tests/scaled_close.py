"""The closeness checks the relevance tests share, each relative to the largest magnitude."""

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


def assert_close_scaled(actual, expected, dtype, tol_table, what):
    """Elementwise |a - e| <= rtol |e| + atol * max|e|, (rtol, atol) = tol_table[dtype]; returns the
    worst |a - e| / max|e|, which the message also names."""
    rtol, atol = tol_table[dtype]
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = max(expected.abs().max().item(), 1e-300)
    err = (actual - expected).abs()
    bound = rtol * expected.abs() + atol * scale
    worst = (err / scale).max().item()
    assert (err <= bound).all(), (f"{what}: {(err > bound).sum().item()} elements out of tolerance, "
                                  f"max |err| / max|ref| = {worst:.3g}")
    return worst
