"""Cold actors: commands that each load their account from the store on first touch.

    python -m bench.cold_actors                       # 20,000 accounts, 40,000 deposits
    python -m bench.cold_actors --runs 5 --aggregates 20000 --commands 40000

Each run is `python -m demo loadtest --cold` in a process of its own (a fresh
temporary store): the accounts are opened, every actor is passivated, then
`--concurrency` callers send deposits to random accounts, so most of the measured
commands find their actor cold and load it (snapshot, events, fold) first. Per run and
as medians over the runs: commands/s, latency p50/p99, projection lag p99, CPU per
command (every thread of the process), actors loaded per second, live actors at the
end, and the time the garbage collector took during the measured phase (`gc.callbacks`)
with the number of full (generation 2) collections (`--gc-threshold N` runs with the
collector's first threshold at N, to see what tuning it does). Also the loads' group
reads (`read_streams`): how many, streams per read, and the wall time of one read per
stream read, p50 and p99 (on a SQLite file they run on the event loop's thread, which
they block that long: `StoreOptions.loop_reads`). Runs on the load test's event loop
(uvloop when installed). The floor: latency p99 <= 100 ms and projection lag p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from functools import partial
from typing import Any

from demo._loop import resolve, run

LATENCY_P99_FLOOR_MS = 100.0
LAG_P99_FLOOR_MS = 50.0


class _GcClock:
    """Seconds spent in collections (and full ones counted) while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.seconds = 0.0
        self.full = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self.on:
            self.seconds += time.perf_counter() - self._began
            self.full += info["generation"] == 2


async def _one(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this process: the load test's report plus the GC figures."""
    from demo._loadtest import LoadOptions, _driver, run_load
    from store import SQLiteEventStore

    if args.gc_threshold is not None:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    clock = _GcClock()
    gc.callbacks.append(clock)
    load = _driver._Run.load

    async def measured(self: _driver._Run) -> float:
        clock.on = True
        try:
            return await load(self)
        finally:
            clock.on = False

    _driver._Run.load = measured  # type: ignore[method-assign]
    reads: list[tuple[int, float]] = []  # (streams, seconds) per group read, measured
    read_streams = SQLiteEventStore.read_streams

    async def timed(self: SQLiteEventStore, starts: Any, *, limit: int) -> Any:
        began = time.perf_counter()
        try:
            return await read_streams(self, starts, limit=limit)
        finally:
            if clock.on:
                reads.append((len(starts), time.perf_counter() - began))

    SQLiteEventStore.read_streams = timed  # type: ignore[method-assign,assignment]
    options = LoadOptions(
        aggregates=args.aggregates,
        commands=args.commands,
        concurrency=args.concurrency,
        db=args.db,
        projection=True,
        cold=True,
        progress="never",
        seed=args.seed,
    )
    report = await run_load(options)
    seconds = report.seconds or 1e-9
    per_stream = sorted(t / n * 1e6 for n, t in reads) or [0.0]
    return {
        "commands_per_s": report.commands_per_s,
        "latency_ms_p50": report.latency_ms.p50,
        "latency_ms_p99": report.latency_ms.p99,
        "projection_lag_ms_p99": report.projection_lag_ms_p99,
        "cpu_ms_per_command": report.cpu_ms_per_command,
        "loads_per_s": round(report.live_actors / seconds, 1),
        "live_actors": report.live_actors,
        "gc_ms": round(clock.seconds * 1000.0, 1),
        "gc_full": clock.full,
        "errors": report.errors,
        "seconds": report.seconds,
        "group_reads": len(reads),
        "streams_per_read": round(sum(n for n, _ in reads) / max(len(reads), 1), 2),
        "read_us_per_stream_p50": round(per_stream[len(per_stream) // 2], 1),
        "read_us_per_stream_p99": round(per_stream[int(len(per_stream) * 0.99)], 1),
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aggregates", type=int, default=20_000)
    parser.add_argument("--commands", type=int, default=40_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", help="a postgresql:// URL (default: a temporary SQLite file)")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        metavar="N",
        help="the collector's first threshold for the runs (gc.set_threshold(N, ...);"
        " default: Python's, 700)",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(partial(_one, args), resolve("auto"))), flush=True)
        return
    runs: list[dict[str, Any]] = []
    command = [sys.executable, "-m", "bench.cold_actors", "--one", *sys.argv[1:]]
    for _ in range(args.runs):
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print("run", json.dumps(runs[-1]), flush=True)
    median = _median(runs)
    print("median", json.dumps(median))
    ok = (
        median["latency_ms_p99"] <= LATENCY_P99_FLOOR_MS
        and median["projection_lag_ms_p99"] <= LAG_P99_FLOOR_MS
    )
    print(
        f"floor (p99 <= {LATENCY_P99_FLOOR_MS:g} ms, lag p99 <= {LAG_P99_FLOOR_MS:g} ms):"
        f" {'met' if ok else 'not met'}"
    )


if __name__ == "__main__":
    main()
