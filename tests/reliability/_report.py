"""Figures of the reliability suite: sizes per tier and a JSON-lines report.

Two tiers run the same tests: the CI tier (`make test`) at reduced sizes, and the soak
tier (`make soak`, `ES_SOAK=1`) at full sizes. Each test records its figures with
`report.record(...)`; when `ES_REPORT` names a file, every record is appended to it as
one JSON line with the seed, the SQLite version, the tier and the commit, so
`python -m tests.reliability.summary` can turn a soak run into the tables of
docs/dev/soak-runs.md.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
SOAK = os.environ.get("ES_SOAK", "") not in ("", "0")
T = TypeVar("T")


def size(ci: T, soak: T) -> T:
    """`ci` in the CI tier, `soak` under `ES_SOAK=1`."""
    return soak if SOAK else ci


def time_limit(ci_seconds: int) -> int:
    """A module's per-test timeout: `ci_seconds` in the CI tier; at soak sizes (tens of
    times the work) two hours, since a marker overrides the command line's --timeout."""
    return size(ci_seconds, 7_200)


@functools.cache
def _commit() -> str:
    """The commit checked out when the run started (read once: a run takes minutes)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


@dataclass
class Report:
    """Collects the figures of one test and writes them to `ES_REPORT` (if set)."""

    test: str
    path: Path | None = None
    records: list[dict[str, object]] = field(default_factory=list)

    def record(self, family_id: str, **figures: object) -> dict[str, object]:
        """Record the figures of check `family_id` (e.g. "DUR-1") and return the line."""
        line: dict[str, object] = {
            "id": family_id,
            "test": self.test,
            "tier": "soak" if SOAK else "ci",
            "figures": figures,
            "sqlite": sqlite3.sqlite_version,
            "python": platform.python_version(),
            "commit": _commit() if self.path is not None else "",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.records.append(line)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line, sort_keys=True) + "\n")
        return line
