"""`python -m demo loadtest`: concurrent command throughput through the whole stack.

Each run opens a store and an actor system, sets up the mix's aggregates (accounts,
warehouses; not measured), then keeps `concurrency` commands in flight until `commands`
were sent or `duration` seconds passed. Every command goes through the router (`ask`),
is decided, committed (group commit) and acknowledged; with the projection on, a live
`Balances` read model follows over the bus. The bank and shop mixes run their process
managers alongside and wait for them to finish afterwards. The report gives throughput,
latency percentiles, rejections and errors, the store's mean events per commit, the
projection's committed-to-applied lag, the process managers' outcome and the peak RSS.

With `ack_log`, each acknowledged command appends `stream_id<TAB>version<TAB>position`
to that file with one unbuffered `os.write` on an `O_APPEND` descriptor, before the
next command of that task is sent; after a crash, every line names events that must be
in the store.
"""

from __future__ import annotations

import math
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Literal, TextIO

import anyio
import msgspec

from actors import ActorSystem, Command, Rejected, open_system
from demo._backend import backend_of, redacted
from demo._workloads import (
    BankWorkload,
    DepositWorkload,
    Router,
    ShopWorkload,
    Step,
    Workload,
)
from demo.bank import Account, Balances, BalancesView
from readmodels import ProjectionHandle
from store import RecordedEvent

__all__ = [
    "SWEEP_HEADER",
    "LoadOptions",
    "LoadReport",
    "LoadTestError",
    "Percentiles",
    "render",
    "run_load",
    "sweep_row",
]

Mix = Literal["deposit", "bank", "shop"]
Synchronous = Literal["FULL", "NORMAL"]
Writer = Literal["thread", "process"]

SETTLE_TIMEOUT = 300.0
"""Seconds the process managers (and the read model) get to finish after the load."""

MAX_LAG_SAMPLES = 200_000
"""Projection lag samples kept (a uniform reservoir sample beyond that many events)."""


class LoadTestError(Exception):
    """A load test cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What a load test does.

    Attributes:
        aggregates: bank accounts the commands are spread over (uniformly at random).
        commands: commands to send (ignored when `duration` is set).
        duration: seconds to keep sending instead of a command count.
        concurrency: commands in flight at once (one task each).
        db: the SQLite file (None: a temporary file, removed afterwards; ":memory:"),
            or a `postgresql://` URL (its `?schema=` parameter names the schema).
        synchronous: the store's durability mode.
        writer: the store's writer, "thread" or "process" (`open_store`'s option; a
            SQLite file only: not ":memory:", not PostgreSQL).
        mix: "deposit" (deposits only), "bank" (transfers, deposits, withdrawals) or
            "shop" (orders paid from bank accounts); see `demo._workloads`.
        projection: run a live `Balances` read model and measure its lag.
        seed: seeds the choice of accounts and amounts.
        ack_log: append one line per acknowledged command to this file.
        progress: print a progress line to stderr: "auto" (only on a terminal),
            "always" (one line per interval; for tools reading a pipe), "never".
        progress_interval: seconds between progress lines.
    """

    aggregates: int = 1_000
    commands: int = 100_000
    duration: float | None = None
    concurrency: int = 1_000
    db: str | None = None
    synchronous: Synchronous = "FULL"
    writer: Writer = "thread"
    mix: Mix = "deposit"
    projection: bool = True
    seed: int = 0
    ack_log: str | None = None
    progress: Literal["auto", "always", "never"] = "auto"
    progress_interval: float = 0.5

    def __post_init__(self) -> None:
        for name in ("aggregates", "commands", "concurrency"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise LoadTestError(f"--{name} must be a positive integer, not {value!r}")
        if self.duration is not None and not 0 < self.duration < math.inf:
            raise LoadTestError(f"--duration must be > 0 seconds, not {self.duration!r}")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise LoadTestError(f"--synchronous must be FULL or NORMAL, not {self.synchronous!r}")
        if self.writer not in ("thread", "process"):
            raise LoadTestError(f"--writer must be thread or process, not {self.writer!r}")
        if self.writer == "process" and self.db == ":memory:":
            raise LoadTestError("--writer process needs a database file, not --db :memory:")
        if self.writer == "process" and backend_of(self.db) == "postgresql":
            raise LoadTestError(
                "--writer process is SQLite's (a writer process on a file); the PostgreSQL"
                " store writes on a connection of its own: drop --writer process"
            )
        if self.mix not in ("deposit", "bank", "shop"):
            raise LoadTestError(f"--mix must be deposit, bank or shop, not {self.mix!r}")
        if not 0 < self.progress_interval < math.inf:
            raise LoadTestError(
                f"--progress-interval must be > 0 seconds, not {self.progress_interval!r}"
            )


class Percentiles(msgspec.Struct, frozen=True):
    """Latency percentiles in milliseconds (nearest rank)."""

    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: list[float]) -> Percentiles:
        """The percentiles of `samples` (milliseconds); all zero when there are none."""
        if not samples:
            return cls(0.0, 0.0, 0.0, 0.0)
        ordered = sorted(samples)

        def rank(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)

        return cls(rank(0.50), rank(0.95), rank(0.99), round(ordered[-1], 3))


class LoadReport(msgspec.Struct, frozen=True):
    """The figures of one load test run (`--json` prints it as one object).

    Attributes:
        mix, concurrency, aggregates, synchronous, writer, db: what ran (db: the path,
            "temporary" / ":memory:", or the PostgreSQL URL without its password).
        backend: the store that ran: "sqlite" or "postgresql".
        commands: commands answered (acknowledged, rejected or failed).
        acknowledged: commands whose events were committed.
        events: events committed while the commands ran (process managers' included).
        seconds: wall time of the measured phase.
        commands_per_s, events_per_s: throughput of the measured phase.
        latency_ms: per-command latency (send to durable reply).
        rejected: commands refused by the domain.
        errors: commands that failed otherwise (timeouts, store errors...).
        error_types: the count of each error type.
        events_per_commit: mean events per write transaction (store statistics).
        appends_per_commit: mean appends per write transaction.
        projection_lag_ms_p99: committed-to-applied lag of the live read model, p99
            (None without `--projection`).
        projection_ok: the read model's final balances equal the actors' (None without
            a projection).
        setup_seconds: time to open the accounts (not measured).
        settle_seconds: time the process managers needed after the last command to
            finish what it started (0 for the deposit mix).
        outcome: what the process managers achieved (transfers settled and refunded,
            money conserved; orders per status, revenue...).
        peak_rss_mb: the process's peak resident set size.
        seed: the seed used.
    """

    mix: str
    concurrency: int
    aggregates: int
    synchronous: str
    writer: str
    db: str
    backend: str
    commands: int
    acknowledged: int
    events: int
    seconds: float
    commands_per_s: float
    events_per_s: float
    latency_ms: Percentiles
    rejected: int
    errors: int
    error_types: dict[str, int]
    events_per_commit: float
    appends_per_commit: float
    projection_lag_ms_p99: float | None
    projection_ok: bool | None
    setup_seconds: float
    settle_seconds: float
    outcome: dict[str, int | float | bool]
    peak_rss_mb: float
    seed: int


class _LagSampler:
    """Collects committed-to-applied lags of a live projection (ms): every one up to
    `MAX_LAG_SAMPLES`, then a uniform reservoir sample of that size."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.seen = 0
        self.measuring = False
        self._rng = random.Random(0)

    def observe(self, recorded: RecordedEvent) -> None:
        if not self.measuring:
            return
        self.seen += 1
        lag = (time.time() - recorded.recorded_at) * 1000.0
        if len(self.samples) < MAX_LAG_SAMPLES:
            self.samples.append(lag)
            return
        slot = self._rng.randrange(self.seen)
        if slot < MAX_LAG_SAMPLES:
            self.samples[slot] = lag


class _MeasuredBalances(Balances):
    """`Balances`, plus a lag sample per applied event. Instrumentation of the load
    test: it reads the clock, which a read model proper never does."""

    def __init__(self, sampler: _LagSampler) -> None:
        self.sampler = sampler

    def apply(self, view: BalancesView, recorded: RecordedEvent) -> BalancesView:
        view = super().apply(view, recorded)
        self.sampler.observe(recorded)
        return view


class _AckLog:
    """One `os.write` per acknowledged command on an O_APPEND descriptor."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, stream_id: str, version: int, position: int) -> None:
        os.write(self.fd, f"{stream_id}\t{version}\t{position}\n".encode())

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class _Counters:
    issued: int = 0
    acknowledged: int = 0
    rejected: int = 0
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


def _workload(options: LoadOptions) -> Workload:
    if options.mix == "bank":
        return BankWorkload(options.aggregates, options.seed)
    if options.mix == "shop":
        return ShopWorkload(options.aggregates, options.commands, options.seed)
    return DepositWorkload(options.aggregates)


class _Run:
    def __init__(
        self,
        options: LoadOptions,
        workload: Workload,
        ack_log: _AckLog | None,
        progress: TextIO | None,
    ) -> None:
        self.options = options
        self.workload = workload
        self.ack_log = ack_log
        self.progress = progress
        self.counters = _Counters()
        self.started = 0.0
        self.deadline = math.inf

    async def send(
        self, router: Router, aggregate_id: str, command: Command, measure: bool
    ) -> None:
        counters = self.counters
        began = time.perf_counter()
        try:
            result = await router.ask(aggregate_id, command)
        except Rejected:
            counters.rejected += 1
            return
        except Exception as error:  # noqa: BLE001 - counted and reported by type
            counters.errors += 1
            name = type(error).__name__
            counters.error_types[name] = counters.error_types.get(name, 0) + 1
            return
        if self.ack_log is not None:
            self.ack_log.write(router.stream_id(aggregate_id), result.version, result.position)
        if measure:
            counters.latencies.append((time.perf_counter() - began) * 1000.0)
            counters.acknowledged += 1

    async def send_all(self, steps: list[Step]) -> None:
        """Send `steps` (setup, not measured) with the run's concurrency."""
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(steps):
                router, aggregate_id, command = steps[next_index]
                next_index += 1
                await self.send(router, aggregate_id, command, False)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.options.concurrency, len(steps))):
                tg.start_soon(worker)

    async def worker(self, index: int) -> None:
        options = self.options
        rng = random.Random(f"{options.seed}-{index}")
        step = self.workload.step
        counters = self.counters
        limit = math.inf if options.duration is not None else options.commands
        while counters.issued < limit and time.perf_counter() < self.deadline:
            n = counters.issued
            counters.issued += 1
            router, aggregate_id, command = step(rng, n)
            await self.send(router, aggregate_id, command, True)

    async def report_progress(self) -> None:
        out = self.progress
        if out is None:
            return
        end = "\r" if out.isatty() else "\n"
        counters = self.counters
        while True:
            await anyio.sleep(self.options.progress_interval)
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            out.write(
                f"progress acked={counters.acknowledged} rejected={counters.rejected}"
                f" errors={counters.errors} elapsed={elapsed:.1f}s"
                f" rate={counters.acknowledged / elapsed:,.0f}/s{end}"
            )
            out.flush()


async def run_load(options: LoadOptions, *, stderr: TextIO | None = None) -> LoadReport:
    """Run one load test and return its figures.

    Args:
        options: what to run.
        stderr: where progress lines go (default `sys.stderr`).

    Raises:
        LoadTestError: the options cannot be run.
        StoreError: the store could not be opened.

    Cancellation: the run stops; the actor system drains and closes the store.
    """
    err = sys.stderr if stderr is None else stderr
    show = options.progress == "always" or (options.progress == "auto" and err.isatty())
    tmpdir: str | None = None
    if options.db is None:
        tmpdir = tempfile.mkdtemp(prefix="esactors-load-")
        path, label = os.path.join(tmpdir, "load.db"), "temporary"
    else:
        path, label = options.db, redacted(options.db)
    ack_log = _AckLog(options.ack_log) if options.ack_log else None
    try:
        return await _run(options, path, label, ack_log, err if show else None)
    finally:
        if ack_log is not None:
            ack_log.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


async def _run(
    options: LoadOptions,
    path: str,
    label: str,
    ack_log: _AckLog | None,
    progress: TextIO | None,
) -> LoadReport:
    sampler = _LagSampler()
    async with open_system(
        path,
        synchronous=options.synchronous,
        writer=options.writer,
        max_live_actors=max(options.aggregates, 1_000),
        idle_timeout=None,
    ) as system:
        handle: ProjectionHandle[BalancesView] | None = None
        if options.projection:
            handle = await system.project(_MeasuredBalances(sampler))
        workload = _workload(options)
        run = _Run(options, workload, ack_log, progress)
        began = time.perf_counter()
        await workload.setup(system, run.send_all)
        setup = time.perf_counter() - began
        before = system.store.statistics()
        sampler.measuring = True
        run.started = time.perf_counter()
        if options.duration is not None:
            run.deadline = run.started + options.duration
        async with anyio.create_task_group() as workers:
            workers.start_soon(run.report_progress)
            async with anyio.create_task_group() as senders:
                for index in range(options.concurrency):
                    senders.start_soon(run.worker, index)
            workers.cancel_scope.cancel()
        seconds = time.perf_counter() - run.started
        if progress is not None and progress.isatty():
            progress.write("\n")
        after = system.store.statistics()
        began = time.perf_counter()
        with anyio.fail_after(SETTLE_TIMEOUT):
            outcome = await workload.settle(system)
        settle = time.perf_counter() - began
        projection_ok: bool | None = None
        if handle is not None:
            last = await system.store.last_position()
            await handle.wait_for(last, timeout=SETTLE_TIMEOUT)
            sampler.measuring = False
            projection_ok = await _balances_agree(system, handle.view, workload.accounts)
            await handle.stop()
    counters = run.counters
    batches = after.batches - before.batches
    events = after.events - before.events
    answered = counters.acknowledged + counters.rejected + counters.errors
    return LoadReport(
        mix=options.mix,
        concurrency=options.concurrency,
        aggregates=options.aggregates,
        synchronous=options.synchronous,
        writer=options.writer,
        db=label,
        backend=backend_of(options.db),
        commands=answered,
        acknowledged=counters.acknowledged,
        events=events,
        seconds=round(seconds, 3),
        commands_per_s=round(answered / seconds, 1) if seconds else 0.0,
        events_per_s=round(events / seconds, 1) if seconds else 0.0,
        latency_ms=Percentiles.of(counters.latencies),
        rejected=counters.rejected,
        errors=counters.errors,
        error_types=dict(counters.error_types),
        events_per_commit=round((after.events - before.events) / batches, 2) if batches else 0.0,
        appends_per_commit=round((after.appends - before.appends) / batches, 2) if batches else 0.0,
        projection_lag_ms_p99=(Percentiles.of(sampler.samples).p99 if options.projection else None),
        projection_ok=projection_ok,
        setup_seconds=round(setup, 3),
        settle_seconds=round(settle, 3),
        outcome=outcome,
        peak_rss_mb=round(_peak_rss_mb(), 1),
        seed=options.seed,
    )


async def _balances_agree(system: ActorSystem, view: BalancesView, accounts: list[str]) -> bool:
    """Whether the read model's balances equal the actors' (sampled: up to 100)."""
    router = system.aggregates(Account)
    step = max(1, len(accounts) // 100)
    for account in accounts[::step]:
        state = await router.state(account)
        if view.balance_of(account) != state.balance:
            return False
    return True


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def render(report: LoadReport) -> str:
    """The report as a few human-readable lines."""
    lat = report.latency_ms
    lag = "off" if report.projection_lag_ms_p99 is None else f"{report.projection_lag_ms_p99} ms"
    head = (
        f"mix {report.mix}: {report.commands:,} commands over {report.aggregates:,} aggregates,"
        f" concurrency {report.concurrency:,}, synchronous={report.synchronous},"
        f" {report.writer} writer, backend {report.backend}, db {report.db}"
    )
    rate = (
        f"  {report.commands_per_s:,.0f} commands/s, {report.events_per_s:,.0f} events/s"
        f" in {report.seconds:.2f} s (setup {report.setup_seconds:.2f} s)"
    )
    errors = f"  rejected {report.rejected}, errors {report.errors}"
    if report.error_types:
        errors += f" {report.error_types}"
    projection = f"  projection lag p99 {lag}"
    if report.projection_ok is not None:
        projection += f", read model agrees: {report.projection_ok}"
    settled = ""
    if report.outcome:
        pairs = ", ".join(f"{k} {v}" for k, v in report.outcome.items())
        settled = f"  settled in {report.settle_seconds:.2f} s after the load: {pairs}"
    lines = [
        head,
        rate,
        f"  latency ms: p50 {lat.p50}  p95 {lat.p95}  p99 {lat.p99}  max {lat.max}",
        errors,
        f"  {report.events_per_commit} events per commit ({report.appends_per_commit} appends)",
        projection,
        f"  peak RSS {report.peak_rss_mb} MB",
    ]
    if settled:
        lines.insert(-1, settled)
    return "\n".join(lines)


def sweep_row(report: LoadReport) -> str:
    """One row of the `--sweep` table."""
    lat = report.latency_ms
    lag = "-" if report.projection_lag_ms_p99 is None else f"{report.projection_lag_ms_p99:.1f}"
    return (
        f"{report.concurrency:>11,} {report.commands_per_s:>12,.0f} {lat.p50:>8.2f}"
        f" {lat.p99:>8.2f} {lat.max:>8.2f} {report.events_per_commit:>9.1f} {lag:>8}"
        f" {report.errors:>6}"
    )


SWEEP_HEADER = (
    f"{'concurrency':>11} {'commands/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    f" {'ev/commit':>9} {'lag p99':>8} {'errors':>6}"
)
