"""Each package's public surface, and the layering: no import points back."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("store", "bus", "actors", "readmodels", "demo")
MAY_IMPORT: dict[str, frozenset[str]] = {
    "store": frozenset(),
    "bus": frozenset({"store"}),
    "actors": frozenset({"store", "bus"}),
    "readmodels": frozenset({"store", "bus", "actors"}),
    "demo": frozenset({"store", "bus", "actors", "readmodels"}),
}


def _isort_key(name: str) -> tuple[int, str]:
    """isort's order (as ruff's RUF022 sorts `__all__`): CONSTANTS, then Classes, then
    functions, each alphabetical."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_and_every_name_is_importable_and_documented(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert isinstance(exported, list)
    assert exported == sorted(exported, key=_isort_key)
    assert len(set(exported)) == len(exported)
    assert module.__doc__
    undocumented = []
    for name in exported:
        obj = getattr(module, name)  # AttributeError names what is missing
        is_code = inspect.isclass(obj) or inspect.isfunction(obj)
        if is_code and not (obj.__doc__ or "").strip():
            undocumented.append(name)
    assert undocumented == []


def forbidden_imports(source: str, package: str) -> list[str]:
    """The first-party packages `source` (a module of `package`) imports against the
    layering, whether at module level, in a function or under TYPE_CHECKING."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # relative imports stay inside the package
        for name in names:
            top = name.partition(".")[0]
            if top in PACKAGES and top != package and top not in MAY_IMPORT[package]:
                found.append(name)
    return found


def test_the_layering_check_catches_a_back_arrow() -> None:
    source = (
        "import store\nfrom . import _x\nimport bus.sub\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from actors import Aggregate\n"
        "def f() -> None:\n    from readmodels._views import View\n"
    )
    assert forbidden_imports(source, "store") == ["bus.sub", "actors", "readmodels._views"]
    assert forbidden_imports(source, "bus") == ["actors", "readmodels._views"]
    assert forbidden_imports(source, "readmodels") == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_a_package_above_its_own(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules
    violations = {
        str(path.relative_to(ROOT)): found
        for path in modules
        if (found := forbidden_imports(path.read_text(encoding="utf-8"), package))
    }
    assert violations == {}
