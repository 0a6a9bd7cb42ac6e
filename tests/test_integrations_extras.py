"""An integration whose frontend is not installed says which extra installs it (runs with or
without the extras: the frontend is hidden from the import system for the test)."""

from __future__ import annotations

import importlib
import re
import sys

import pytest


@pytest.mark.parametrize("extra", ["inseq", "captum"])
def test_a_missing_frontend_names_the_extra_to_install(extra, monkeypatch):
    monkeypatch.setitem(sys.modules, extra, None)  # `import extra` now raises ImportError
    monkeypatch.delitem(sys.modules, f"lrp_triton.integrations.{extra}", raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install 'lrp_triton[{extra}]'")):
        importlib.import_module(f"lrp_triton.integrations.{extra}")
