"""The load test against the bare runtime on the same workload, side by side.

Both sides send deposits of 1-10,000 cents to accounts of the demo bank picked at random
(1,000 accounts, opened before the clock starts), C commands in flight, on a fresh
SQLite file with synchronous=FULL, a live `Balances` read model following over the bus.
The runtime side is the least code that does it: C tasks calling `router.ask`. The load
test side is `python -m demo loadtest` run in this process (`run_load`), with its
instruments (latency per command, the timeline, lag samples, the final check of the read
model). Both run on the event loop the load test takes by default (uvloop when it is
installed). Runs alternate in pairs, each side first in every other pair (runtime, load
test, load test, runtime...), so both see the machine at nearly the same moment and
neither always runs second; the ratio (the median of the pairs' ratios) is the figure
to watch.

    python -m bench.loadtest --runs 5 --concurrency 1000
    python -m bench.loadtest --runs 3 --concurrency 1 100 1000    # with every floor

After the table it prints each floor of the load test whose number in flight ran: p50
<= 0.5 ms at 1, p99 <= 10 ms at 100, and at 1,000 the load test >= 0.9 of the runtime
and its projection lag p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from actors import open_system
from demo import _loop as demo_loop
from demo._loadtest import LoadOptions, run_load
from demo.bank import Account, Balances, BalancesView, Deposit, OpenAccount
from store import RecordedEvent

ACCOUNTS = 1_000


@dataclass(frozen=True)
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    lag_p99_ms: float
    cpu_us: float  # process CPU time per command


class _StampedBalances(Balances):
    """`Balances`, noting when each position was applied."""

    def __init__(self, applied: dict[int, float]) -> None:
        self.applied = applied

    def apply(self, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        self.applied[recorded.position] = time.perf_counter()
        return super().apply(view, recorded)


def _p99(values: list[float]) -> float:
    return _quantile(values, 0.99)


def _quantile(values: list[float], q: float) -> float:
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def run_runtime(path: Path, concurrency: int, commands: int, seed: int) -> Run:
    """C tasks sending deposits to random accounts through `router.ask`."""
    latencies: list[float] = []
    published: dict[int, float] = {}
    applied: dict[int, float] = {}
    accounts = [f"{i:04d}" for i in range(ACCOUNTS)]
    async with open_system(
        path, synchronous="FULL", max_live_actors=ACCOUNTS, idle_timeout=None
    ) as system:
        router = system.aggregates(Account)

        async def open_some(ids: list[str]) -> None:
            for account in ids:
                await router.ask(account, OpenAccount(account, f"owner-{account}"))

        async with anyio.create_task_group() as tg:
            for c in range(min(concurrency, ACCOUNTS)):
                tg.start_soon(open_some, accounts[c :: min(concurrency, ACCOUNTS)])

        def on_commit(batch: Sequence[RecordedEvent]) -> None:
            now = time.perf_counter()
            for recorded in batch:
                published[recorded.position] = now

        system.store.add_commit_listener(on_commit)
        handle = await system.project(_StampedBalances(applied))
        issued = 0

        async def caller(index: int) -> None:
            nonlocal issued
            rng = random.Random(f"{seed}-{index}")
            clock = time.perf_counter
            while issued < commands:
                issued += 1
                account = accounts[rng.randrange(ACCOUNTS)]
                started = clock()
                await router.ask(account, Deposit(account, rng.randint(1, 10_000)))
                latencies.append(clock() - started)

        cpu = time.process_time()
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(concurrency):
                tg.start_soon(caller, index)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        await handle.wait_for(await system.store.last_position(), timeout=60)
    lags = [1000 * (at - published[p]) for p, at in applied.items() if p in published]
    return Run(
        len(latencies) / seconds,
        1000 * _quantile(latencies, 0.5),
        1000 * _p99(latencies),
        _p99(lags),
        1e6 * cpu / len(latencies),
    )


async def run_loadtest(path: Path, concurrency: int, commands: int, seed: int) -> Run:
    """`python -m demo loadtest` (deposit mix) in this process."""
    options = LoadOptions(
        aggregates=ACCOUNTS,
        commands=commands,
        concurrency=concurrency,
        db=str(path),
        seed=seed,
        progress="never",
    )
    report = await run_load(options)
    return Run(
        report.commands_per_s,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.projection_lag_ms_p99 or 0.0,
        1000 * report.cpu_ms_per_command,
    )


def _median(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rate for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.lag_p99_ms for r in runs),
        statistics.median(r.cpu_us for r in runs),
    )


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs per side (median)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1000])
    parser.add_argument("--commands", type=int, default=30_000, help="commands per run")
    parser.add_argument(
        "--commands-at-1",
        type=int,
        default=3_000,
        help="commands per run at 1 in flight (one at a time: fewer do)",
    )
    args = parser.parse_args(argv)
    rows: list[tuple[int, Run, Run, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in args.concurrency:
            runtime: list[Run] = []
            loadtest: list[Run] = []
            commands = args.commands_at_1 if concurrency == 1 else args.commands
            for n in range(args.runs):
                # Each side goes first every other pair: neither always runs on the
                # heap and collector the other left.
                first_runtime = n % 2 == 0
                if first_runtime:
                    runtime.append(
                        await run_runtime(
                            Path(tmp, f"r-{concurrency}-{n}.db"), concurrency, commands, n
                        )
                    )
                loadtest.append(
                    await run_loadtest(
                        Path(tmp, f"l-{concurrency}-{n}.db"), concurrency, commands, n
                    )
                )
                if not first_runtime:
                    runtime.append(
                        await run_runtime(
                            Path(tmp, f"r-{concurrency}-{n}.db"), concurrency, commands, n
                        )
                    )
            ratios = [lt.rate / rt.rate for rt, lt in zip(runtime, loadtest, strict=True)]
            rows.append(
                (concurrency, _median(runtime), _median(loadtest), statistics.median(ratios))
            )
    print(
        f"deposit mix, {ACCOUNTS} accounts, synchronous=FULL, thread writer, live Balances,"
        f" {demo_loop.loop_name()};"
        f" {args.commands} commands per run, median of {args.runs} alternating runs"
        " (CPU: the whole process over the measured phase, per command)"
    )
    header = (
        f"{'in flight':>9} | {'runtime/s':>9} | {'p99 ms':>6} | {'lag p99':>7} | {'cpu us':>6}"
        f" | {'loadtest/s':>10} | {'p50 ms':>6} | {'p99 ms':>6} | {'lag p99':>7}"
        f" | {'cpu us':>6} | {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    for concurrency, rt, lt, ratio in rows:
        print(
            f"{concurrency:>9} | {rt.rate:>9,.0f} | {rt.p99_ms:>6.1f} | {rt.lag_p99_ms:>7.2f}"
            f" | {rt.cpu_us:>6.0f} | {lt.rate:>10,.0f} | {lt.p50_ms:>6.2f} | {lt.p99_ms:>6.1f}"
            f" | {lt.lag_p99_ms:>7.2f} | {lt.cpu_us:>6.0f} | {ratio:>5.2f}"
        )
    for line in floors(rows):
        print(line)


def floors(rows: Sequence[tuple[int, Run, Run, float]]) -> list[str]:
    """The load test's floors, each with its figure (medians) and whether it is met: those
    whose number of commands in flight was run."""
    lines = []
    for concurrency, _, loadtest, ratio in rows:
        checks = []
        if concurrency == 1:
            checks.append(("p50", loadtest.p50_ms, "<=", 0.5, "ms"))
        if concurrency == 100:
            checks.append(("p99", loadtest.p99_ms, "<=", 10.0, "ms"))
        if concurrency == 1000:
            checks.append(("load test / runtime", ratio, ">=", 0.9, ""))
            checks.append(("projection lag p99", loadtest.lag_p99_ms, "<=", 20.0, "ms"))
        for name, figure, sense, floor, unit in checks:
            met = figure <= floor if sense == "<=" else figure >= floor
            lines.append(
                f"floor at {concurrency} in flight: {name} {figure:.2f}{unit}"
                f" {sense} {floor:g}{unit}: {'met' if met else 'not met'}"
            )
    return lines


if __name__ == "__main__":
    # Both sides on the loop `python -m demo loadtest` picks by default (`--loop auto`).
    demo_loop.run(main, demo_loop.resolve("auto"))
