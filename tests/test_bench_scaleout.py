"""The table `python -m bench.scaleout` prints: each round's figures side by side, the
many side's busy cores and write-lock share, and the floor judged on the medians."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import scaleout


def _report(
    rate: float, processes: int, *, cpu_ms: float, shares: list[float], lag_p99: float = 20.0
) -> dict[str, Any]:
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
        report["cross_process_lag_ms"] = {"p50": 0.5, "p95": 9.0, "p99": lag_p99, "max": 90.0}
        report["per_process"] = [
            {"in_transaction": share, "latency_ms": {"p99": 100.0 + i}}
            for i, share in enumerate(shares)
        ]
    return report


def test_the_many_side_shows_its_busy_cores_and_how_busy_the_write_lock_was(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rates = {1: [10_000.0, 12_000.0, 11_000.0], 2: [13_000.0, 12_000.0, 14_300.0]}

    def run_once(
        args: argparse.Namespace, processes: int, concurrency: int | None = None
    ) -> dict[str, Any]:
        rate = rates[processes].pop(0)
        return _report(rate, processes, cpu_ms=0.1, shares=[0.25, 0.35])

    monkeypatch.setattr(scaleout, "run_once", run_once)
    assert scaleout.main(["--rounds", "3", "--lag-rounds", "0"]) == 0
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


def _sweep(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    figures: dict[int, list[tuple[float, float]]],
    argv: list[str],
) -> list[str]:
    """`main(argv)` with the rounds' runs at 10,000 commands/s and the sweep's at each
    level's (cmd/s, lag p99) in turn; what the sweep printed, from its header on."""
    asked: list[tuple[int, int | None]] = []

    def run_once(
        args: argparse.Namespace, processes: int, concurrency: int | None = None
    ) -> dict[str, Any]:
        asked.append((processes, concurrency))
        if concurrency is None:
            return _report(10_000.0, processes, cpu_ms=0.1, shares=[0.3, 0.3])
        rate, lag = figures[concurrency].pop(0)
        return _report(rate, processes, cpu_ms=0.1, shares=[0.3, 0.3], lag_p99=lag)

    monkeypatch.setattr(scaleout, "run_once", run_once)
    assert scaleout.main(argv) == 0
    sweep = [a for a in asked if a[1] is not None]
    levels = sorted(figures)
    rounds = len(sweep) // len(levels)
    assert sweep == [(2, level) for _ in range(rounds) for level in levels]  # alternating
    out = capsys.readouterr().out.splitlines()
    return out[next(i for i, line in enumerate(out) if line.startswith("# lag sweep")) :]


def test_the_lag_floor_is_judged_at_the_knee_of_the_throughput(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {
        250: [(15_000.0, 12.0), (16_000.0, 14.0), (15_500.0, 13.0)],
        500: [(18_600.0, 30.0), (19_000.0, 60.0), (18_800.0, 40.0)],
        1000: [(19_400.0, 70.0), (19_600.0, 80.0), (19_500.0, 75.0)],
    }
    out = _sweep(monkeypatch, capsys, figures, ["--rounds", "1", "--lag-levels", "1000,250,500"])
    rows = [line.split() for line in out[2:11]]
    assert [(row[0], row[1], row[2], row[3], row[4]) for row in rows[:3]] == [
        ("1", "250", "15,000", "101.0", "0.5/12.0"),
        ("1", "500", "18,600", "101.0", "0.5/30.0"),
        ("1", "1,000", "19,400", "101.0", "0.5/70.0"),
    ]
    # 500's median (18,800) is 96% of 1,000's (19,500): the knee; 250's is 79%
    assert "lag p99 median 40.0 ms (runs 30.0-60.0)" in out[12]
    assert out[-1].startswith("knee: 500 in flight per process")
    assert out[-1].endswith("lag p99 <= 50 ms there: met (median 40.0 ms)")


def test_a_knee_whose_lag_is_over_the_floor_is_not_met(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {100: [(9_000.0, 20.0)], 400: [(18_000.0, 55.0)]}
    out = _sweep(
        monkeypatch,
        capsys,
        figures,
        ["--rounds", "1", "--lag-rounds", "1", "--lag-levels", "100,400"],
    )
    assert out[-1].startswith("knee: 400 in flight per process")
    assert out[-1].endswith("there: not met (median 55.0 ms)")


@pytest.mark.parametrize("levels", ["", "a,b", "0,100", "-5"])
def test_the_lag_levels_must_be_counts(levels: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        scaleout.main(["--lag-levels", levels])
    assert "--lag-levels" in capsys.readouterr().err
