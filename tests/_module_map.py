"""The picture of each package's modules in docs/architecture.md, made from the imports.

`python -m tests._module_map` rewrites the picture between the markers
`<!-- module-map:start -->` and `<!-- module-map:end -->` of docs/architecture.md;
`tests/test_layout.py` fails when the picture there is not the one the code makes.
Each package is one Mermaid flowchart: a node per module (its `__init__`, which only
re-exports, left out), an arrow from a module to each module of the same package it
imports (type-checking imports included).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- module-map:start -->", "<!-- module-map:end -->"
PACKAGES = ("store", "bus", "actors", "readmodels", "demo")
"""In the order the packages depend on each other, lowest first."""


def module_name(package: str, path: Path) -> str:
    """`actors/_actor.py` -> `actors._actor`; a package's `__init__` -> the package."""
    parts = path.relative_to(ROOT / package).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def imports(package: str, name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that module `name` (at `path`) imports."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                # `from actors import _actor` imports that module; `from actors import X`
                # (a name) and `from actors._actor import X` import `origin` itself
                sub = f"{origin}.{alias.name}"
                targets.append(sub if sub in modules else origin)
        for target in targets:
            # `import actors._actor.x` imports actors._actor too: its longest known prefix
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(package: str) -> dict[str, set[str]]:
    """Every module of `package` (its `__init__` and subpackages included) and the
    modules of the same package it imports."""
    paths = {module_name(package, p): p for p in sorted((ROOT / package).rglob("*.py"))}
    modules = set(paths)
    return {name: imports(package, name, path, modules) for name, path in paths.items()}


def _node(package: str, name: str) -> str:
    return name.removeprefix(f"{package}.").replace(".", "/")


def _node_id(package: str, name: str) -> str:
    return "m_" + _node(package, name).replace("/", "__")


def picture(package: str) -> str:
    """The Mermaid flowchart of `package`'s modules and their imports."""
    edges = graph(package)
    lines = ["```mermaid", "flowchart LR"]
    for name in sorted(edges):
        if name == package:
            continue
        lines.append(f'    {_node_id(package, name)}["{_node(package, name)}"]')
    for name in sorted(edges):
        if name == package:
            continue
        source = _node_id(package, name)
        lines.extend(
            f"    {source} --> {_node_id(package, target)}"
            for target in sorted(edges[name] - {package})
        )
    lines.append("```")
    return "\n".join(lines)


def section() -> str:
    """The text between the markers: one heading and picture per package."""
    parts = [START]
    for package in PACKAGES:
        parts += ["", f"**`{package}/`**", "", picture(package)]
    parts += ["", END]
    return "\n".join(parts)


def current(text: str) -> str:
    """The section as the document holds it now."""
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def main() -> int:
    text = DOC.read_text(encoding="utf-8")
    new = text.replace(current(text), section())
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"rewrote the module map in {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
