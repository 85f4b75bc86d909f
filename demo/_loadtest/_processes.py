"""A load test on several processes: the parent opens the accounts, starts the
workers (`_child`), releases them at once, gathers their figures and checks the store.

Each worker is `sys.executable -m demo._loadtest._child`, with an actor system of its
own on the same store (a SQLite file or PostgreSQL), sending deposits to the same
accounts: appends of two processes to one stream conflict, and the runtime reloads
and retries them (`conflicts`). Whatever happens (an error, a cancellation, Ctrl-C),
every worker still running is killed and reaped before `run_processes` returns.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE

import anyio
import msgspec
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import demo
from actors import open_system
from demo._backend import backend_of, redacted
from demo._loadtest._driver import _Run, _workload
from demo._loadtest._instruments import _AckLog, _fold_balances
from demo._loadtest._options import LoadOptions, LoadTestError
from demo._loadtest._report import Percentiles, ProcessesReport, _ChildReport
from demo._loadtest._run import SETTLE_TIMEOUT
from demo.bank import Account

__all__ = ["READY_TIMEOUT", "run_processes"]

READY_TIMEOUT = 120.0
"""Seconds the workers get to start and open their actor systems."""

_MAX_LINE = 1 << 30
"""The longest line a worker may send (its report carries its stamps)."""


_ROOT = str(Path(demo.__file__).resolve().parents[1])
"""The directory holding the `demo` package: on the workers' `PYTHONPATH`."""


class _Message(msgspec.Struct, frozen=True):
    kind: str
    error: str = ""


async def run_processes(options: LoadOptions, *, uvloop: bool = False) -> ProcessesReport:
    """Run a load test on `options.processes` worker processes and return the figures.

    Args:
        options: what to run (`processes` > 1; a `db` of None: a temporary SQLite file
            shared by the workers, removed afterwards).
        uvloop: run the workers on uvloop.

    Raises:
        LoadTestError: a worker failed or exited early (the message names it and why).
        StoreError: the store could not be opened.
    """
    tmpdir: str | None = None
    if options.db is None:
        tmpdir = tempfile.mkdtemp(prefix="esactors-load-")
        path, label = os.path.join(tmpdir, "load.db"), "temporary"
    else:
        path, label = options.db, redacted(options.db)
    try:
        return await _run(dataclasses.replace(options, db=path), label, uvloop)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


async def _run(options: LoadOptions, label: str, uvloop: bool) -> ProcessesReport:
    began = time.perf_counter()
    accounts = await _open_accounts(options)
    setup = time.perf_counter() - began
    loading = None if options.duration is None else options.duration + SETTLE_TIMEOUT
    cpus = worker_cpus(options)
    async with _workers(options, cpus, uvloop) as workers:
        with anyio.fail_after(READY_TIMEOUT):
            await workers.expect("ready")
        await workers.tell("go")
        with anyio.fail_after(loading):
            await workers.expect("loaded")
        await workers.tell("check")
        with anyio.fail_after(SETTLE_TIMEOUT + READY_TIMEOUT):
            reports = await workers.reports()
    deposits: dict[str, int] = {}
    for report in reports:
        for account, amount in report.deposits.items():
            deposits[account] = deposits.get(account, 0) + amount
    store_ok = await _store_matches(options, accounts, deposits)
    loop = "uvloop" if uvloop else "asyncio"
    return _combine(options, label, setup, reports, store_ok, loop, cpus)


async def _open_accounts(options: LoadOptions) -> list[str]:
    """Open every account (one system in this process, closed before the workers start)."""
    assert options.db is not None
    ack_log = _AckLog(options.ack_log) if options.ack_log else None
    try:
        async with open_system(
            options.db,
            synchronous=options.synchronous,
            writer=options.writer,
            max_live_actors=max(options.aggregates, 1_000),
            idle_timeout=None,
        ) as system:
            workload = _workload(options)
            await workload.setup(system, _Run(options, workload, ack_log, None).send_all)
    finally:
        if ack_log is not None:
            ack_log.close()
    return workload.accounts


async def _store_matches(
    options: LoadOptions, accounts: list[str], deposits: dict[str, int]
) -> bool:
    """Whether every account's balance in the store is the sum of its acknowledged
    deposits, and no other account has one."""
    assert options.db is not None
    async with open_system(options.db, synchronous=options.synchronous) as system:
        system.aggregates(Account)
        folded = await _fold_balances(system.store, await system.store.last_position())
    expected = {account: deposits.get(account, 0) for account in accounts}
    return folded.balances == expected


class _Workers:
    """The running workers: lines to all of them, lines from each."""

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes
        self.lines = [BufferedByteReceiveStream(p.stdout) for p in processes if p.stdout]

    async def tell(self, word: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            await process.stdin.send(word.encode() + b"\n")

    async def _line(self, index: int, waiting_for: str) -> bytes:
        try:
            return await self.lines[index].receive_until(b"\n", _MAX_LINE)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            process = self.processes[index]
            with anyio.move_on_after(5):
                await process.wait()
            raise LoadTestError(
                f"worker process {index} exited (status {process.returncode}) before it"
                f" was {waiting_for}; its errors are on stderr"
            ) from None

    async def expect(self, kind: str) -> None:
        """Wait until every worker said `kind` (one after the other: each one's line
        waits in its pipe)."""
        for index in range(len(self.processes)):
            message = msgspec.json.decode(await self._line(index, kind), type=_Message)
            if message.kind != kind:
                raise _unexpected(index, message, kind)

    async def reports(self) -> list[_ChildReport]:
        """Every worker's report; then wait for each to exit."""
        found: list[_ChildReport] = []
        for index in range(len(self.processes)):
            line = await self._line(index, "reporting")
            message = msgspec.json.decode(line, type=_Message)
            if message.kind != "report":
                raise _unexpected(index, message, "report")
            found.append(msgspec.json.decode(line, type=_ChildReport))
        for index, process in enumerate(self.processes):
            if await process.wait() != 0:
                raise LoadTestError(
                    f"worker process {index} exited with status {process.returncode}"
                    " after its report"
                )
        return found


def _unexpected(index: int, message: _Message, kind: str) -> LoadTestError:
    if message.kind == "error":
        return LoadTestError(f"worker process {index} failed: {message.error}")
    return LoadTestError(f"worker process {index} said {message.kind!r}, not {kind!r}")


@asynccontextmanager
async def _workers(
    options: LoadOptions, cpus: list[int] | None, uvloop: bool
) -> AsyncIterator[_Workers]:
    """Start the workers (each pinned to its CPU in `cpus`, if given); on the way out
    kill every one still running, and reap all."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    processes: list[Process] = []
    try:
        for index in range(options.processes):
            cpu = None if cpus is None else cpus[index]
            command = [sys.executable, "-m", "demo._loadtest._child"]
            command += [_child_options(options, index, cpu), str(index)]
            if uvloop:
                command.append("--uvloop")
            processes.append(
                await anyio.open_process(command, stdin=PIPE, stdout=PIPE, stderr=None, env=env)
            )
        yield _Workers(processes)
    finally:
        with anyio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.kill()
            for process in processes:
                await process.aclose()


def worker_cpus(options: LoadOptions) -> list[int] | None:
    """The CPU each worker pins itself to (`pin`: round robin over the CPUs this
    process may use), or None to leave them to the OS."""
    if not options.pin:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[index % len(cpus)] for index in range(options.processes)]


def _child_options(options: LoadOptions, index: int, cpu: int | None) -> str:
    """Worker `index`'s options as JSON: its share of the commands, its own seed,
    its CPU."""
    share, extra = divmod(options.commands, options.processes)
    child = dataclasses.replace(
        options,
        commands=share + (1 if index < extra else 0),
        seed=options.seed + index,
        zipf_seed=options.seed if options.zipf_seed is None else options.zipf_seed,
        progress="never",
        processes=1,
        account_share=(index, options.processes) if options.own_accounts else None,
        pin=False,
        cpu=cpu,
    )
    return msgspec.json.encode(child).decode()


def _combine(
    options: LoadOptions,
    label: str,
    setup: float,
    reports: list[_ChildReport],
    store_ok: bool,
    loop: str,
    cpus: list[int] | None,
) -> ProcessesReport:
    figures = [r.figures for r in reports]
    seconds = max(r.ended for r in reports) - min(r.started for r in reports)
    acknowledged = sum(f.acknowledged for f in figures)
    cpu = sum(f.cpu_seconds for f in figures)
    error_types: dict[str, int] = {}
    for f in figures:
        for name, count in f.error_types.items():
            error_types[name] = error_types.get(name, 0) + count
    lags = _cross_process_lags(reports) if options.projection else []
    checks = [f.projection_ok for f in figures]
    return ProcessesReport(
        processes=options.processes,
        mix=options.mix,
        concurrency=options.concurrency,
        aggregates=options.aggregates,
        synchronous=options.synchronous,
        writer=options.writer,
        db=label,
        backend=backend_of(options.db),
        commands=sum(f.commands for f in figures),
        acknowledged=acknowledged,
        rejected=sum(f.rejected for f in figures),
        errors=sum(f.errors for f in figures),
        error_types=error_types,
        conflicts=sum(f.conflicts for f in figures),
        redecisions=sum(f.redecisions for f in figures),
        seconds=round(seconds, 3),
        commands_per_s=round(acknowledged / seconds, 1) if seconds > 0 else 0.0,
        cpu_seconds=round(cpu, 3),
        cpu_ms_per_command=round(cpu * 1000.0 / acknowledged, 4) if acknowledged else 0.0,
        cross_process_lag_ms=Percentiles.of(lags) if options.projection else None,
        cross_process_samples=len(lags),
        projection_ok=None if None in checks else all(checks),
        projection_failed=[f.index for f in figures if f.projection_ok is False],
        store_matches_acks=store_ok,
        setup_seconds=round(setup, 3),
        per_process=figures,
        seed=options.seed,
        distribution=options.distribution,
        zipf_exponent=options.zipf_exponent if options.distribution == "zipf" else None,
        loop=loop,
        own_accounts=options.own_accounts,
        cpus=cpus,
    )


def _cross_process_lags(reports: list[_ChildReport]) -> list[float]:
    """Milliseconds from each acknowledgement in one process to the moment each other
    process's read model applied that event (wall clocks of one host)."""
    applied: list[dict[int, float]] = [dict(r.applied) for r in reports]
    lags: list[float] = []
    for b, report in enumerate(reports):
        for position, acked in report.acks:
            for a, seen in enumerate(applied):
                at = seen.get(position) if a != b else None
                if at is not None:
                    lags.append((at - acked) * 1000.0)
    return lags
