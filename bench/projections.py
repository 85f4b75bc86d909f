"""Projection benchmarks: rebuild speed over a large log, and live lag under write load.

    python -m bench.projections                      # 1,000,000 events, 1,000 writers
    python -m bench.projections --events 100000      # a quick run

Rebuild: a log of `--events` events is written (large appends, `synchronous=NORMAL`),
then a balance projection is started and `rebuild()` is timed three times; the median
events/s is reported (floor: 150,000). Live lag: `--writers` concurrent callers append
single events through `store.append` while a live projection follows; the lag of one
event is the time from its commit (the store's commit listener) to its `apply`; p50,
p99 and max are reported in ms (floor for p99: 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from bus import open_bus
from readmodels import Projection, ProjectionOptions, start_projection
from store import ANY, EventRegistry, RecordedEvent, open_store

REBUILD_FLOOR = 150_000
LAG_P99_FLOOR_MS = 50.0


class Deposited(msgspec.Struct, frozen=True, tag="bench.deposited"):
    amount: int


class Withdrawn(msgspec.Struct, frozen=True, tag="bench.withdrawn"):
    amount: int


def registry() -> EventRegistry:
    return EventRegistry([Deposited, Withdrawn])


class Balances(Projection[dict[str, int]]):
    """Balance per stream, mutated in place."""

    event_types = ("bench.deposited", "bench.withdrawn")

    def initial_view(self) -> dict[str, int]:
        return {}

    def apply(self, view: dict[str, int], recorded: RecordedEvent) -> dict[str, int]:
        event = recorded.event
        stream_id = recorded.stream_id
        if type(event) is Deposited:
            view[stream_id] = view.get(stream_id, 0) + event.amount
        else:
            view[stream_id] = view.get(stream_id, 0) - event.amount
        return view


class TimedBalances(Balances):
    """Balances that also notes when each position was applied."""

    def __init__(self) -> None:
        self.applied_at: dict[int, float] = {}

    def apply(self, view: dict[str, int], recorded: RecordedEvent) -> dict[str, int]:
        self.applied_at[recorded.position] = time.perf_counter()
        return super().apply(view, recorded)


async def build_log(path: Path, events: int) -> None:
    """Write `events` events in appends of up to 10,000 by 4 concurrent writers."""
    per_append = 10_000
    appends = (events + per_append - 1) // per_append
    async with open_store(path, registry=registry(), synchronous="NORMAL") as store:

        async def writer(first: int) -> None:
            for n in range(first, appends, 4):
                count = min(per_append, events - n * per_append)
                batch = [Deposited(i % 97) if i % 5 else Withdrawn(3) for i in range(count)]
                await store.append(f"acct-{n % 1000}", batch, expected_version=ANY)

        async with anyio.create_task_group() as tg:
            for first in range(4):
                tg.start_soon(writer, first)


async def bench_rebuild(
    path: Path, events: int, runs: int
) -> tuple[float, list[float], list[float]]:
    """Catch-up events/s, then per rebuild: events/s and CPU µs per event."""
    async with (
        open_store(path, registry=registry()) as store,
        open_bus(store) as bus,
        anyio.create_task_group() as tg,
    ):
        head = await store.last_position()
        assert head == events, (head, events)
        handle = await start_projection(tg, store, bus, Balances(), options=ProjectionOptions())
        started = time.perf_counter()
        await handle.wait_for(head, timeout=600)
        catch_up = head / (time.perf_counter() - started)
        expected = handle.view
        rates: list[float] = []
        cpu_us: list[float] = []
        for _ in range(runs):
            started, cpu = time.perf_counter(), time.process_time()
            await handle.rebuild()
            rates.append(head / (time.perf_counter() - started))
            cpu_us.append((time.process_time() - cpu) * 1e6 / head)
            assert handle.view == expected
            assert handle.statistics().applied == head
        await handle.stop()
    return catch_up, rates, cpu_us


async def bench_lag(path: Path, writers: int, appends: int) -> list[float]:
    commit_at: dict[int, float] = {}

    def on_commit(batch: Sequence[RecordedEvent]) -> None:
        now = time.perf_counter()
        for recorded in batch:
            commit_at[recorded.position] = now

    async with open_store(path, registry=registry()) as store:
        store.add_commit_listener(on_commit)
        async with open_bus(store) as bus, anyio.create_task_group() as tg:
            projection = TimedBalances()
            handle = await start_projection(tg, store, bus, projection)

            async def writer(index: int) -> None:
                for n in range(appends):
                    await store.append(f"w-{index}", [Deposited(n)], expected_version=ANY)

            async with anyio.create_task_group() as load:
                for index in range(writers):
                    load.start_soon(writer, index)
            head = await store.last_position()
            await handle.wait_for(head, timeout=60)
            await handle.stop()
    return [1000 * (projection.applied_at[p] - commit_at[p]) for p in range(1, head + 1)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--writers", type=int, default=1_000)
    parser.add_argument("--appends", type=int, default=20, help="appends per writer")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        log_path = Path(tmp) / "rebuild.db"
        started = time.perf_counter()
        await build_log(log_path, args.events)
        print(f"log: {args.events:,} events written in {time.perf_counter() - started:.1f} s")
        catch_up, rates, cpu_us = await bench_rebuild(log_path, args.events, args.runs)
        median = statistics.median(rates)
        print(f"catch-up from the store: {catch_up:,.0f} events/s")
        print(
            f"rebuild: median {median:,.0f} events/s over {args.runs} runs"
            f" ({', '.join(f'{r:,.0f}' for r in rates)}),"
            f" CPU {statistics.median(cpu_us):.2f} µs per event;"
            f" floor {REBUILD_FLOOR:,}: {'ok' if median >= REBUILD_FLOOR else 'BELOW'}"
        )
        lags = await bench_lag(Path(tmp) / "lag.db", args.writers, args.appends)
        p99 = percentile(lags, 0.99)
        print(
            f"live lag, {args.writers} writers x {args.appends} appends ({len(lags):,} events):"
            f" p50 {percentile(lags, 0.5):.2f} ms, p99 {p99:.2f} ms, max {max(lags):.2f} ms;"
            f" floor p99 < {LAG_P99_FLOOR_MS} ms: {'ok' if p99 < LAG_P99_FLOOR_MS else 'ABOVE'}"
        )


if __name__ == "__main__":
    anyio.run(main)
