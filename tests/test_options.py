"""Rule options: validated once at the public entry points, carried by every LRP layer and attention
module of an applied model, never defaulted silently, and invisible to what the model saves."""

from __future__ import annotations

import json

import pytest
import torch

import lrp_triton
from lrp_triton.attention_interface import NAME, register
from lrp_triton.options import LRPOptions
from model_zoo import tiny, tiny_model, tiny_t5


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="lrp"), "unknown mode 'lrp'"),
    (dict(backend="foo"), "unknown backend 'foo'"),
    (dict(linear_rule="alpha-beta"), "unknown linear_rule 'alpha-beta'"),
    (dict(linear_rule="gamma", gamma=-1.0), "gamma must be a non-negative number"),
    (dict(linear_rule="gamma", gamma=True), "gamma must be a non-negative number"),
    (dict(mode="gradient", linear_rule="gamma"), "mode 'gradient' keeps the exact gradient"),
])
def test_bad_options_fail_at_apply_and_at_attribute_before_any_work(kwargs, match):
    model = tiny_model("llama")
    before = {name: type(m) for name, m in model.named_modules()}
    with pytest.raises(ValueError, match=match):
        lrp_triton.apply(model, **kwargs)
    with pytest.raises(ValueError, match=match):
        lrp_triton.attribute(model, torch.randint(0, 101, (1, 5)), **kwargs)
    assert {name: type(m) for name, m in model.named_modules()} == before
    assert model.config._attn_implementation != NAME


@pytest.mark.parametrize("mode", ("attnlrp", "cp-lrp", "gradient"))
def test_every_layer_and_attention_module_carries_the_options(mode):
    model = tiny_model("mixtral")
    with lrp_triton.apply(model, mode, backend="torch") as handle:
        assert handle.options == LRPOptions(mode, "torch")
        lrp_layers = [m for m in model.modules() if type(m).__name__.startswith("LRP")]
        assert bool(lrp_layers) == (mode != "gradient")
        for layer in lrp_layers:
            assert getattr(layer, "mode", mode) == mode and layer.backend == "torch"
        attention = [m for m in model.modules() if type(m).__name__.endswith("Attention")]
        assert attention and all(m.lrp_options is handle.options for m in attention)
    assert not any(hasattr(m, "lrp_options") for m in model.modules())


@pytest.mark.parametrize("mode", ("attnlrp", "cp-lrp", "gradient"))
def test_t5_attention_takes_its_options_like_every_other_layer(mode):
    model = tiny_t5("flan")
    with lrp_triton.apply(model, mode, backend="torch"):
        t5_attention = [m for m in model.modules() if type(m).__name__ == "LRPT5Attention"]
        assert len(t5_attention) == 2 * 2 + 2  # encoder self, decoder self and cross attention of 2 + 2 layers
        assert all(m.mode == mode and m.backend == "torch" for m in t5_attention)


def test_an_attention_module_reached_without_options_is_an_error():
    """A config switched to lrp_triton's attention by hand (not by apply) must not run a default rule."""
    register()
    model = tiny_model("llama")
    model.config._attn_implementation = NAME
    with pytest.raises(RuntimeError, match="without lrp_triton options"):
        model(torch.randint(0, 101, (1, 5)))


@pytest.mark.parametrize("name", ("llama", "bert-cls"))
def test_save_pretrained_while_applied_writes_the_original_config(name, tmp_path):
    model = tiny_model(name) if name == "llama" else tiny(name)
    ids = torch.randint(0, 50, (1, 6))
    expected = model(input_ids=ids).logits
    with lrp_triton.apply(model):
        model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not any("lrp" in key for key in saved) and saved.get("attn_implementation") != NAME
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert reloaded.config._attn_implementation != NAME
    torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)
