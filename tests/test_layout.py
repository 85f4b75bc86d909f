"""The modules of each package import each other without a cycle.

Every `import` and `from ... import` of a module of the same package counts, wherever it
stands in the module: at the top, inside a function, or under `if TYPE_CHECKING:` (a
cycle that only the type checker sees is still two modules that cannot be read apart).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._module_map import DOC, current, graph, imports, section
from tests._module_map import PACKAGES as MAPPED

PACKAGES = (*MAPPED, "examples")

# Cycles known and not fixed yet, per package: each a sorted tuple of the modules of one
# strongly connected component. The test fails on any other cycle, and on an entry
# here that is no longer a cycle (so the list only shrinks).
ALLOWED: dict[str, frozenset[tuple[str, ...]]] = {}


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_the_modules_of_a_package_import_each_other_without_a_cycle(package: str) -> None:
    cycles = _cycles(graph(package))
    assert cycles == ALLOWED.get(package, frozenset())


def test_the_cycle_finder_finds_a_cycle_under_type_checking(tmp_path: Path) -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert _cycles(graph) == {("p.a", "p.b", "p.c")}
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p._b import B\n"
    path = tmp_path / "_a.py"
    path.write_text(source, encoding="utf-8")
    assert imports("p", "p._a", path, {"p._a", "p._b"}) == {"p._b"}
    # a name from the package's __init__ is an import of the __init__ (which imports
    # its modules: a cycle); a module from it is an import of that module only
    path.write_text("from p import B, _c\nfrom . import _d\n", encoding="utf-8")
    assert imports("p", "p._a", path, {"p", "p._a", "p._c", "p._d"}) == {"p", "p._c", "p._d"}


def test_the_module_map_in_the_architecture_doc_is_the_one_the_imports_make() -> None:
    # regenerate with: python -m tests._module_map
    assert current(DOC.read_text(encoding="utf-8")) == section()
