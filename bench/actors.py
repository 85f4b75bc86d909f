"""Commands through the actor runtime, side by side with bare store appends.

The actor side: C concurrent callers send commands with `router.ask` to 1,000 counter
aggregates (one event per command); caller c owns aggregates c, c + C, c + 2C... and
cycles over them, so every command is acknowledged only after its event committed.
The bare side: the same C callers append the same events straight to the store
(`store.append` at the version each caller knows), which is the group-commit limit the
runtime is built on. Both run on fresh files with synchronous=FULL, alternating actor,
bare, actor, bare... so both see the machine at nearly the same moment; on a shared
machine the ratio of the medians is the number to watch.

    python -m bench.actors --runs 5 --concurrency 1 100 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, assert_never

import anyio
import msgspec

from actors import Aggregate, Command, Event, SystemOptions, open_system
from actors._gc import raised_gc_threshold
from readmodels import Projection
from store import NO_STREAM, EventRegistry, RecordedEvent, open_store

WriterKind = Literal["thread", "process"]
"""The store's `writer` option: where its write transactions run."""

AGGREGATES = 1_000


class Add(Command, tag="bench.add"):
    amount: int


class Added(Event, tag="bench.added"):
    amount: int


class Tally(msgspec.Struct, frozen=True):
    total: int = 0


class Counter(Aggregate[Tally, Add, Added]):
    initial = Tally()
    category = "counter"

    def decide(self, state: Tally, command: Add) -> Sequence[Added]:
        match command:
            case Add(amount=amount):
                return [Added(amount=amount)]
            case _:
                assert_never(command)

    def evolve(self, state: Tally, event: Added) -> Tally:
        return Tally(state.total + event.amount)


class Totals(Projection[dict[str, int]]):
    """A live read model over the load: each counter's total, and when each position
    was applied (for committed-to-applied lag)."""

    name = "bench.totals"
    event_types = (Added,)

    def __init__(self) -> None:
        self.applied_at: dict[int, float] = {}

    def initial_view(self) -> dict[str, int]:
        return {}

    def apply(self, view: dict[str, int], recorded: RecordedEvent) -> dict[str, int]:
        self.applied_at[recorded.position] = time.perf_counter()
        view[recorded.stream_id] = view.get(recorded.stream_id, 0) + recorded.event.amount
        return view


@dataclass(frozen=True)
class Run:
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_us: float
    """CPU time of the process (every thread) per command over the timed phase."""
    lag_p99_ms: float = 0.0


def _owned(concurrency: int) -> list[list[int]]:
    return [list(range(c, AGGREGATES, concurrency)) for c in range(concurrency)]


def _summary(count: int, seconds: float, cpu: float, latencies: list[float]) -> Run:
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return Run(count / seconds, pct(0.50), pct(0.95), pct(0.99), cpu * 1e6 / count)


async def run_actors(
    path: Path, concurrency: int, commands: int, *, projection: bool, writer: WriterKind = "thread"
) -> Run:
    per_caller = max(commands // concurrency, 1)
    latencies: list[float] = []
    commit_at: dict[int, float] = {}
    totals = Totals()
    async with open_system(path, synchronous="FULL", writer=writer) as system:
        router = system.aggregates(Counter)
        owned = _owned(concurrency)
        if projection:

            def on_commit(batch: Sequence[RecordedEvent]) -> None:
                now = time.perf_counter()
                for recorded in batch:
                    commit_at[recorded.position] = now

            system.store.add_commit_listener(on_commit)
            handle = await system.project(totals)

        async def warm(ids: list[int]) -> None:
            for i in ids:
                await router.ask(str(i), Add(1))

        async with anyio.create_task_group() as tg:  # load every actor first
            for ids in owned:
                tg.start_soon(warm, ids)

        async def caller(ids: list[int]) -> None:
            clock = time.perf_counter
            record = latencies.append
            n = len(ids)
            for k in range(per_caller):
                started = clock()
                await router.ask(str(ids[k % n]), Add(1))
                record(clock() - started)

        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for ids in owned:
                tg.start_soon(caller, ids)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        if projection:
            await handle.wait_for(await system.store.last_position(), timeout=60)
    run = _summary(len(latencies), seconds, cpu, latencies)
    if not projection:
        return run
    lags = sorted(
        1000 * (at - commit_at[p]) for p, at in totals.applied_at.items() if p in commit_at
    )
    return dataclasses.replace(run, lag_p99_ms=lags[min(len(lags) - 1, int(0.99 * len(lags)))])


async def run_bare(
    path: Path, concurrency: int, commands: int, writer: WriterKind = "thread"
) -> Run:
    """The same appends through `store.append`, with the collector tuned as a system
    tunes it (`SystemOptions.gc_threshold`), so the two sides differ by the runtime only."""
    with raised_gc_threshold(SystemOptions().gc_threshold):
        return await _run_bare(path, concurrency, commands, writer)


async def _run_bare(path: Path, concurrency: int, commands: int, writer: WriterKind) -> Run:
    per_caller = max(commands // concurrency, 1)
    latencies: list[float] = []
    async with open_store(
        path, registry=EventRegistry([Added]), synchronous="FULL", writer=writer
    ) as store:
        owned = _owned(concurrency)
        versions: dict[int, int] = {}

        async def warm(ids: list[int]) -> None:
            for i in ids:
                await store.append(f"counter-{i}", [Added(1)], expected_version=NO_STREAM)
                versions[i] = 1

        async with anyio.create_task_group() as tg:
            for ids in owned:
                tg.start_soon(warm, ids)

        async def caller(ids: list[int]) -> None:
            clock = time.perf_counter
            record = latencies.append
            n = len(ids)
            for k in range(per_caller):
                i = ids[k % n]
                started = clock()
                result = await store.append(
                    f"counter-{i}", [Added(1)], expected_version=versions[i]
                )
                record(clock() - started)
                versions[i] = result.last_version

        started, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for ids in owned:
                tg.start_soon(caller, ids)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return _summary(len(latencies), seconds, cpu, latencies)


def _median(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rate for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p95_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.cpu_us for r in runs),
        statistics.median(r.lag_p99_ms for r in runs),
    )


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs per side (median)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument(
        "--commands", type=int, default=20_000, help="commands per run (C=1: a tenth)"
    )
    parser.add_argument(
        "--projection",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a live read model follows the actor side (its lag is reported)",
    )
    parser.add_argument(
        "--writer",
        choices=("thread", "process"),
        default="thread",
        help="the store's writer, on both sides (open_store's writer option)",
    )
    args = parser.parse_args(argv)
    rows: list[tuple[int, Run, Run]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in args.concurrency:
            commands = args.commands // 10 if concurrency == 1 else args.commands
            actor_runs: list[Run] = []
            bare_runs: list[Run] = []
            for n in range(args.runs):
                actor_runs.append(
                    await run_actors(
                        Path(tmp, f"a-{concurrency}-{n}.db"),
                        concurrency,
                        commands,
                        projection=args.projection,
                        writer=args.writer,
                    )
                )
                bare_runs.append(
                    await run_bare(
                        Path(tmp, f"b-{concurrency}-{n}.db"), concurrency, commands, args.writer
                    )
                )
            rows.append((concurrency, _median(actor_runs), _median(bare_runs)))
    print(
        f"{AGGREGATES} aggregates, 1 event per command, synchronous=FULL,"
        f" {args.writer} writer,"
        f" median of {args.runs} runs (ask vs bare store.append)"
        + ("; a live projection follows the ask side" if args.projection else "")
    )
    header = (
        f"{'in flight':>9} | {'ask cmd/s':>9} | {'p50 ms':>6} | {'p95 ms':>6} | {'p99 ms':>6}"
        f" | {'CPU µs':>6} | {'bare/s':>8} | {'bare p99':>8} | {'bare µs':>7} | {'ratio':>5}"
        f" | {'lag p99':>7}"
    )
    print(header)
    print("-" * len(header))
    for concurrency, actor, bare in rows:
        print(
            f"{concurrency:>9} | {actor.rate:>9,.0f} | {actor.p50_ms:>6.2f} | {actor.p95_ms:>6.2f}"
            f" | {actor.p99_ms:>6.2f} | {actor.cpu_us:>6.1f} | {bare.rate:>8,.0f}"
            f" | {bare.p99_ms:>8.2f} | {bare.cpu_us:>7.1f} | {actor.rate / bare.rate:>5.2f}"
            f" | {actor.lag_p99_ms:>7.2f}"
        )


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
