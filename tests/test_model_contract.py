"""The contract every supported model keeps, checked on every entry of the model zoo (model_zoo.ZOO).

- the applied forward equals the unapplied one (under every linear rule the entry supports);
- relevance equals the explicit float64 reference (float32 within the entry's tolerance, float64 to
  float64 rounding), for each of the entry's cases (modes, rules, backends);
- gradient mode is Input x Gradient of the untouched model;
- remove() puts back the very same modules, and other instances are never touched;
- a model saved to a local directory and loaded back explains alike;
- a padded batch explains each row as that row alone.
Family-specific checks stay in test_models.py, test_encoders.py and test_t5.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

import lrp_triton
from lrp_triton.models import ADAPTERS, supported_model_types
from model_zoo import F64, FAMILIES, ZOO
from scaled_close import assert_rel_close, summed

ENTRIES = [pytest.param(e, id=e.name) for e in ZOO]
CASES = [pytest.param(e, c, id=f"{e.name}-{c.id}") for e in ZOO for c in e.cases]
PADDED = [pytest.param(e, side, id=f"{e.name}-{side}") for e in ZOO for side in e.padding_sides]


def to_dtype(inputs, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


def relu_margin(entry, model, inputs) -> float:
    """The smallest |input| of any ReLU of the model on these inputs (inf without ReLUs), in float64.

    The identity rule on ReLU passes the whole gradient or none of it ([x > 0]), so a pre-activation
    within float32 rounding of 0 (seen: 1e-7) may flip between a float32 model and its float64
    reference and change the relevance upstream by a finite amount: no float32 tolerance holds there.
    """
    if not any(isinstance(m, torch.nn.ReLU) for m in model.modules()):
        return float("inf")
    m64 = copy.deepcopy(model).double()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].abs().min().item()))
             for m in m64.modules() if isinstance(m, torch.nn.ReLU)]
    with torch.no_grad():
        entry.outputs(m64, to_dtype(inputs, F64))
    for h in hooks:
        h.remove()
    return min(seen, default=float("inf"))


def main_inputs(entry, batch, padded=False):
    """Inputs of the size of the entry's first (main) case, with its padding if `padded`."""
    case = entry.cases[0]
    return entry.inputs(batch, case.size, case.pad if padded else 0)


def test_every_supported_model_type_is_in_the_zoo():
    decoders = sorted(t for t, adapter in ADAPTERS.items() if adapter.kind == "causal_lm")
    assert sorted(FAMILIES) == decoders and set(decoders) <= set(supported_model_types())
    assert {e.model_type for e in ZOO} == set(supported_model_types()) == set(ADAPTERS)
    for entry in ZOO:
        assert entry.config().model_type == entry.model_type and ADAPTERS[entry.model_type].kind == entry.kind
        assert entry.cases and entry.cases[0].dtype == torch.float32
    assert len({e.name for e in ZOO}) == len(ZOO)


@pytest.mark.parametrize("entry", ENTRIES)
def test_applied_forward_equals_unapplied(entry):
    model = entry.build()
    inputs = main_inputs(entry, 2, padded=True)
    expected = entry.outputs(model, inputs)
    head = getattr(model, "classifier", None) or getattr(model, "cls", None) or getattr(model, "lm_head", None)
    for rule in entry.rules:
        with lrp_triton.apply(model, linear_rule=rule) as handle:
            assert handle.active and model.config._attn_implementation == "lrp_triton"
            lrp = [type(m).__name__ for m in model.modules() if type(m).__name__.startswith("LRP")]
            assert ("LRPGammaLinear" in lrp) == (rule != "epsilon")
            assert ("LRPGammaConv2d" in lrp) == (rule != "epsilon" and entry.kind == "vision")
            if head is not None:  # the task head keeps the epsilon rule
                assert not any(type(m).__name__.startswith("LRPGamma") for m in head.modules())
            actual = entry.outputs(model, inputs)
        # float32 rounding (our attention vs SDPA) scales with the outputs: MLM logits reach |17|
        assert_rel_close(actual, expected, 1e-5, f"{entry.name} {rule} forward")


@pytest.mark.parametrize("entry,case", CASES)
def test_relevance_matches_explicit_reference(entry, case, capsys):
    """A float64 model runs the PyTorch path in float64 throughout, so its relevance must equal the
    explicit walker's to float64 rounding: a rule that differs by less than the float32 tolerances
    still fails there (measured: 1e-16..1e-15 of the largest sum of |terms|)."""
    model = entry.build().to(case.dtype)
    inputs = to_dtype(entry.inputs(case.batch, case.size, case.pad), case.dtype)
    for _ in range(20):  # float32: redraw inputs that put a ReLU within rounding of its kink
        if case.dtype == F64 or relu_margin(entry, model, inputs) > 1e-4:
            break
        inputs = to_dtype(entry.inputs(case.batch, case.size, case.pad), case.dtype)
    request = entry.explain(case, inputs)
    result = entry.attribute(model, inputs, case, **request)
    ref = entry.reference(model, inputs, result, case, request)
    assert result.logit.dtype == case.dtype
    if case.dtype == F64:
        assert_rel_close(result.logit, ref.score, case.tol, "score")
    else:
        # the reference re-implements the forward: its outputs must be the model's own
        model_output = ref.model_output()
        output = ref.output.to(model_output.dtype)
        if entry.output_rel_tol is None:
            torch.testing.assert_close(output, model_output, atol=2e-5, rtol=1e-5)
        else:
            assert_rel_close(output, model_output, entry.output_rel_tol, "reference outputs")
        if ref.score_scale is not None:  # target - contrast logit: its float32 rounding scales with the logits
            err = (result.logit.double() - ref.score).abs().max().item()
            assert err <= 1e-5 * ref.score_scale, f"score: max error {err:.2e}, max |logit| {ref.score_scale:.2e}"
        else:
            torch.testing.assert_close(result.logit.double(), ref.score, atol=2e-5, rtol=1e-5)
    if ref.position is not None:
        assert torch.equal(result.position, ref.position)
    for name, other in entry.aliases:
        assert getattr(result, name) is getattr(result, other)
    errs = []
    for name, expected in ref.fields.items():
        actual = getattr(result, name)
        assert actual.dtype == case.dtype and actual.shape == expected.shape, f"{name}: {actual.dtype} {actual.shape}"
        if name in ref.zeros:  # causal masking and padding: exactly nothing
            assert (actual[ref.zeros[name]] == 0).all(), f"{name} is not 0 where nothing can flow"
        errs.append(assert_rel_close(actual, expected, case.tol, f"{entry.name} {case.id} {name}"))
    with capsys.disabled():
        print(f"\n[{entry.name} {case.id}] max rel err {max(errs):.1e}; "
              f"sum(relevance) / score = {result.conservation().tolist()}")


@pytest.mark.parametrize("entry", ENTRIES)
def test_gradient_mode_is_input_times_gradient(entry):
    """Mode "gradient" is Input x Gradient of the untouched model (here: of its float64 copy), and
    attribute puts back the very same modules."""
    model = entry.build()
    inputs = main_inputs(entry, 2)
    modules = dict(model.named_modules())
    result = entry.attribute(model, inputs, mode="gradient")
    assert dict(model.named_modules()) == modules
    m64 = copy.deepcopy(model).double()
    if getattr(m64.config, "_experts_implementation", None) not in (None, "eager"):
        m64.set_experts_implementation("eager")  # HF's grouped_mm experts take no float64 (Mixtral)
    x, kwargs = entry.leaf(m64, to_dtype(inputs, F64))
    entry.explained(m64(**kwargs), result).sum().backward()
    assert_rel_close(result.relevance, summed(x * x.grad, entry.leaf_sum_dim), 1e-5, "input x gradient")


@pytest.mark.parametrize("entry", ENTRIES)
def test_remove_restores_and_other_instances_are_untouched(entry):
    model = entry.build()
    other = type(model)(model.config).eval()  # shares the very same config object
    other.load_state_dict(model.state_dict())
    inputs = main_inputs(entry, 1)

    def grads(m):
        x, kwargs = entry.leaf(m, inputs)
        entry.scalar(m(**kwargs)).backward()
        return x.grad.clone()

    modules_before = dict(model.named_modules())
    attn_before = model.config._attn_implementation
    g_model, g_other = grads(model), grads(other)
    for rule in entry.rules:
        handle = lrp_triton.apply(model, linear_rule=rule)
        assert handle.active
        assert not torch.equal(grads(model), g_model)  # the LRP backward differs from the gradient
        assert torch.equal(grads(other), g_other) and other.config._attn_implementation == attn_before
        assert all(type(m).__name__[:3] != "LRP" for m in other.modules())
        handle.remove()
        assert dict(model.named_modules()) == modules_before  # the very same module objects
        assert model.config._attn_implementation == attn_before
        assert torch.equal(grads(model), g_model)


@pytest.mark.parametrize("entry", ENTRIES)
def test_save_and_load_from_local_directory_then_attribute(entry, tmp_path):
    model = entry.build()
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, dtype=torch.float32).eval()
    inputs = main_inputs(entry, 1)
    for rule in entry.rules:
        kw = {} if rule == "epsilon" else dict(linear_rule=rule)
        a, b = entry.attribute(model, inputs, **kw), entry.attribute(loaded, inputs, **kw)
        for name in entry.fields:
            torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-6, rtol=1.3e-6)


@pytest.mark.parametrize("entry,side", PADDED)
def test_padded_batch_equals_unbatched_rows(entry, side):
    model = entry.build()
    batch, rows, masks = entry.padded(side)
    kw = entry.padding_kwargs()
    batched = lrp_triton.attribute(model, **batch, **kw)
    for i, row in enumerate(rows):
        single = lrp_triton.attribute(model, **row, **kw)
        if batched.target is not None:
            assert batched.target[i] == single.target[0]
        torch.testing.assert_close(batched.logit[i], single.logit[0], atol=1e-5, rtol=1e-5)
        for name, mask in masks.items():
            got = getattr(batched, name)[i]
            torch.testing.assert_close(got[mask[i]], getattr(single, name)[0], atol=1e-5, rtol=1e-4)
            assert (got[~mask[i]] == 0).all()
