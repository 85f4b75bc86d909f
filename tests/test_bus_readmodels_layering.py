"""bus imports only store; readmodels imports only store, bus and actors; __all__ sorted."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"store", "bus", "actors", "readmodels", "demo"}
ALLOWED = {"bus": {"store", "bus"}, "readmodels": {"store", "bus", "actors", "readmodels"}}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    modules = sorted((ROOT / package).glob("*.py"))
    assert modules
    for module in modules:
        extra = imported_packages(module) - ALLOWED[package]
        assert not extra, f"{module.name} imports {sorted(extra)}"


@pytest.mark.parametrize("name", ["bus", "readmodels", "readmodels.testing"])
def test_public_names_are_sorted_exported_and_documented(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for public in exported:
        value = getattr(module, public)
        assert (value.__doc__ or "").strip(), f"{name}.{public} has no docstring"
