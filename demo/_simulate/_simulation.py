"""One simulation run: start the system, let the customers act, settle, check, report."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import anyio

from actors import ActorSystem, ProcessManagerHandle, open_system
from demo._backend import backend_of, redacted
from demo._simulate._driver import _Run
from demo._simulate._invariants import check_store
from demo._simulate._options import SimOptions
from demo._simulate._processes import simulate_processes
from demo._simulate._progress import _progress, _progress_line
from demo._simulate._report import Invariant, SimReport
from demo._simulate._settling import _settled
from demo._simulate._system import _manage, _project, _statistics
from readmodels import ProjectionHandle

__all__ = ["simulate"]


@dataclass(frozen=True, slots=True)
class _Acted:
    """How the customers' phase went: its time, the head it left, and the settling."""

    seconds: float  # wall time while the customers acted
    sent_head: int  # the store's head when the last customer stopped
    settled: Invariant
    settle_seconds: float


@dataclass(frozen=True, slots=True)
class _Checked:
    """What the store held once settled, checked."""

    head: int
    invariants: tuple[Invariant, ...]
    by_type: Counter[str]
    process_managers: dict[str, dict[str, int]]


async def simulate(options: SimOptions, *, stderr: TextIO | None = None) -> SimReport:
    """Run one simulation, settle it, check the invariants and return the report.

    With `options.processes` > 1 the run is on that many worker processes (see
    `simulate_processes`).

    Args:
        options: what to run.
        stderr: where the live progress line goes, if it is a terminal (default
            `sys.stderr`; one process only).

    Raises:
        StoreError: the store could not be opened.
        SimulationError: (several processes) a worker failed or exited unasked.

    Cancellation: the customers stop; the actor system drains and closes the store
    (with several processes: every worker is killed and reaped).
    """
    if options.processes > 1:
        return await simulate_processes(options)
    assert options.db is not None  # SimOptions refuses no db for one process
    err = sys.stderr if stderr is None else stderr
    progress = err if err.isatty() else None
    async with open_system(
        options.db,
        synchronous="NORMAL",  # a demo: survives a crash of the process, not of the machine
        idle_timeout=None,
        max_live_actors=max(10_000, 4 * options.customers),
    ) as system:
        before = await system.store.last_position()
        # The routers register the domain's event types, which the read models need to
        # decode what earlier runs left in the file: make them first.
        run = _Run(options, system, f"r{before}.")
        live = await _project(system)
        managers = await _manage(system, options)
        await run.start()
        acted = await _act_and_settle(run, live, managers, before, progress)
        checked = await _check(system, live, managers, before, acted.settled, options)
    return _report(options, run, before, acted, checked)


async def _act_and_settle(
    run: _Run,
    live: Sequence[ProjectionHandle[Any]],
    managers: Sequence[ProcessManagerHandle],
    before: int,
    progress: TextIO | None,
) -> _Acted:
    """Every customer acts until done, then the run settles; the progress line (on
    `progress`, if given) runs meanwhile and ends with the final figures."""
    system = run.system
    async with anyio.create_task_group() as outer:
        if progress is not None:
            outer.start_soon(_progress, progress, run, live, managers, before)
        await run.act_all()
        seconds = time.perf_counter() - run.started
        sent_head = await system.store.last_position()
        settle_began = time.perf_counter()
        settled = await _settled(system, managers, run.options.settle_timeout)
        settle_seconds = time.perf_counter() - settle_began
        outer.cancel_scope.cancel()
    if progress is not None:  # the final figures, and the line ends
        progress.write(_progress_line(run, live, managers, before) + "\n")
        progress.flush()
    return _Acted(seconds, sent_head, settled, settle_seconds)


async def _check(
    system: ActorSystem,
    live: Sequence[ProjectionHandle[Any]],
    managers: Sequence[ProcessManagerHandle],
    before: int,
    settled: Invariant,
    options: SimOptions,
) -> _Checked:
    """Check the invariants over the whole store, and take the process managers' figures."""
    head = await system.store.last_position()
    checks, by_type = await check_store(
        system, live, head=head, since=before, timeout=options.settle_timeout
    )
    pm_stats = {h.name: _statistics(h) for h in managers}
    return _Checked(head, (settled, *checks), by_type, pm_stats)


def _report(
    options: SimOptions, run: _Run, before: int, acted: _Acted, checked: _Checked
) -> SimReport:
    """The report of a finished run."""
    counts = run.counts
    seconds = acted.seconds
    events_in_run = acted.sent_head - before
    assert options.db is not None
    return SimReport(
        db=redacted(options.db),
        backend=backend_of(options.db),
        seed=options.seed,
        customers=options.customers,
        steps=sum(c.sent for c in run.customers),
        duration=options.duration,
        store_before=before,
        store_head=checked.head,
        seconds=round(seconds, 3),
        commands=counts.answered,
        acknowledged=counts.acknowledged,
        rejected=counts.rejected,
        errors=counts.errors,
        commands_per_s=round((counts.answered - run.setup) / seconds, 1) if seconds else 0.0,
        events_per_s=round(events_in_run / seconds, 1) if seconds else 0.0,
        commands_by_type=dict(sorted(counts.by_type.items())),
        rejected_by_type=dict(sorted(counts.rejected_by_type.items())),
        error_types=dict(sorted(counts.error_types.items())),
        commands_digest=run.digest(),
        events=checked.head - before,
        events_by_type=dict(sorted(checked.by_type.items())),
        settle_seconds=round(acted.settle_seconds, 3),
        process_managers=checked.process_managers,
        invariants=checked.invariants,
        ok=all(i.ok for i in checked.invariants),
        lease_ttl=options.lease_ttl,
        partitions=options.manager_partitions,
        duplicates=counts.duplicates,
    )
