"""The table `python -m bench.scaleout` prints: each round's figures side by side, the
many side's busy cores and write-lock share, and the floor judged on the medians."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import scaleout


def _report(rate: float, processes: int, *, cpu_ms: float, shares: list[float]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "commands_per_s": rate,
        "acknowledged": int(rate * 5),
        "cpu_ms_per_command": cpu_ms,
        "cpu_all": rate * 5 * cpu_ms / 1000,
        "conflicts": 0,
        "errors": 0,
        "cpus": None,
    }
    if processes > 1:
        report["per_process"] = [{"in_transaction": share} for share in shares]
        report["cross_process_lag_ms"] = {"p50": 0.5, "p95": 9.0, "p99": 20.0, "max": 30.0}
    return report


def test_the_many_side_shows_its_busy_cores_and_how_busy_the_write_lock_was(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rates = {1: [10_000.0, 12_000.0, 11_000.0], 2: [13_000.0, 12_000.0, 14_300.0]}

    def run_once(args: argparse.Namespace, processes: int) -> dict[str, Any]:
        rate = rates[processes].pop(0)
        return _report(rate, processes, cpu_ms=0.1, shares=[0.25, 0.35])

    monkeypatch.setattr(scaleout, "run_once", run_once)
    assert scaleout.main(["--rounds", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.lstrip().startswith("round"))
    assert header.split()[13:18] == ["load", "2p", "cores", "2p", "txn"]
    rows = [line.split() for line in out[out.index(header) + 1 :][:3]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    # cores: 0.1 ms of CPU per command at 13,000 commands/s; txn: 25% + 35%
    assert [(row[3], row[7], row[8]) for row in rows] == [
        ("1.30", "1.30", "60%"),
        ("1.00", "1.20", "60%"),
        ("1.30", "1.43", "60%"),
    ]
    assert "ratio of medians 1.18; median of the rounds' ratios 1.30" in out[-2]
    assert out[-1] == "floor: 2 processes >= 1.2x one on a SQLite file: not met"
