"""One simulation run: start the system, let the customers act, settle, check, report."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import anyio

from actors import (
    ActorSystem,
    ProcessManagerHandle,
    ProcessManagerOptions,
    open_system,
)
from demo._backend import backend_of, redacted
from demo._simulate._couriers import Couriers
from demo._simulate._driver import _Run
from demo._simulate._invariants import check_store
from demo._simulate._options import SimOptions
from demo._simulate._progress import _progress, _progress_line
from demo._simulate._report import Invariant, SimReport
from demo._simulate._settling import _settled
from demo.bank import Balances, BankTotals, Statements, TransferProcess
from demo.shop import OrderDetails, OrderFulfilment, OrderHistory, Shipping, ShopAnalytics
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

    Args:
        options: what to run.
        stderr: where the live progress line goes, if it is a terminal (default
            `sys.stderr`).

    Raises:
        StoreError: the store could not be opened.

    Cancellation: the customers stop; the actor system drains and closes the store.
    """
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
        managers = await _manage(system, options.couriers)
        await run.start()
        acted = await _act_and_settle(run, live, managers, before, progress)
        checked = await _check(system, live, managers, before, acted.settled, options)
    return _report(options, run, before, acted, checked)


async def _project(system: ActorSystem) -> list[ProjectionHandle[Any]]:
    """Start the bank's and the shop's read models (checked against a rebuild at the end)."""
    return [
        await system.project(p)
        for p in (
            Balances(),
            Statements(),
            BankTotals(),
            OrderHistory(),
            OrderDetails(),
            ShopAnalytics(),
        )
    ]


async def _manage(system: ActorSystem, couriers: int) -> list[ProcessManagerHandle]:
    """Start the bank's and the shop's process managers, and the couriers."""
    return [
        await system.run_process_manager(TransferProcess()),
        await system.run_process_manager(OrderFulfilment()),
        await system.run_process_manager(Shipping()),
        await system.run_process_manager(
            Couriers(), options=ProcessManagerOptions(concurrency=couriers)
        ),
    ]


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


def _statistics(handle: ProcessManagerHandle) -> dict[str, int]:
    s = handle.statistics()
    return {
        "handled": s.handled,
        "sent": s.sent,
        "rejected": s.rejected,
        "compensations": s.compensations,
        "retries": s.retries,
        "parked": s.parked,
    }


def _report(
    options: SimOptions, run: _Run, before: int, acted: _Acted, checked: _Checked
) -> SimReport:
    """The report of a finished run."""
    counts = run.counts
    seconds = acted.seconds
    events_in_run = acted.sent_head - before
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
    )
