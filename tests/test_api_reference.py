"""The API reference builds from the docstrings and covers every public name."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.test_public_api import PUBLIC_MODULES

pdoc = pytest.importorskip("pdoc", reason="the API reference needs the docs extra")


def test_the_reference_documents_every_public_name(tmp_path: Path) -> None:
    pdoc.render.configure(docformat="google")
    pdoc.pdoc(*PUBLIC_MODULES, output_directory=tmp_path)
    missing: list[str] = []
    for module_name in PUBLIC_MODULES:
        page = tmp_path.joinpath(*module_name.split(".")).with_suffix(".html")
        assert page.is_file(), f"no page for {module_name}"
        anchors = set(re.findall(r'id="([A-Za-z0-9_.]+)"', page.read_text(encoding="utf-8")))
        names = importlib.import_module(module_name).__all__
        missing.extend(f"{module_name}.{name}" for name in names if name not in anchors)
    assert missing == []
