"""The report: a run's figures, rendered as lines or as a row of the `--sweep` table."""

from __future__ import annotations

import math

import msgspec

__all__ = ["SWEEP_HEADER", "LoadReport", "Percentiles", "render", "sweep_row"]


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
