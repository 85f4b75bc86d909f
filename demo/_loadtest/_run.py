"""One load test run: open the store, set up, send the load, settle, measure, report."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TextIO

import anyio

from actors import ActorSystem, open_system
from demo._backend import backend_of, redacted
from demo._loadtest._driver import _Counters, _Run, _workload
from demo._loadtest._instruments import _AckLog, _LagSampler, _MeasuredBalances, _peak_rss_mb
from demo._loadtest._options import LoadOptions
from demo._loadtest._report import LoadReport, Percentiles
from demo._loadtest._timeline import TimelinePoint
from demo._loop import loop_name
from demo.bank import Account, BalancesView
from readmodels import ProjectionHandle
from store import StoreStatistics

__all__ = ["SETTLE_TIMEOUT", "run_load"]

SETTLE_TIMEOUT = 300.0
"""Seconds the process managers (and the read model) get to finish after the load."""


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


@dataclass(frozen=True, slots=True)
class _Measured:
    """The figures of a run besides the driver's counts."""

    seconds: float  # the measured phase
    cpu: float  # the process's CPU time over it
    setup: float
    settle: float
    before: StoreStatistics  # when the measured phase began
    after: StoreStatistics  # when it ended
    outcome: dict[str, int | float | bool]
    live_actors: int
    lags: list[float]
    projection_ok: bool | None
    timeline: list[TimelinePoint]


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
            sampler.watch(system.store, system.bus)
            handle = await system.project(_MeasuredBalances(sampler))
        workload = _workload(options)
        run = _Run(options, workload, ack_log, progress)
        began = time.perf_counter()
        await workload.setup(system, run.send_all)
        if options.cold:
            await _passivate_all(system)
        setup = time.perf_counter() - began
        before = system.store.statistics()
        sampler.measuring = True
        cpu = time.process_time()
        seconds = await run.load()
        cpu = time.process_time() - cpu
        after = system.store.statistics()
        live_actors = system.statistics().live_actors
        began = time.perf_counter()
        with anyio.fail_after(SETTLE_TIMEOUT):
            outcome = await workload.settle(system)
        settle = time.perf_counter() - began
        projection_ok = await _projection_ok(system, handle, sampler, workload.accounts)
    timeline = run.timeline.points(seconds)
    measured = _Measured(
        seconds,
        cpu,
        setup,
        settle,
        before,
        after,
        outcome,
        live_actors,
        sampler.samples,
        projection_ok,
        timeline,
    )
    return _report(options, label, run.counters, measured)


async def _passivate_all(system: ActorSystem) -> None:
    """Passivate every actor (the setup left them idle) and wait until they ended, so
    the measured phase loads each account again on its first command."""
    system.passivate_idle(0.0)
    # No event tells when the passivated actors ended: each does within a few turns
    # of the loop (its mailbox is empty), so look every 10 ms.
    while system.statistics().stopping_actors:  # noqa: ASYNC110
        await anyio.sleep(0.01)


async def _projection_ok(
    system: ActorSystem,
    handle: ProjectionHandle[BalancesView] | None,
    sampler: _LagSampler,
    accounts: list[str],
) -> bool | None:
    """Once the read model (if any) is at the store's head: stop sampling its lag, and
    whether it agrees with the actors (None without one); then stop it."""
    if handle is None:
        return None
    last = await system.store.last_position()
    await handle.wait_for(last, timeout=SETTLE_TIMEOUT)
    sampler.measuring = False
    projection_ok = await _balances_agree(system, handle.view, accounts)
    await handle.stop()
    return projection_ok


def _report(
    options: LoadOptions, label: str, counters: _Counters, measured: _Measured
) -> LoadReport:
    """The report of a finished run."""
    before, after, seconds = measured.before, measured.after, measured.seconds
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
        latency_ms=counters.latency_percentiles(),
        rejected=counters.rejected,
        errors=counters.errors,
        error_types=dict(counters.error_types),
        events_per_commit=round((after.events - before.events) / batches, 2) if batches else 0.0,
        appends_per_commit=round((after.appends - before.appends) / batches, 2) if batches else 0.0,
        projection_lag_ms_p99=(Percentiles.of(measured.lags).p99 if options.projection else None),
        projection_ok=measured.projection_ok,
        setup_seconds=round(measured.setup, 3),
        settle_seconds=round(measured.settle, 3),
        outcome=measured.outcome,
        peak_rss_mb=round(_peak_rss_mb(), 1),
        seed=options.seed,
        distribution=options.distribution,
        zipf_exponent=options.zipf_exponent if options.distribution == "zipf" else None,
        loop=loop_name(),
        cpu_ms_per_command=round(measured.cpu * 1000.0 / answered, 4) if answered else 0.0,
        cold=options.cold,
        live_actors=measured.live_actors,
        timeline=measured.timeline,
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
