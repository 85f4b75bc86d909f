"""The README's python blocks run as they are, in order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(
    r"^```python\n(.*?)^```",
    (ROOT / "README.md").read_text(encoding="utf-8"),
    re.MULTILINE | re.DOTALL,
)


@pytest.mark.xfail(
    not BLOCKS, strict=True, reason="README quickstart lands with the lead's docs commit"
)
def test_the_readme_has_a_python_quickstart() -> None:
    assert BLOCKS, "README.md must open with a runnable ```python quickstart"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"README block {index + 1} failed:\n{done.stderr}"
    assert "Traceback" not in done.stderr
