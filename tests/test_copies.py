"""copy.deepcopy and pickling (torch.save) of an applied model give the plain model: no LRP layer,
the original configs, no handle. The applied original is untouched (issue: the copy ran the LRP
layers with no way to undo them, and its "gradient" mode was no longer Input x Gradient)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import lrp_triton
from lrp_triton.apply import active_handle
from model_state import model_state
from model_zoo import tiny, tiny_model


def copy_by(how, model):
    if how == "deepcopy":
        return copy.deepcopy(model)
    if how == "pickle":
        return pickle.loads(pickle.dumps(model))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def is_plain(model) -> bool:
    return (active_handle(model) is None and model.config._attn_implementation != "lrp_triton"
            and not any(type(m).__name__.startswith("LRP") or hasattr(m, "lrp_options") for m in model.modules())
            and "__deepcopy__" not in vars(model) and "__reduce_ex__" not in vars(model))


@pytest.mark.parametrize("how", ("deepcopy", "pickle", "torch.save"))
@pytest.mark.parametrize("mode", ("attnlrp", "gradient"))
def test_the_copy_of_an_applied_model_is_the_plain_model(how, mode):
    model = tiny_model("gemma2")
    ids = torch.randint(0, 101, (2, 9))
    plain_logits = model(ids).logits
    plain = {m: lrp_triton.attribute(model, ids, mode=m).relevance for m in ("attnlrp", "gradient")}
    with lrp_triton.apply(model, mode) as handle:
        applied = model_state(model)
        duplicate = copy_by(how, model)
        assert model_state(model) == applied and handle.active  # the original is still applied, unchanged
        torch.testing.assert_close(lrp_triton.attribute(model, ids, mode=mode).relevance, plain[mode])
    assert is_plain(duplicate)
    assert duplicate.model.layers[0].mlp is not model.model.layers[0].mlp  # a real copy
    torch.testing.assert_close(duplicate(ids).logits, plain_logits)
    for m in ("attnlrp", "gradient"):  # the copy explains like the original, in every mode
        torch.testing.assert_close(lrp_triton.attribute(duplicate, ids, mode=m).relevance, plain[m])


def test_the_copy_carries_config_edits_made_while_applied_and_gamma_layers_are_copied_plain():
    model = tiny("bert-cls")
    with lrp_triton.apply(model, linear_rule="gamma-signed"):
        model.config.user_note = "kept"
        duplicate = copy.deepcopy(model)
    assert is_plain(duplicate) and duplicate.config.user_note == "kept"
    assert type(duplicate.bert.encoder.layer[0].attention.self.query) is torch.nn.Linear
