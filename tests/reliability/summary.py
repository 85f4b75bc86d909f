"""Summarise a reliability report (JSON lines) as the markdown table of docs/dev/soak-runs.md.

    python -m tests.reliability.summary reports/soak.jsonl

Records are grouped by check id (DUR-1, OCC-2, ...); a broken-variant control, and a
run whose figures name a `setup`, get rows of their own. Across the records of one row,
integer figures are summed (violations, counts: `lost=0` in every round stays 0) except
run settings such as `nth`, float figures are shown as their range, and other values as
the set seen. A column names the tests that produced the row, as the pytest command
that runs them again (add `ES_SOAK=1` for the soak sizes); when the report holds records
of several commits (checks rerun after a change), a last column says which.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

# Integer figures that are settings of a run, not counts: shown as the values seen.
SETTINGS = frozenset({"nth", "processes", "limit", "cap", "window_s", "max_attempts"})


def _merge(values: list[object], name: str = "") -> str:
    if name not in SETTINGS and all(type(v) is int for v in values):
        return str(sum(v for v in values if type(v) is int))
    if all(type(v) is int for v in values):  # a setting: the values seen, as a range
        whole = [v for v in values if type(v) is int]
        low_int, high_int = min(whole), max(whole)
        return str(low_int) if low_int == high_int else f"{low_int}..{high_int}"
    if all(type(v) in (int, float) for v in values):
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        low, high = min(numbers), max(numbers)
        return f"{low:.4g}" if low == high else f"{low:.4g}..{high:.4g}"
    seen: list[str] = []
    for v in values:
        text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
        if text not in seen:
            seen.append(text)
    return ", ".join(seen)


def summarise(lines: Iterable[str]) -> str:
    """The markdown table for the report `lines` (one JSON object per line)."""
    by_id: dict[str, list[dict[str, object]]] = defaultdict(list)
    meta: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        figures_of = record["figures"]
        check = str(record["id"])
        if isinstance(figures_of, dict) and "setup" in figures_of:
            check += f" ({figures_of['setup']})"
        if isinstance(figures_of, dict) and "broken_variant" in figures_of:
            check += f" control: {figures_of['broken_variant']}"
        by_id[check].append(record)
        for key in ("tier", "sqlite", "python", "commit"):
            if record.get(key):
                meta[key].add(str(record[key]))
    mixed = len(meta.get("commit", ())) > 1  # checks rerun later: say which commit each is
    rows = ["| check | records | figures | reproduce |", "|---|---|---|---|"]
    if mixed:
        rows = ["| check | records | figures | reproduce | commit |", "|---|---|---|---|---|"]
    for check in sorted(by_id, key=_order):
        records = by_id[check]
        figures: dict[str, list[object]] = defaultdict(list)
        for record in records:
            raw = record["figures"]
            assert isinstance(raw, dict)
            for name, value in raw.items():
                figures[str(name)].append(value)
        text = "; ".join(
            f"{name} {_merge(values, name)}"
            for name, values in figures.items()
            if name not in ("broken_variant", "setup")
        )
        row = f"| {check} | {len(records)} | {text} | {_command(records)} |"
        if mixed:
            row += f" {', '.join(sorted({str(r.get('commit', '')) for r in records}))} |"
        rows.append(row)
    header = ", ".join(f"{key} {'/'.join(sorted(values))}" for key, values in meta.items())
    return f"Run: {header}\n\n" + "\n".join(rows) + "\n"


def _command(records: list[dict[str, object]]) -> str:
    """`pytest FILE::TEST ...` for the test functions behind `records` (parameters left
    out: the function runs every case)."""
    tests: list[str] = []
    for record in records:
        test = str(record.get("test", "")).partition("[")[0]
        if test and test not in tests:
            tests.append(test)
    return f"`pytest {' '.join(tests)}`" if tests else ""


def _order(check: str) -> tuple[str, int, str]:
    family, _, rest = check.partition("-")
    number, _, variant = rest.partition(" ")
    return family, int(number) if number.isdigit() else 0, variant


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.reliability.summary REPORT.jsonl", file=sys.stderr)
        return 2
    sys.stdout.write(summarise(Path(argv[0]).read_text(encoding="utf-8").splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
