"""The report: a run's figures, rendered as lines or as a row of the `--sweep` table."""

from __future__ import annotations

import math

import msgspec

from demo._loadtest._timeline import TimelinePoint

__all__ = [
    "SWEEP_HEADER",
    "LoadReport",
    "Percentiles",
    "ProcessFigures",
    "ProcessesReport",
    "ThresholdResult",
    "render",
    "render_processes",
    "sweep_row",
]


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


class ThresholdResult(msgspec.Struct, frozen=True):
    """A `--threshold` checked against a report.

    Attributes:
        threshold: as written, spaces dropped (`latency_ms.p99<50`).
        name: the report's figure, a dotted path (`latency_ms.p99`).
        op: `<`, `<=`, `>` or `>=`.
        limit: the number it is compared with.
        actual: the figure in the report (None: not measured in this run, which fails).
        passed: whether `actual op limit` holds.
    """

    threshold: str
    name: str
    op: str
    limit: float
    actual: float | None
    passed: bool


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
        cpu_ms_per_command: the process's CPU time (user + system, every thread) over
            the measured phase, per command answered.
        seed: the seed used.
        distribution: how commands picked their account: "uniform" or "zipf".
        zipf_exponent: the exponent of "zipf" (None for "uniform").
        loop: the event loop the run ran on: "asyncio" or "uvloop".
        processes: 1 (the load ran in this process; see `ProcessesReport` for more).
        cold: every actor was passivated before the measured phase (`--cold`): each
            account was loaded from the store by its first measured command.
        live_actors: actors live when the measured phase ended (with `cold`: the
            accounts loaded during it).
        timeline: the measured phase interval by interval (`TimelinePoint`): commands
            answered, their rate, latency p50 and p99.
        thresholds: the `--threshold` checks and their outcome.
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
    distribution: str = "uniform"
    zipf_exponent: float | None = None
    loop: str = "asyncio"
    processes: int = 1
    cpu_ms_per_command: float = 0.0
    cold: bool = False
    live_actors: int = 0
    timeline: list[TimelinePoint] = []
    thresholds: list[ThresholdResult] = []


def _drawn(report: LoadReport | ProcessesReport) -> str:
    """How the accounts were drawn, when not uniformly."""
    if report.distribution == "uniform":
        return ""
    return f" (drawn by {report.distribution}, s={report.zipf_exponent:g})"


def _owned(report: ProcessesReport) -> str:
    """Whether each process drew from accounts of its own."""
    return " (each process its own share)" if report.own_accounts else ""


def _pinned(report: ProcessesReport) -> str:
    """Where the workers ran, when pinned."""
    if report.cpus is None:
        return ""
    return ", workers pinned to CPUs " + ", ".join(str(cpu) for cpu in report.cpus)


def render(report: LoadReport) -> str:
    """The report as a few human-readable lines."""
    lat = report.latency_ms
    lag = "off" if report.projection_lag_ms_p99 is None else f"{report.projection_lag_ms_p99} ms"
    head = (
        f"mix {report.mix}: {report.commands:,} commands over {report.aggregates:,} aggregates"
        f"{_drawn(report)}, concurrency {report.concurrency:,}, synchronous={report.synchronous},"
        f" {report.writer} writer, backend {report.backend}, db {report.db}, {report.loop}"
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
        f"  CPU {report.cpu_ms_per_command} ms per command, peak RSS {report.peak_rss_mb} MB",
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


class ProcessFigures(msgspec.Struct, frozen=True):
    """One worker process's figures in a several-process run.

    Attributes:
        index: the process (0-based); its seed is the run's seed plus `index`.
        commands: commands it had answered (acknowledged, rejected or failed).
        acknowledged, rejected, errors, error_types: as in `LoadReport`.
        conflicts: appends refused because another process had moved the stream on,
            reloaded and retried by the runtime (`system.statistics().conflicts`).
        redecisions: appends another process had passed that the store decided again
            in its transaction instead (`system.statistics().redecisions`).
        seconds: its own measured phase.
        commands_per_s: `commands / seconds`.
        latency_ms: its per-command latency (send to durable reply).
        events_per_commit: mean events per write transaction of its store.
        projection_lag_ms_p99: its read model's committed-to-applied lag, p99.
        projection_ok: its read model, once at the store's head after every process's
            load, equals a fold of the whole store (None without a projection).
        cpu_seconds: its CPU time (user + system, `time.process_time`) over the
            measured phase (a `--writer process` writer's is not included).
        peak_rss_mb: its peak resident set size.
        cpus: the CPUs it was allowed to run on during its load
            (`os.sched_getaffinity`; one when pinned); None where the platform does
            not say.
        in_transaction: the share of its measured phase its store's writer spent in
            write transactions (`StoreStatistics.commit_ms_mean` times the batches).
            On a SQLite file that is holding the file's write lock, which one process
            holds at a time: the processes' shares add up to how busy the lock was.
    """

    index: int
    commands: int
    acknowledged: int
    rejected: int
    errors: int
    error_types: dict[str, int]
    conflicts: int
    redecisions: int
    seconds: float
    commands_per_s: float
    latency_ms: Percentiles
    events_per_commit: float
    projection_lag_ms_p99: float | None
    projection_ok: bool | None
    cpu_seconds: float
    peak_rss_mb: float
    cpus: list[int] | None = None
    in_transaction: float = 0.0


class ProcessesReport(msgspec.Struct, frozen=True):
    """The figures of a run on several processes (`--processes N`, N > 1).

    Attributes:
        processes: the worker processes.
        mix, concurrency, aggregates, synchronous, writer, db, backend: what ran
            (concurrency: commands in flight in each process).
        commands, acknowledged, rejected, errors, error_types: summed over processes.
        conflicts: appends retried after another process's write, summed.
        redecisions: appends decided again in the store's transaction, summed.
        seconds: the common window: first process's start to last process's end.
        commands_per_s: acknowledged commands (all processes) / `seconds`.
        cpu_seconds: the processes' CPU time over their measured phases, summed.
        cpu_ms_per_command: `cpu_seconds` per acknowledged command, in ms.
        cross_process_lag_ms: from one process's acknowledgement of a command to
            another process's read model having applied its event (wall clocks of one
            host); None without a projection.
        cross_process_samples: the (acknowledgement, other process) pairs measured.
        projection_ok: every process's read model equals a fold of the store (None
            without a projection).
        projection_failed: the processes whose read model did not.
        store_matches_acks: every account's balance in the store equals the sum of its
            acknowledged deposits (false may follow errors: a command that timed out
            may still have been committed).
        setup_seconds: time to open the accounts (in the parent; not measured).
        per_process: each process's figures.
        seed: the run's seed.
        distribution, zipf_exponent: how commands picked their account (as in
            `LoadReport`).
        loop: the workers' event loop: "asyncio" or "uvloop".
        thresholds: the `--threshold` checks and their outcome.
        own_accounts: each worker drew from accounts of its own (`--own-accounts`).
        cpus: the CPU each worker was pinned to, in worker order (`--pin`); None when
            the OS placed them.
    """

    processes: int
    mix: str
    concurrency: int
    aggregates: int
    synchronous: str
    writer: str
    db: str
    backend: str
    commands: int
    acknowledged: int
    rejected: int
    errors: int
    error_types: dict[str, int]
    conflicts: int
    redecisions: int
    seconds: float
    commands_per_s: float
    cpu_seconds: float
    cpu_ms_per_command: float
    cross_process_lag_ms: Percentiles | None
    cross_process_samples: int
    projection_ok: bool | None
    projection_failed: list[int]
    store_matches_acks: bool
    setup_seconds: float
    per_process: list[ProcessFigures]
    seed: int
    distribution: str = "uniform"
    zipf_exponent: float | None = None
    loop: str = "asyncio"
    thresholds: list[ThresholdResult] = []
    own_accounts: bool = False
    cpus: list[int] | None = None


class _ChildReport(msgspec.Struct, frozen=True, tag="report", tag_field="kind"):
    """What a worker sends back after its check."""

    figures: ProcessFigures
    started: float  # time.time() when its load began
    ended: float  # ... and ended
    acks: list[tuple[int, float]]  # (position, time.time()) of its acknowledgements
    applied: list[tuple[int, float]]  # (position, time.time()) its read model applied
    deposits: dict[str, int]  # account -> acknowledged deposits (cents)


def render_processes(report: ProcessesReport) -> str:
    """A several-process report as a few human-readable lines."""
    head = (
        f"mix {report.mix} on {report.processes} processes: {report.commands:,} commands over"
        f" {report.aggregates:,} aggregates{_drawn(report)}{_owned(report)},"
        f" concurrency {report.concurrency:,} each,"
        f" synchronous={report.synchronous}, {report.writer} writer, backend"
        f" {report.backend}, db {report.db}, {report.loop}{_pinned(report)}"
    )
    lines = [
        head,
        (
            f"  {report.commands_per_s:,.0f} commands/s combined in {report.seconds:.2f} s"
            f" (setup {report.setup_seconds:.2f} s), CPU {report.cpu_ms_per_command} ms/command"
        ),
        (
            f"  conflicts {report.conflicts} (retried), decided again in the store"
            f" {report.redecisions}, rejected {report.rejected},"
            f" errors {report.errors}" + (f" {report.error_types}" if report.error_types else "")
        ),
    ]
    lines.extend(
        f"  process {p.index}: {p.acknowledged:,} acknowledged, {p.commands_per_s:,.0f}/s,"
        f" latency p50 {p.latency_ms.p50} p99 {p.latency_ms.p99} ms, conflicts"
        f" {p.conflicts}, errors {p.errors}, in transactions {p.in_transaction:.0%},"
        f" read model agrees: {p.projection_ok}"
        for p in report.per_process
    )
    lag = report.cross_process_lag_ms
    if lag is not None:
        lines.append(
            f"  cross-process lag ms (ack in one process to applied in another):"
            f" p50 {lag.p50}  p99 {lag.p99}  max {lag.max} ({report.cross_process_samples:,})"
        )
    agrees = "off" if report.projection_ok is None else str(report.projection_ok)
    if report.projection_failed:
        agrees += f" (failed: processes {report.projection_failed})"
    lines.append(
        f"  read models equal a replay of the store: {agrees};"
        f" store balances equal the acknowledged deposits: {report.store_matches_acks}"
    )
    return "\n".join(lines)
