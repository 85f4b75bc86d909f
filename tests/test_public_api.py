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


def _ours(obj: object) -> bool:
    return (getattr(obj, "__module__", None) or "").partition(".")[0] in PACKAGES


def undocumented_methods(cls: type) -> list[str]:
    """The public methods and properties of `cls` (and of its bases from our packages)
    with no docstring; what it inherits from elsewhere (msgspec, Exception) is theirs."""
    found = []
    for klass in cls.__mro__:
        if not _ours(klass):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_"):
                continue
            code: object
            if isinstance(value, staticmethod | classmethod):
                code = value.__func__
            elif isinstance(value, property):
                code = value.fget
            elif inspect.isfunction(value):
                code = value
            else:
                continue  # data, nested classes
            if not (getattr(code, "__doc__", None) or "").strip():
                found.append(f"{cls.__name__}.{attr} (defined in {klass.__qualname__})")
    return found


def test_the_method_check_finds_an_undocumented_method() -> None:
    class Documented:
        """Has a documented method and an undocumented one."""

        def fine(self) -> None:
            """Documented."""

        def bare(self) -> None:
            pass

        @property
        def value(self) -> int:
            return 1

        def _private(self) -> None:
            pass

    Documented.__module__ = "actors._fake"
    where = f"(defined in {Documented.__qualname__})"
    assert undocumented_methods(Documented) == [
        f"Documented.bare {where}",
        f"Documented.value {where}",
    ]


PUBLIC_MODULES = (
    *PACKAGES,
    "store.telemetry",
    "actors.testing",
    "readmodels.testing",
    "demo.bank",
    "demo.shop",
)
"""Every module whose names are public API (and go into the API reference)."""


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_and_public_method_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    undocumented = []
    for name in module.__all__:
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            undocumented.append(name)
        if inspect.isclass(obj) and _ours(obj):
            undocumented.extend(undocumented_methods(obj))
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
