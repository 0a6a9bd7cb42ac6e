"""Wrapped models: PEFT LoRA models are explained through the transformers model they hold (LoRA is
linear: the epsilon rule); layers wrapped without a `.weight` work; a SentenceTransformer is refused
with the model to pass instead; the gamma rule refuses unmerged adapters (issue: AttributeErrors
deep inside the LRP layers)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lrp_triton
from lrp_triton.apply import active_handle
from model_state import model_state
from model_zoo import text_inputs, tiny, tiny_model

peft = pytest.importorskip("peft", reason="pip install -e '.[wrappers]'")


def lora(model):
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"], lora_dropout=0.0,
                             init_lora_weights=False)  # random B: the adapters change the output
    return peft.get_peft_model(model, config)


@pytest.mark.parametrize("mode", ("attnlrp", "cp-lrp", "gradient"))
def test_a_lora_model_gives_the_relevance_of_its_merged_model(mode):
    model = lora(tiny_model("llama"))
    ids = torch.randint(0, 101, (2, 9))
    merged = copy.deepcopy(model).merge_and_unload()
    assert not torch.allclose(merged(ids).logits, tiny_model("llama")(ids).logits)  # the adapters matter
    before = model_state(model)
    result = lrp_triton.attribute(model, ids, mode=mode, position=[-1, -4])
    expected = lrp_triton.attribute(merged, ids, mode=mode, position=[-1, -4])
    assert model_state(model) == before
    torch.testing.assert_close(result.relevance, expected.relevance, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.logit, expected.logit, rtol=1e-5, atol=1e-5)


def test_apply_on_a_peft_model_applies_the_model_inside_and_is_undone():
    model = lora(tiny_model("qwen2"))
    inner = model.get_base_model()
    before = model_state(model)
    with lrp_triton.apply(model) as handle:
        assert handle.model is inner and active_handle(model) is handle and active_handle(inner) is handle
        assert type(inner.model.layers[0].mlp).__name__ == "LRPGatedMLP"
        assert type(inner.model.layers[0].mlp.gate_proj).__module__.startswith("peft.")  # the adapter stays
    assert model_state(model) == before


def test_the_gamma_rule_refuses_unmerged_adapters_with_the_fix():
    model = lora(tiny_model("llama"))
    before = model_state(model)
    with pytest.raises(NotImplementedError, match="merge_and_unload"):
        lrp_triton.apply(model, linear_rule="gamma")
    assert model_state(model) == before


class Wrapped(nn.Module):
    """A projection wrapper with no `.weight` of its own (as some adapter libraries write them)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_projections_wrapped_without_a_weight_attribute_work():
    model = tiny_model("gpt2")
    ids = torch.randint(0, 101, (2, 8))
    expected = lrp_triton.attribute(model, ids).relevance
    for block in model.transformer.h:
        block.mlp.c_proj = Wrapped(block.mlp.c_proj)
    model.lm_head = Wrapped(model.lm_head)
    model.lm_head.out_features = model.config.vocab_size
    torch.testing.assert_close(lrp_triton.attribute(model, ids).relevance, expected, rtol=0, atol=0)


def test_a_sentence_transformer_is_refused_naming_the_model_to_pass(tmp_path):
    st = pytest.importorskip("sentence_transformers", reason="pip install -e '.[wrappers]'")
    try:  # sentence-transformers >= 6 moved its modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    bert = tiny("bert-base")
    bert.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                  + [f"w{i}" for i in range(200)]))
    encoder = Transformer(str(tmp_path))
    model = st.SentenceTransformer(modules=[encoder, Pooling(bert.config.hidden_size)], device="cpu")
    ids, mask, _ = text_inputs(2, 9, pad_last=2)
    with pytest.raises(TypeError, match=r"model\[0\]\.auto_model"):
        lrp_triton.attribute(model, input_ids=ids, attention_mask=mask, target=lambda out: out.last_hidden_state.sum())
    with pytest.raises(TypeError, match=r"model\[0\]\.auto_model"):
        lrp_triton.apply(model)
    inner = model[0].auto_model  # what the message says to pass: it works, and equals the plain BERT's
    score = lambda out: lrp_triton.mean_pool(out.last_hidden_state, mask)[:, 0]  # noqa: E731
    got = lrp_triton.attribute(inner, input_ids=ids, attention_mask=mask, target=score)
    reloaded = type(bert).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(got.relevance, lrp_triton.attribute(reloaded, input_ids=ids, attention_mask=mask,
                                                                   target=score).relevance)
