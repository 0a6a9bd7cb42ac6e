"""lrp_attention's `causal_extent` (query i sees the keys j <= extent[b, i]; a window bounds the past only)
on every backend, against reference_attention's float64 `causal_extent` rule, and that rule against
transformers' own mask (sdpa_mask with the bidirectional-block overlay of PaliGemma / Gemma 3)."""

from __future__ import annotations

import pytest
import torch

from lrp_triton.ops import lrp_attention
from reference_attention import attention_gradient_reference, attention_relevance_reference, visibility
from scaled_close import assert_rel_close

pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest: NaN-filled output buffers


def blocks_extent(b, n, m, spans):
    """[B, N]: each query's own position i + M - N, or for a query inside one of `spans` [(batch, start,
    stop)] (key positions, stop exclusive), the block's last position stop - 1."""
    ext = (torch.arange(n) + (m - n)).expand(b, n).clone()
    for row, start, stop in spans:
        pos = torch.arange(n) + (m - n)
        inside = (pos >= start) & (pos < stop)
        ext[row, inside] = stop - 1
    return ext


def run(q, k, v, g, backend, mode, **kw):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = lrp_attention(q, k, v, mode=mode, backend=backend, **kw)
    out.backward(g)
    return out, (q * q.grad, k * k.grad, v * v.grad)


def check(q, k, v, g, backend, mode, **kw):
    out, got = run(q, k, v, g, backend, mode, **kw)
    ref = (attention_gradient_reference(q, k, v, g, causal=True, **kw) if mode == "gradient"
           else attention_relevance_reference(q, k, v, g, mode=mode, causal=True, **kw))
    for name, r, e in zip("qkv", got, ref):
        if mode == "cp-lrp" and name != "v":
            assert (r == 0).all()
        else:
            assert_rel_close(r, e, 1e-5, f"R_{name}")
    return out


def inputs(b, h, hkv, n, m, d=32):
    return torch.randn(b, h, n, d), torch.randn(b, hkv, m, d), torch.randn(b, hkv, m, d), torch.randn(b, h, n, d)


# Interpreter tiles: forward and dQ 32 x 16, dK-dV 16 x 32. With N = M = 70 the blocks below cross tile
# boundaries (a prefix 0..36 over query tiles 0, 32 and key tiles 0..32; a block 40..61 in the other row),
# the kernels skip key tiles past every row's extent and query tiles before a key tile's first viewer, and
# run interior tiles below the diagonal and inside the prefix (key tiles 0 and 16 for query block 0,
# where the causal diagonal alone allows none).
CASES = {
    "prefix_gqa_padding": dict(n=70, m=70, window=None, spans=[(0, 0, 37), (1, 40, 62)], pad=True),
    "window_short": dict(n=70, m=70, window=5, spans=[(0, 3, 37), (1, 40, 66)], pad=False),
    "window_long": dict(n=70, m=70, window=40, spans=[(0, 0, 50), (1, 20, 33)], pad=True),
    "cached": dict(n=40, m=70, window=None, spans=[(0, 35, 56), (1, 30, 50)], pad=False),
}


def case_kw(name):
    c = CASES[name]
    b, n, m = 2, c["n"], c["m"]
    kw = dict(causal_extent=blocks_extent(b, n, m, c["spans"]), sliding_window=c["window"])
    if c["pad"]:
        mask = torch.ones(b, m, dtype=torch.bool)
        mask[1, :7] = False
        mask[0, torch.randperm(m)[:5]] = False
        kw["key_padding_mask"] = mask
    return b, n, m, kw


@pytest.mark.parametrize("name,mode", [("prefix_gqa_padding", "attnlrp"), ("window_short", "gradient"),
                                       ("window_long", "cp-lrp"), ("cached", "attnlrp")])
def test_triton_extent_tiles(name, mode):
    b, n, m, kw = case_kw(name)
    q, k, v, g = inputs(b, 2, 1, n, m)
    check(q, k, v, g, "triton", mode, **kw)


def test_triton_extent_not_monotone():
    """Extents that fall back (a query seeing less far ahead than an earlier one): the dK-dV query range
    starts at first_query (the cummax's binary search), and skipping stays exact."""
    b, n, m = 1, 50, 50
    pos = torch.arange(n)
    ext = torch.maximum(pos, torch.randint(0, m, (b, n)))
    q, k, v, g = inputs(b, 2, 1, n, m)
    check(q, k, v, g, "triton", "attnlrp", causal_extent=ext, sliding_window=24)


@pytest.mark.parametrize("backend", ("torch", "sdpa"))
@pytest.mark.parametrize("mode", ("attnlrp", "cp-lrp", "gradient"))
def test_twin_and_sdpa_extent(backend, mode):
    b, n, m, kw = case_kw("window_long")
    q, k, v, g = inputs(b, 4, 2, n, m, d=16)
    check(q, k, v, g, backend, mode, **kw)
    _, n, m, kw = case_kw("cached")
    q, k, v, g = inputs(b, 2, 1, n, m, d=16)
    check(q, k, v, g, backend, mode, **kw)


@pytest.mark.parametrize("backend", ("triton", "torch", "sdpa"))
def test_extent_equal_to_causal_is_plain_causal(backend):
    b, n, m = 2, 30, 40
    q, k, v, g = inputs(b, 2, 1, n, m)
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[0, :4] = False
    kw = dict(key_padding_mask=mask, sliding_window=9)
    ext = (torch.arange(n) + (m - n)).expand(b, n)
    out_e, rel_e = run(q, k, v, g, backend, "attnlrp", causal_extent=ext, **kw)
    out_c, rel_c = run(q, k, v, g, backend, "attnlrp", causal=True, **kw)
    assert torch.equal(out_e, out_c)
    for a, c in zip(rel_e, rel_c):
        assert torch.equal(a, c)


def test_extent_form_reads_block_masks_exactly():
    """lrp_triton.mask_extent on transformers' masks: Gemma 3's (causal OR blocks, AND the window, padding) gives
    the blocks' extents and the padding; a mask of another form gives None (the interface keeps the bias):
    PaliGemma 2's sliding layers (causal AND window) OR a prefix longer than the window, a block id on two
    separate runs."""
    from transformers.masking_utils import (and_masks, blockwise_overlay, causal_mask_function, or_masks,
                                            sdpa_mask, sliding_window_causal_mask_function, sliding_window_overlay)

    from lrp_triton.mask_extent import extent_form

    n = 14
    pad = torch.ones(2, n, dtype=torch.bool)
    pad[1, -3:] = False
    ids = torch.full((2, n), -1)
    ids[0, 2:8], ids[1, 4:7], ids[1, 8:10] = 0, 1, 2

    def mask(fn, pad=pad):
        return sdpa_mask(batch_size=2, q_length=n, kv_length=n, mask_function=fn, attention_mask=pad,
                         allow_is_causal_skip=False, device="cpu")

    ext = torch.arange(n).expand(2, n).clone()
    ext[0, 2:8], ext[1, 4:7], ext[1, 8:10] = 7, 6, 9
    for window in (None, 3):
        fn = or_masks(causal_mask_function, blockwise_overlay(ids))
        if window is not None:
            fn = and_masks(fn, sliding_window_overlay(window))
        padding, extent = extent_form(mask(fn), window)
        assert torch.equal(padding, pad) and torch.equal(extent, ext.to(torch.int32))
    plain = extent_form(mask(causal_mask_function, None), None)
    assert plain == (None, None)  # plain causal: no extent
    assert extent_form(mask(or_masks(sliding_window_causal_mask_function(3), blockwise_overlay(ids))), 3) is None
    split = ids.clone()
    split[1, 8:10] = 1  # block 1 on two runs: the text between them is not seen
    assert extent_form(mask(or_masks(causal_mask_function, blockwise_overlay(split))), None) is None


def test_reference_extent_rule_is_transformers_mask():
    """visibility's causal_extent rule (window one-sided) is transformers' sdpa_mask of causal OR blocks,
    AND the sliding overlay for Gemma 3's sliding layers, with padding."""
    from transformers.masking_utils import (and_masks, blockwise_overlay, causal_mask_function, or_masks, sdpa_mask,
                                            sliding_window_overlay)

    n, window = 13, 4
    group = torch.full((2, n), -1)
    group[0, 2:9], group[1, 0:5], group[1, 7:11] = 0, 1, 2
    blocks = blockwise_overlay(group)

    pad = torch.ones(2, n, dtype=torch.bool)
    pad[1, -2:] = False
    ext = (torch.arange(n)).expand(2, n).clone()
    for row, start, stop in ((0, 2, 9), (1, 0, 5), (1, 7, 11)):
        ext[row, start:stop] = stop - 1
    for w in (None, window):
        fn = or_masks(causal_mask_function, blocks)
        if w is not None:
            fn = and_masks(fn, sliding_window_overlay(w))
        full = sdpa_mask(batch_size=2, q_length=n, kv_length=n, mask_function=fn, attention_mask=pad,
                         allow_is_causal_skip=False, device="cpu")
        mine = visibility(2, n, n, causal=True, sliding_window=w, key_padding_mask=pad, device="cpu",
                          causal_extent=ext)
        assert torch.equal(full, mine)


def test_extent_refuses_bad_input():
    q, k, v, _ = inputs(1, 2, 2, 6, 6, d=16)
    ok = torch.arange(6)[None]
    with pytest.raises(ValueError, match="causal=True"):
        lrp_attention(q, k, v, causal=False, causal_extent=ok, backend="torch")
    with pytest.raises(ValueError, match="at least"):
        lrp_attention(q, k, v, causal_extent=ok - 1, backend="torch")
    with pytest.raises(ValueError, match="shape"):
        lrp_attention(q, k, v, causal_extent=ok[:, :5], backend="torch")
    with pytest.raises(TypeError, match="integer"):
        lrp_attention(q, k, v, causal_extent=ok.float(), backend="torch")
