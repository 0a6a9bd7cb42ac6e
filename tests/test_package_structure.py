"""The package's shape: no import cycles between its modules, no private name imported from another
module, no file over 450 lines, and a rules table whose every pointer resolves."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> the package name it is installed as (setup.py's package_dir)
FOLDERS = {"lrp_triton": "lrp_triton", "kernels": "lrp_triton.kernels", "models": "lrp_triton.models"}


def package_modules() -> dict[str, Path]:
    """Installed module name -> source file, for every .py file of the package."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = package_modules()


def imports_of(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module imported, names imported from it, at module level) for each import statement."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            out.extend((a.name, [], id(node) in top) for a in node.names)
    return out


def test_the_scan_sees_the_package():
    assert {"lrp_triton.attribute", "lrp_triton.attribution.core", "lrp_triton.kernels.attention",
            "lrp_triton.models.base", "lrp_triton.rules"} <= set(MODULES)


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for name, path in MODULES.items():
        for module, names, _ in imports_of(path):
            if module.startswith("lrp_triton"):
                offenders += [f"{name}: from {module} import {n}" for n in names
                              if n.startswith("_") and not n.endswith("__")]  # dunders (__version__) are public
                offenders += [f"{name}: import {module}" for part in module.split(".") if part.startswith("_")]
    assert not offenders, "\n".join(offenders)


def test_no_import_cycle_among_package_modules():
    """Module-level imports only (a function-level import is deferred and cannot deadlock an import)."""
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for module, names, at_top in imports_of(path):
            if not at_top or not module.startswith("lrp_triton"):
                continue
            for n in names:  # `from lrp_triton.x import y` may import the submodule lrp_triton.x.y
                if f"{module}.{n}" in MODULES:
                    deps.add(f"{module}.{n}")
            if module in MODULES:
                deps.add(module)
        # a package's __init__ imports its submodules; a submodule importing its parent package is the
        # usual Python pattern, not a cycle of ideas: drop edges to a module's own ancestors
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}

    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_file_over_450_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= 450, f"{MODULES[name].relative_to(ROOT)} has {lines} lines"


def test_every_rule_pointer_resolves():
    from lrp_triton.rules import RULES

    def resolve(dotted: str):
        module, _, attr = dotted.rpartition(".")
        if module.startswith("lrp_triton.kernels.") and module.split(".")[-1] in {"attention", "activations",
                                                                                   "rms_norm", "layer_norm"}:
            path = MODULES[module]  # Triton launchers: read, not imported (importing needs triton set up)
            assert f"def {attr}(" in path.read_text(), dotted
            return
        assert hasattr(importlib.import_module(module), attr), dotted

    assert len({r.name for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.paper and rule.explicit and rule.gradient_form, rule.name
        for pointer in (rule.op, rule.kernel, rule.torch_twin):
            if pointer is not None:
                resolve(pointer)
