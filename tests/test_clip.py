"""CLIP / SigLIP pieces the model contract does not reach (the joint models and each tower are zoo
entries): the MultiheadAttention LRP module and the similarity rule against explicit float64
formulas, the image-classification heads against the float64 reference, and the joint model's
input checks and image / text pairing."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

import lrp_triton
from lrp_triton.attribution import Attribution
from lrp_triton.attribution.scores import lrp_similarity
from lrp_triton.modules.multihead_attention import LRPMultiheadAttention
from lrp_triton.options import LRPOptions
from model_zoo import BY_NAME, randomize_two_tower, two_tower_config
from reference_clip import classifier_reference, multihead_attention, similarity
from scaled_close import assert_rel_close

F64 = torch.float64


def test_multihead_attention_module_forward_and_relevance():
    """Forward = torch's (float32, both layouts, padded keys; outputs of size ~1-5, so 1e-5 absolute: float32
    rounding of a different summation order reached 1.1e-6); relevance = the explicit rules (float64)."""
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.normal_(0, 0.5)
        mha.in_proj_bias.normal_(0, 0.1)
        mha.out_proj.bias.normal_(0, 0.1)
    query, kv = torch.randn(3, 2, 32), torch.randn(3, 7, 32)
    ignore = torch.zeros(3, 7, dtype=torch.bool)
    ignore[1, 5:] = True
    lrp = LRPMultiheadAttention.from_hf(mha, LRPOptions.checked("attnlrp", "torch", "epsilon", 0.25, where="test"))
    with torch.no_grad():
        torch.testing.assert_close(lrp(query, kv, kv, key_padding_mask=ignore)[0],
                                   mha(query, kv, kv, key_padding_mask=ignore)[0], atol=1e-5, rtol=1e-5)
        seq_first = nn.MultiheadAttention(32, 4).eval()
        seq_first.load_state_dict(mha.state_dict())
        lrp_sf = LRPMultiheadAttention.from_hf(seq_first, LRPOptions.checked("attnlrp", "torch", "epsilon", 0.25,
                                                                             where="test"))
        q_t, kv_t = query.transpose(0, 1), kv.transpose(0, 1)
        torch.testing.assert_close(lrp_sf(q_t, kv_t, kv_t)[0], seq_first(q_t, kv_t, kv_t)[0], atol=1e-5, rtol=1e-5)
    mha64 = mha.double()
    q64, kv64 = query.double().requires_grad_(), kv.double().requires_grad_()
    out = LRPMultiheadAttention.from_hf(mha64, LRPOptions.checked("attnlrp", "auto", "epsilon", 0.25, where="test"))(
        q64, kv64, kv64, key_padding_mask=ignore)[0]
    w = torch.randn_like(out)
    out.backward(w)
    y, back = multihead_attention(mha64, query.double(), kv.double(), "attnlrp", keep=~ignore)
    r_query, r_kv = back(y * w)
    torch.testing.assert_close(out.detach(), y, atol=1e-12, rtol=1e-12)
    assert_rel_close(q64 * q64.grad, r_query, 1e-12, "R_query")
    assert_rel_close(kv64 * kv64.grad, r_kv, 1e-12, "R_kv")
    assert (kv64.grad[1, 5:] == 0).all()  # padded keys: nothing flows


def test_similarity_rule_against_explicit_formulas():
    """scale * cos(u, t) + bias: constant norms, then the uniform rule on each term u'_d t'_d (float64)."""
    u, t = torch.randn(3, 24, dtype=F64) * 2, torch.randn(3, 24, dtype=F64)
    scale, bias = torch.tensor(2.7, dtype=F64), torch.tensor(-0.4, dtype=F64)
    ug, tg = u.clone().requires_grad_(), t.clone().requires_grad_()
    s = lrp_similarity(ug, tg, scale, bias)
    s.sum().backward()
    s_ref, back = similarity(u, t, scale, bias)
    r_u, r_t = back(s_ref)  # R at u' and t', which the constant norms pass on unchanged
    torch.testing.assert_close(s.detach(), s_ref, atol=1e-13, rtol=1e-13)
    assert_rel_close(u * ug.grad, r_u, 1e-13, "R_u")
    assert_rel_close(t * tg.grad, r_t, 1e-13, "R_t")
    cos = torch.nn.functional.cosine_similarity(u, t, dim=-1)
    torch.testing.assert_close((u * ug.grad).sum(-1) + (t * tg.grad).sum(-1), scale * cos)  # bias keeps its share
    ug.grad = tg.grad = None
    lrp_similarity(ug, tg, scale, bias, mode="gradient").sum().backward()  # cos is scale-invariant in u and t:
    assert (u * ug.grad).sum(-1).abs().max() < 1e-12 and (t * tg.grad).sum(-1).abs().max() < 1e-12  # IxG sums to 0


@pytest.mark.parametrize("family,dtype", [("clip", torch.float32), ("siglip", F64)])
def test_image_classifiers_match_reference(family, dtype):
    """CLIP / SigLIP ForImageClassification (the mean of the tokens into a classifier) against the reference."""
    config = two_tower_config(family, "joint")
    config.num_labels = 3
    cls = getattr(transformers, f"{'CLIP' if family == 'clip' else 'Siglip'}ForImageClassification")
    model = randomize_two_tower(cls(config)).to(dtype)
    px = torch.randn(2, 3, 32, 32, dtype=dtype)
    with torch.no_grad():
        expected = model(pixel_values=px).logits
    result = lrp_triton.attribute(model, pixel_values=px, target=[0, 2], backend="torch")
    ref = classifier_reference(model, px, result.target)
    torch.testing.assert_close(ref["out"].to(dtype), expected, atol=2e-5, rtol=1e-5)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_rel_close(result.logit, ref["score"], tol, "logit")
    assert_rel_close(result.pixel_relevance, ref["pixel"], tol, "pixel")
    assert_rel_close(result.patch_relevance, ref["patch"], tol, "patch")


def test_joint_model_inputs_and_pairing():
    entry = BY_NAME["clip"]
    model = entry.build()
    inputs = entry.inputs(2)
    ids, px = inputs["input_ids"], inputs["pixel_values"]
    with pytest.raises(TypeError, match="similarity"):
        lrp_triton.attribute(model, input_ids=ids, pixel_values=px, target=3)
    with pytest.raises(ValueError, match="both"):
        lrp_triton.attribute(model, input_ids=ids)
    with pytest.raises(ValueError, match="3 texts"):
        lrp_triton.attribute(model, input_ids=torch.cat([ids, ids[:1]]), pixel_values=px)
    with pytest.raises(ValueError, match="latent"):
        lrp_triton.attribute(model, input_ids=ids, pixel_values=px, latent=True)
    with pytest.raises(ValueError, match="input_ids"):  # the text tower pools at an id it reads
        lrp_triton.attribute(model.text_model, inputs_embeds=torch.randn(1, 5, 32), target=0)
    one_image = lrp_triton.attribute(model, input_ids=ids, pixel_values=px[:1])  # paired with each text
    repeated = lrp_triton.attribute(model, input_ids=ids, pixel_values=px[:1].expand(2, -1, -1, -1))
    torch.testing.assert_close(one_image.relevance, repeated.relevance)
    torch.testing.assert_close(one_image.pixel_relevance, repeated.pixel_relevance)
    assert one_image.extras["target"] == "similarity" and one_image.target is None
    one_image.show(color=False)  # the heatmap of the text's tokens
    pixels_only = Attribution(relevance=one_image.pixel_relevance, pixel_relevance=one_image.pixel_relevance,
                              target=None, logit=one_image.logit, position=None)
    with pytest.raises(NotImplementedError, match="pixel relevance"):  # a vision model's relevance: no heatmap
        pixels_only.show(color=False)
