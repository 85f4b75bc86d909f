"""The floors `python -m bench.loadtest` prints after its table: each against its own
figure, only for the numbers in flight that ran."""

from __future__ import annotations

from bench.loadtest import Run, floors


def _run(p50: float = 0.3, p99: float = 5.0, lag: float = 1.0) -> Run:
    return Run(rate=1_000.0, p50_ms=p50, p99_ms=p99, lag_p99_ms=lag, cpu_us=30.0)


def test_each_floor_is_judged_on_its_own_figure() -> None:
    rows = [
        (1, _run(), _run(p50=0.51), 1.0),
        (100, _run(), _run(p99=9.9), 1.0),
        (1000, _run(), _run(lag=20.5), 0.9),
    ]
    assert floors(rows) == [
        "floor at 1 in flight: p50 0.51ms <= 0.5ms: not met",
        "floor at 100 in flight: p99 9.90ms <= 10ms: met",
        "floor at 1000 in flight: load test / runtime 0.90 >= 0.9: met",
        "floor at 1000 in flight: projection lag p99 20.50ms <= 20ms: not met",
    ]


def test_only_the_numbers_in_flight_that_ran_are_judged() -> None:
    assert floors([(10, _run(), _run(p99=50.0), 0.5)]) == []
    assert floors([(1000, _run(), _run(), 0.89)])[0].endswith("0.89 >= 0.9: not met")
