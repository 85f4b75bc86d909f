"""The report: a run's figures and invariants, and their rendering as text."""

from __future__ import annotations

import msgspec

__all__ = ["Invariant", "SimReport", "WorkerFigures", "render"]


class Invariant(msgspec.Struct, frozen=True):
    """The outcome of one invariant check.

    Attributes:
        name: which invariant.
        ok: whether it holds.
        checked: how many things it looked at (accounts, orders, read models...).
        failures: how many of them break it.
        summary: the figures behind the verdict, in one line.
        examples: up to 5 offenders, each named.
    """

    name: str
    ok: bool
    checked: int
    failures: int
    summary: str
    examples: tuple[str, ...] = ()


class WorkerFigures(msgspec.Struct, frozen=True):
    """One surviving worker's figures, in a several-process run.

    Attributes:
        index: which worker (its customers are those whose number is `index` modulo
            the number of processes).
        restarts: times this worker was killed and started again.
        pid: the last worker's process id.
        customers: customers it ran.
        commands: commands its customers sent (answered), the last worker's only;
            after a restart, from the first command of each customer again.
        acknowledged, duplicates, rejected, errors: how they were answered
            (`duplicates`: acknowledged with the first result of a command a killed
            worker had already committed, so stored once).
        seconds: wall time while its customers acted.
        held: the process managers it held leases of when the parent asked the
            workers to check (all at once), each with the partitions it held, as
            `name[0,2]`.
        takeovers: leases it took (its first ones included); lost: leases it lost.
        read_models_ok: its live read models equal a rebuild from position 0.
    """

    index: int
    restarts: int
    pid: int
    customers: int
    commands: int
    acknowledged: int
    duplicates: int
    rejected: int
    errors: int
    seconds: float
    held: tuple[str, ...]
    takeovers: int
    lost: int
    read_models_ok: bool


class SimReport(msgspec.Struct, frozen=True):
    """The figures of one simulation run (`--json` prints it as one object).

    Attributes:
        db, seed, customers, steps, duration: what ran (db: a PostgreSQL URL without
            its password; steps: commands the customers sent; duration: the one asked
            for, or None).
        backend: the store that ran: "sqlite" or "postgresql".
        store_before: the store's head when the run began (earlier runs' events).
        store_head: the store's head after settling.
        seconds: wall time while the customers acted.
        commands: commands sent by the simulation (setup and customers), answered.
        acknowledged, rejected, errors: how they were answered (`errors`: neither
            committed nor refused by the domain: timeouts, store errors...).
        commands_per_s, events_per_s: throughput while the customers acted (their
            commands; every event appended meanwhile, process managers' included).
        commands_by_type, rejected_by_type, error_types: counts per command type or
            error type.
        commands_digest: BLAKE2b of every customer's command sequence (ids relative
            to the run): equal for equal seeds and `--steps`.
        events: events this run appended (process managers' included).
        events_by_type: those per event tag.
        settle_seconds: time from the customers' last command to a settled store.
        process_managers: per process manager: handled, sent, rejected,
            compensations, retries, parked.
        invariants: each invariant's outcome, checked over the whole store (with
            several processes, `read_models_rebuild` over every surviving worker's).
        ok: every invariant holds.
        processes: worker processes (1: the run was in this process).
        lease_ttl: the process managers' lease, in seconds.
        partitions: the partitions of each of the bank's and the shop's process
            managers.
        chaos: whether workers were killed (`chaos_interval`: seconds between kills).
        kills, restarts: workers killed with SIGKILL, and started in their place.
        takeovers: process manager leases the surviving workers took (their first
            ones included; a takeover by a worker later killed is not counted).
        duplicates: customer commands resent by a restarted worker and answered with
            their first result.
        workers: each surviving worker's figures.
    """

    db: str
    backend: str
    seed: int
    customers: int
    steps: int
    duration: float | None
    store_before: int
    store_head: int
    seconds: float
    commands: int
    acknowledged: int
    rejected: int
    errors: int
    commands_per_s: float
    events_per_s: float
    commands_by_type: dict[str, int]
    rejected_by_type: dict[str, int]
    error_types: dict[str, int]
    commands_digest: str
    events: int
    events_by_type: dict[str, int]
    settle_seconds: float
    process_managers: dict[str, dict[str, int]]
    invariants: tuple[Invariant, ...]
    ok: bool
    processes: int = 1
    lease_ttl: float = 2.0
    partitions: int = 1
    chaos: bool = False
    chaos_interval: float = 3.0
    kills: int = 0
    restarts: int = 0
    takeovers: int = 0
    duplicates: int = 0
    workers: tuple[WorkerFigures, ...] = ()


def render(report: SimReport) -> str:
    """The report as human-readable lines."""
    lines = [*_summary(report), *_processes(report), "  commands sent (refused):"]
    lines += [
        f"    {name:<16} {n:>7,}"
        + (f"  ({report.rejected_by_type[name]:,})" if name in report.rejected_by_type else "")
        for name, n in report.commands_by_type.items()
    ]
    lines.append(f"  events appended: {report.events:,}")
    lines += [f"    {tag:<26} {n:>7,}" for tag, n in report.events_by_type.items()]
    lines.append("  process managers: handled / sent / refused / compensations / parked")
    lines += [
        f"    {name:<24} {s['handled']:>7,} {s['sent']:>7,} {s['rejected']:>7,}"
        f" {s['compensations']:>7,} {s['parked']:>7,}"
        for name, s in report.process_managers.items()
    ]
    lines += _invariants(report)
    lines.append(f"  commands digest {report.commands_digest}")
    return "\n".join(lines)


def _summary(report: SimReport) -> list[str]:
    """The first three lines: what ran, how fast, how the commands were answered."""
    amount = f"{report.steps:,} steps" if report.duration is None else f"{report.duration:g} s"
    earlier = (
        f", after {report.store_before:,} events of earlier runs" if report.store_before else ""
    )
    head = (
        f"simulate: {report.customers:,} customers, {amount}, seed {report.seed},"
        f" db {report.db}{earlier}"
    )
    rate = (
        f"  {report.steps:,} customer commands in {report.seconds:.2f} s:"
        f" {report.commands_per_s:,.0f} commands/s, {report.events_per_s:,.0f} events/s;"
        f" settled in {report.settle_seconds:.2f} s"
    )
    answers = (
        f"  {report.commands:,} commands with the restocks: acknowledged {report.acknowledged:,},"
        f" refused by the domain {report.rejected:,},"
        f" errors {report.errors:,}"
    )
    if report.error_types:
        answers += f" {report.error_types}"
    return [head, rate, answers]


def _processes(report: SimReport) -> list[str]:
    """With several processes: the kills, restarts, takeovers and each worker's figures."""
    if report.processes == 1:
        return []
    chaos = (
        f"chaos every {report.chaos_interval:g} s: {report.kills:,} killed (SIGKILL),"
        f" {report.restarts:,} restarted"
        if report.chaos
        else "no chaos"
    )
    head = (
        f"  {report.processes} worker processes, process managers in"
        f" {report.partitions} partitions under leases of {report.lease_ttl:g} s; {chaos}; {report.takeovers:,} lease takeovers;"
        f" {report.duplicates:,} commands resent after a restart"
    )
    columns = (
        "  workers: restarts / commands / acknowledged / duplicates / refused / errors /"
        " takeovers / holds"
    )
    lines = [head, columns]
    lines += [
        f"    worker {w.index:<3} {w.restarts:>3} {w.commands:>7,} {w.acknowledged:>7,}"
        f" {w.duplicates:>6,} {w.rejected:>6,} {w.errors:>5,} {w.takeovers:>4}"
        f"  {', '.join(w.held) or '-'}" + ("" if w.read_models_ok else "  READ MODELS DIFFER")
        for w in report.workers
    ]
    return lines


def _invariants(report: SimReport) -> list[str]:
    """Each invariant's verdict (with examples of what breaks it), then the overall one."""
    lines = [f"  invariants, over the whole store ({report.store_head:,} events):"]
    for inv in report.invariants:
        mark = "ok  " if inv.ok else "FAIL"
        lines.append(f"    {mark} {inv.name}: {inv.summary}")
        if not inv.ok:
            lines.append(f"         {inv.failures:,} of {inv.checked:,} checked fail, e.g.:")
            lines += [f"         - {example}" for example in inv.examples]
    failed = [i.name for i in report.invariants if not i.ok]
    lines.append(
        "  every invariant holds" if not failed else f"  INVARIANTS BROKEN: {', '.join(failed)}"
    )
    return lines
