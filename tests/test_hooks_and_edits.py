"""User hooks on replaced modules keep running while applied; config edits, module swaps and train
flags the user makes are kept by remove() and attribute() (issue: hooks were bypassed, edits reverted,
submodules in train mode came back in eval mode)."""

from __future__ import annotations

import pytest
import torch

import lrp_triton
from model_state import model_state
from model_zoo import tiny_model


def test_forward_hooks_and_pre_hooks_on_replaced_modules_keep_running():
    model = tiny_model("llama")
    ids = torch.randint(0, 101, (2, 9))
    mlp, norm = model.model.layers[0].mlp, model.model.layers[1].input_layernorm
    hooks = [mlp.register_forward_hook(lambda m, args, out: out * 1.5),
             norm.register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))]
    hooked = model(ids).logits
    before = model_state(model)
    with lrp_triton.apply(model, backend="torch"):
        assert type(model.model.layers[0].mlp).__name__ == "LRPGatedMLP"
        torch.testing.assert_close(model(ids).logits, hooked, rtol=1e-5, atol=1e-5)
        result = lrp_triton.attribute(model, ids, position=-1)
        torch.testing.assert_close(result.logit, hooked[:, -1].gather(-1, result.target[:, None])[:, 0],
                                   rtol=1e-5, atol=1e-5)
        hooks[0].remove()  # a hook's own handle still removes it while applied
        unhooked_mlp = model(ids).logits
    assert model_state(model) != before  # the hook is gone for good
    hooks[1].remove()
    assert not mlp._forward_hooks and not norm._forward_pre_hooks
    hooks.append(norm.register_forward_pre_hook(lambda m, args: (args[0] * 0.5,)))
    torch.testing.assert_close(model(ids).logits, unhooked_mlp, rtol=1e-5, atol=1e-5)


def test_config_edits_made_while_applied_are_kept():
    model = tiny_model("qwen2")
    model.config.to_delete = 1
    with lrp_triton.apply(model):
        model.config.user_note = "kept"
        model.config.output_hidden_states = True
        del model.config.to_delete
    assert model.config.user_note == "kept" and model.config.output_hidden_states is True
    assert not hasattr(model.config, "to_delete")
    assert model.config._attn_implementation != "lrp_triton"
    assert all(m.config is model.config for m in model.modules() if "config" in m.__dict__)


def test_a_module_the_user_swapped_in_while_applied_stays():
    model = tiny_model("llama")
    mine = torch.nn.Identity()
    with lrp_triton.apply(model):
        model.model.layers[0].mlp = mine
    assert model.model.layers[0].mlp is mine
    assert type(model.model.layers[1].mlp).__name__ == "LlamaMLP"


@pytest.mark.parametrize("outer_training", (False, True))
def test_attribute_keeps_each_modules_training_flag(outer_training):
    model = tiny_model("llama")
    model.train(outer_training)
    model.model.layers[1].train(not outer_training)
    before = model_state(model)
    lrp_triton.attribute(model, torch.randint(0, 101, (1, 7)))
    assert model_state(model) == before


def test_apply_then_remove_restores_everything():
    model = tiny_model("mixtral")
    model.model.layers[0].register_forward_hook(lambda m, a, o: None)
    before = model_state(model)
    with lrp_triton.apply(model, "cp-lrp"):
        assert model_state(model) != before
    assert model_state(model) == before
