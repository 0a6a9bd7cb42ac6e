"""DeBERTa-v2 / v3 and DeBERTa (v1) beyond the model contract (test_model_contract.py runs every
contract check on the zoo entries "deberta-v2-cls", v3's layout, and "deberta-cls", v1's): the
disentangled-attention op against the explicit float64 rules (odd sizes, several query blocks,
padding, each score-term combination, relevance at the relative-embedding rows too), its backward
under vmap over K cotangents, the other layouts (own position projections, unbucketed relative
positions, absolute positions, token types, embed_proj, both masked-LM heads) against the
reference, the module against transformers' attention (pair mask and a general 4-D mask), the
O(N) saved tensors, and the ConvLayer and talking-head refusals."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention

import lrp_triton
from lrp_triton.attribution import core
from lrp_triton.modules.deberta import LRPDisentangledSelfAttention, masks
from lrp_triton.ops.disentangled_attention import lrp_disentangled_attention
from model_zoo import F64, deberta_v2_config, padded_index, randomize_encoder, text_inputs
from reference_deberta import deberta_reference, disentangled_core
from scaled_close import assert_rel_close

B, H, N, D, R = 2, 3, 11, 8, 10  # N: three query blocks of 4 (the last one of 3)


def op_inputs(terms, dtype):
    q, k, v = (torch.randn(B, H, N, D, dtype=dtype) for _ in range(3))
    pk = torch.randn(H, R, D, dtype=dtype) if "c2p" in terms else None
    pq = torch.randn(H, R, D, dtype=dtype) if "p2c" in terms else None
    c2p, p2c = torch.randint(0, R, (2 * N - 1,)), torch.randint(0, R, (2 * N - 1,))
    pad = torch.ones(B, N, dtype=torch.bool)
    pad[1, -3:] = False  # the last row padded: its padded queries see nothing (uniform, as DeBERTa)
    return q, k, v, pk, pq, c2p, p2c, pad


def dense_rows(index):
    """[N, N] from a compact [2N - 1] index: row index[j - i + N - 1]."""
    return index[torch.arange(N)[None, :] - torch.arange(N)[:, None] + N - 1]


@pytest.mark.parametrize("terms", ("c2p|p2c", "c2p", "p2c"))
def test_op_relevance_matches_the_explicit_rules(terms, capsys):
    """x * grad of q, k, v, pk, pq equals the explicit relevance (AttnLRP, CP-LRP), and the exact gradient
    of the eager float64 forward in mode "gradient"; float32 and float64, three query blocks."""
    errs = {}
    for dtype in (torch.float32, F64):
        q, k, v, pk, pq, c2p, p2c, pad = op_inputs(terms, dtype)
        names = [n for n, t in zip(("q", "k", "v", "pk", "pq"), (q, k, v, pk, pq)) if t is not None]
        leaves = [t.requires_grad_() for t in (q, k, v, pk, pq) if t is not None]
        grad = torch.randn(B, H, N, D, dtype=dtype)
        scale = 0.3

        def reference(mode, *tensors):
            it = iter(tensors)
            full = [next(it) if t is not None else None for t in (q, k, v, pk, pq)]
            return disentangled_core(*full, dense_rows(c2p), dense_rows(p2c),
                                     pad[:, None, :, None] & pad[:, None, None, :], scale, mode)
        for mode in ("attnlrp", "cp-lrp", "gradient"):
            out = lrp_disentangled_attention(q, k, v, scale=scale, mode=mode, pos_key=pk, pos_query=pq,
                                             c2p_index=c2p if pk is not None else None,
                                             p2c_index=p2c if pq is not None else None, padding_mask=pad, block=4)
            grads = torch.autograd.grad(out, leaves, grad)
            tol = 2e-6 if dtype == torch.float32 else 1e-13
            if mode == "gradient":  # the exact gradient of the eager float64 forward
                ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
                o64 = reference(mode, *ref_leaves)[0]
                assert_rel_close(out, o64, tol, "forward")
                expected = dict(zip(names, torch.autograd.grad(o64, ref_leaves, grad.double())))
                got = dict(zip(names, grads))
            else:
                o64, back = reference(mode, *(t.detach().double() for t in leaves))
                expected = back(o64 * grad.double())
                got = {n: t.detach() * g for n, t, g in zip(names, leaves, grads)}  # relevance x * grad
            for name in names:
                if mode == "cp-lrp" and name != "v":  # the scores are constants: nothing through q, k, pk, pq
                    assert (got[name] == 0).all() and (expected[name] == 0).all()
                    continue
                err = assert_rel_close(got[name], expected[name], tol, f"{terms} {mode} {dtype} {name}")
                errs[dtype] = max(errs.get(dtype, 0.0), err)
    with capsys.disabled():
        print(f"\n[disentangled op {terms}] max rel err f32 {errs[torch.float32]:.1e}, f64 {errs[F64]:.1e}")


def test_op_backward_under_vmap_equals_separate_passes():
    q, k, v, pk, pq, c2p, p2c, pad = op_inputs("c2p|p2c", torch.float32)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = lrp_disentangled_attention(q, k, v, scale=0.3, pos_key=pk, pos_query=pq, c2p_index=c2p, p2c_index=p2c,
                                     padding_mask=pad, block=5)
    scores = torch.einsum("...,p...->p", out, torch.randn(3, *out.shape))
    batched = core.batched_grads(scores, leaves, range(3), retain_graph=True)
    for j in range(3):
        single = torch.autograd.grad(scores[j], leaves, retain_graph=True)
        for got, want in zip(batched, single):
            torch.testing.assert_close(got[j], want, rtol=1e-5, atol=1e-6)


def test_op_refuses_bad_inputs():
    q, k, v, pk, pq, c2p, p2c, pad = op_inputs("c2p|p2c", torch.float32)
    with pytest.raises(ValueError, match="pk needs a long index"):
        lrp_disentangled_attention(q, k, v, scale=1.0, pos_key=pk)
    with pytest.raises(ValueError, match="outside its 10 rows"):
        lrp_disentangled_attention(q, k, v, scale=1.0, pos_key=pk, c2p_index=c2p + R)
    with pytest.raises(ValueError, match="not both"):
        lrp_disentangled_attention(q, k, v, scale=1.0, mask=pad[:, None, None], padding_mask=pad)


VARIANTS = {  # name -> (model class, config overrides)
    # own pos_key_proj / pos_query_proj, unbucketed relative positions clamped at 4, absolute positions, token
    # types, the masked-LM head LayerNorm(gelu(dense h)) @ word embeddings (transformers' own head needs
    # embedding_size = hidden_size)
    "mlm-own-projections": (transformers.DebertaV2ForMaskedLM, dict(
        share_att_key=False, position_buckets=-1, max_relative_positions=4, position_biased_input=True,
        type_vocab_size=2, norm_rel_ebd="none", legacy=False)),
    # the legacy (BERT-style) masked-LM head, embed_proj (embedding_size 24), p2c only
    "mlm-legacy-p2c": (transformers.DebertaV2ForMaskedLM, dict(pos_att_type="p2c", share_att_key=False, legacy=True,
                                                               embedding_size=24)),
    # c2p only, the classifier's tanh pooler
    "cls-c2p-tanh": (transformers.DebertaV2ForSequenceClassification,
                     dict(pos_att_type="c2p", pooler_hidden_act="tanh")),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_other_layouts_match_the_reference(name, capsys):
    cls, overrides = VARIANTS[name]
    model = randomize_encoder(cls(deberta_v2_config(**overrides))).eval()
    types = model.config.type_vocab_size > 0
    ids, mask, tt = text_inputs(2, 10, pad_last=3)
    kw = dict(attention_mask=mask, **({"token_type_ids": tt} if types else {}))
    mlm = cls is transformers.DebertaV2ForMaskedLM
    result = lrp_triton.attribute(model, ids, position=3 if mlm else None, backend="torch", **kw)
    position = padded_index(mask, 3) if mlm else None
    ref = deberta_reference(model, ids, mask, tt if types else None, target=result.target, position=position)
    logits = model(input_ids=ids, **kw).logits
    torch.testing.assert_close(ref["out"], (logits[torch.arange(2), position] if mlm else logits).double(),
                               atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(result.logit.double(), ref["score"], atol=2e-5, rtol=1e-5)
    fields = {"relevance": ref["word"]}
    if model.config.position_biased_input:
        fields["position_relevance"] = ref["pos"]
    if types:
        fields["token_type_relevance"] = ref["type"]
    errs = [assert_rel_close(getattr(result, f), want, 1e-5, f"{name} {f}") for f, want in fields.items()]
    for f in fields:
        assert (getattr(result, f)[~mask] == 0).all()
    with capsys.disabled():
        print(f"\n[deberta {name}] max rel err {max(errs):.1e}")


@pytest.mark.parametrize("pair", (True, False))
def test_module_equals_transformers_attention(pair):
    """LRPDisentangledSelfAttention's forward and, in mode "gradient", its input gradient are
    DisentangledSelfAttention's: with the encoder's pair mask of a padding vector (taken as the vector)
    and with any other 4-D mask (used dense)."""
    cfg = deberta_v2_config()
    hf = DisentangledSelfAttention(cfg).eval()
    randomize_encoder(hf)
    ours = LRPDisentangledSelfAttention(hf, mode="gradient")
    x = torch.randn(2, 11, cfg.hidden_size, requires_grad=True)
    rel = torch.randn(2 * cfg.position_buckets, cfg.hidden_size)
    if pair:
        pad = torch.ones(2, 11, dtype=torch.bool)
        pad[1, 7:] = False
        mask = (pad[:, None, :, None] & pad[:, None, None, :]).long()
    else:
        mask = (torch.rand(2, 1, 11, 11) > 0.3) | torch.eye(11, dtype=torch.bool)
    assert (masks(mask)[1] is not None) == pair
    expected = hf(x, mask, rel_embeddings=rel)[0]
    got = ours(x, mask, rel_embeddings=rel)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(got)
    torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(expected, x, g)[0],
                               atol=1e-5, rtol=1e-4)


def test_unsupported_layouts_are_refused():
    """deberta-v2-xlarge's ConvLayer (its tanh would run its plain gradient) and v1's talking heads."""
    model = transformers.DebertaV2ForSequenceClassification(deberta_v2_config(conv_kernel_size=3)).eval()
    with pytest.raises(NotImplementedError, match="ConvLayer"):
        lrp_triton.apply(model)
    v1 = transformers.DebertaForSequenceClassification(transformers.DebertaConfig(
        vocab_size=61, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
        talking_head=True, relative_attention=True, pos_att_type="c2p")).eval()
    with pytest.raises(NotImplementedError, match="talking_head"):
        lrp_triton.attribute(v1, torch.randint(2, 61, (1, 5)), mode="gradient")


def test_no_quadratic_tensor_is_saved_for_backward():
    """No tensor saved for the backward has N x N entries: the scores are recomputed block by block,
    the relative positions are per offset and the encoder's pair mask is taken as its padding vector."""
    model = randomize_encoder(transformers.DebertaV2ForSequenceClassification(
        deberta_v2_config(max_position_embeddings=512))).eval()
    n = 300
    ids = torch.randint(2, 61, (1, n))
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, -20:] = False
    largest = []

    def pack(t):
        largest.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lrp_triton.attribute(model, ids, attention_mask=mask)
    assert max(largest) < n * n, f"a saved tensor has {max(largest)} entries (N^2 = {n * n})"
