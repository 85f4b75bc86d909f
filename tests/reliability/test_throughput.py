"""The throughput matrix (PERF-2): the demo's load test over aggregates x durability mode
x clients, each cell's figures reported, and each cell checked: every command answered,
none failed, the live read model equal to the actors' state."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest

from demo._loadtest import LoadOptions, LoadReport, Percentiles, run_load
from tests.reliability._report import Report, size

AGGREGATES = (1, 100, size(1_000, 10_000))
MODES = ("FULL", "NORMAL")
CLIENTS = (1, 64)

pytestmark = [pytest.mark.slow]


def check_cell(cell: LoadReport) -> list[str]:
    """Violations of one cell: a command not answered, failed, or refused by the domain
    (deposits are never refused), or a read model that differs from the actors."""
    found: list[str] = []
    if cell.commands == 0 or cell.acknowledged != cell.commands:
        found.append(f"{cell.acknowledged} of {cell.commands} commands acknowledged")
    if cell.errors or cell.rejected:
        found.append(f"errors {cell.error_types}, rejected {cell.rejected}")
    if cell.projection_ok is not True:
        found.append(f"read model equal to the actors: {cell.projection_ok}")
    return found


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def figures(cell: LoadReport) -> dict[str, Any]:
    commits = cell.events / cell.events_per_commit if cell.events_per_commit else 0.0
    return {
        "setup": f"{_count(cell.aggregates, 'aggregate')}, {cell.synchronous},"
        f" {_count(cell.concurrency, 'client')}",
        "commands": cell.commands,
        "commands_per_s": round(cell.commands_per_s),
        "commits_per_s": round(commits / cell.seconds) if cell.seconds else 0,
        "p50_ms": cell.latency_ms.p50,
        "p99_ms": cell.latency_ms.p99,
        "projection_lag_ms_p99": cell.projection_lag_ms_p99,
        "violations": len(check_cell(cell)),
    }


@pytest.mark.parametrize(
    ("aggregates", "synchronous", "clients"), list(itertools.product(AGGREGATES, MODES, CLIENTS))
)
async def test_perf2_throughput_matrix(
    aggregates: int, synchronous: Any, clients: int, report: Report
) -> None:
    options = LoadOptions(
        aggregates=aggregates,
        duration=size(0.3, 20.0),
        concurrency=clients,
        synchronous=synchronous,
        progress="never",
    )
    cell = await run_load(options)
    report.record("PERF-2", **figures(cell))
    assert check_cell(cell) == []


def test_perf2_checker_sees_a_failed_command_and_a_diverging_read_model() -> None:
    good = LoadReport(
        mix="deposit",
        concurrency=1,
        aggregates=1,
        synchronous="FULL",
        writer="thread",
        db="temporary",
        backend="sqlite",
        commands=10,
        acknowledged=10,
        events=10,
        seconds=1.0,
        commands_per_s=10.0,
        events_per_s=10.0,
        latency_ms=Percentiles.of([1.0]),
        rejected=0,
        errors=0,
        error_types={},
        events_per_commit=1.0,
        appends_per_commit=1.0,
        projection_lag_ms_p99=1.0,
        projection_ok=True,
        setup_seconds=0.0,
        settle_seconds=0.0,
        outcome={},
        peak_rss_mb=1.0,
        seed=0,
    )
    assert check_cell(good) == []
    failed = msgspec.structs.replace(good, acknowledged=9, errors=1, error_types={"AskTimeout": 1})
    assert len(check_cell(failed)) == 2
    diverged = msgspec.structs.replace(good, projection_ok=False)
    assert check_cell(diverged) == ["read model equal to the actors: False"]
