"""attribute from several threads: one call at a time per model instance, flags never lost, other
instances in parallel unaffected (issue: parameters were left with requires_grad=False)."""

from __future__ import annotations

import threading

import torch

import lrp_triton
from model_state import model_state
from model_zoo import tiny_model


def run_threads(targets):
    errors = []

    def guarded(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_threads_on_one_model_are_serialised_and_keep_the_callers_flags():
    model = tiny_model("llama")
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 2 == 0)  # a mix of the caller's own flags
    model.model.layers[1].train()
    before = model_state(model)
    inputs = [torch.randint(0, 101, (2, 11)) for _ in range(4)]
    expected = [lrp_triton.attribute(model, ids, position=[-1, -3]).relevance for ids in inputs]
    events, results = [], {}

    def worker(k):
        def progress(done, total):
            events.append((k, done))
        results[k] = lrp_triton.attribute(model, inputs[k], position=[-1, -3], progress=progress).relevance
        return results[k]

    run_threads([lambda k=k: worker(k) for k in range(4)])
    for k in range(4):
        torch.testing.assert_close(results[k], expected[k], rtol=0, atol=0)
    # serialised: each call's two progress events are adjacent
    assert len(events) == 8 and all(events[i][0] == events[i + 1][0] for i in range(0, 8, 2))
    assert model_state(model) == before


def test_different_instances_in_parallel_threads_keep_working():
    models = [tiny_model("qwen2", seed=s) for s in (1, 2)]
    ids = torch.randint(0, 101, (2, 9))
    expected = [lrp_triton.attribute(m, ids).relevance for m in models]
    results = {}
    run_threads([lambda k=k: results.__setitem__(k, lrp_triton.attribute(models[k], ids).relevance)
                 for k in range(2) for _ in range(2)])
    for k in range(2):
        torch.testing.assert_close(results[k], expected[k], rtol=0, atol=0)
    assert not torch.equal(expected[0], expected[1])  # two different models, two different answers


def test_apply_from_two_threads_applies_once():
    model = tiny_model("llama")
    handles, errors = [], []

    def try_apply():
        try:
            handles.append(lrp_triton.apply(model))
        except RuntimeError as exc:
            errors.append(exc)

    run_threads([try_apply, try_apply])
    assert len(handles) == 1 and len(errors) == 1 and "already called" in str(errors[0])
    handles[0].remove()
    assert model.config._attn_implementation != "lrp_triton"
