"""The guide's python blocks are real code: run together, in order, as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
BLOCKS = re.findall(
    r"^```python\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
)


def test_the_guide_has_python_blocks_for_each_step() -> None:
    assert len(BLOCKS) >= 7
    assert BLOCKS[0].startswith("from __future__ import annotations")


def test_the_guides_python_blocks_run_in_order(tmp_path: Path) -> None:
    # The blocks build on each other (one program), so they run as one script; a
    # marker line after each block shows how far it got when one fails.
    script = "\n".join(
        f"{block}\nprint('--- block {index + 1} ran', flush=True)"
        for index, block in enumerate(BLOCKS)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert f"--- block {len(BLOCKS)} ran" in done.stdout
