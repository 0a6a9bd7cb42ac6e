"""Test setup: the Triton interpreter on CPU-only machines, and the `gpu` marker.

TRITON_INTERPRET=1 must be set before triton is imported (triton.jit reads it when a kernel is
decorated), so it is set here, at collection, when no CUDA device is present. The suite runs in
several processes (pytest-xdist, pytest.ini); each then takes one torch thread.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("triton was imported before the test setup could enable its interpreter")
    os.environ["TRITON_INTERPRET"] = "1"

HAS_CUDA = torch.cuda.is_available()

if os.environ.get("PYTEST_XDIST_WORKER"):  # the test processes share the cores: one torch thread each
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """A different, reported seed per test: inputs are fresh random draws, reproducible by seed."""
    seed = int.from_bytes(os.urandom(4), "little") if os.environ.get("LRP_TEST_SEED") is None \
        else int(os.environ["LRP_TEST_SEED"])
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        rep.sections.append(("seed", f"rerun with LRP_TEST_SEED={seeds[0]}" if seeds else "?"))


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Every kernel output buffer starts as NaN, so a value a kernel forgets to write fails the test."""
    from lrp_triton.kernels import buffers

    def nan_filled(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(buffers, "new_output", nan_filled)
