"""A simulation on several processes: the parent stocks the shop, starts the workers
(`_worker`), kills and restarts them under `chaos`, then has them settle, check and
report, and combines their reports.

Each worker is `sys.executable -m demo._simulate._worker`, with an actor system of its
own on the same store (a SQLite file or PostgreSQL), running its share of the
customers and every process manager (under leases: each runs in one worker at a time;
when its holder is killed, another worker takes it over within about 1.2 x
`lease_ttl`). Whatever happens (an error, a cancellation, Ctrl-C), every worker still
running is killed and reaped before `simulate_processes` returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import anyio
import msgspec

from actors import open_system
from demo._backend import backend_of, redacted
from demo._loadtest._instruments import _AckLog
from demo._simulate._driver import _Counts, _Run
from demo._simulate._options import SimOptions, SimulationError
from demo._simulate._report import Invariant, SimReport
from demo._simulate._wire import (
    _Acted,
    _Check,
    _Failed,
    _FromWorker,
    _Go,
    _Ready,
    _Report,
    _Settle,
    _Settled,
)
from demo._workers import Worker, Workers, workers

__all__ = ["READY_TIMEOUT", "simulate_processes"]

READY_TIMEOUT = 120.0
"""Seconds a worker gets to start and open its actor system."""

_MODULE = "demo._simulate._worker"
_decoder = msgspec.json.Decoder(_FromWorker)


async def simulate_processes(options: SimOptions) -> SimReport:
    """Run a simulation on `options.processes` worker processes and return the report.

    Args:
        options: what to run (`processes` > 1; a `db` of None: a temporary SQLite file
            shared by the workers, removed afterwards).

    Raises:
        SimulationError: a worker failed, or exited without being killed (the message
            names it and why).
        StoreError: the store could not be opened.
    """
    tmpdir: str | None = None
    if options.db is None:
        tmpdir = tempfile.mkdtemp(prefix="esactors-simulate-")
        path, label = os.path.join(tmpdir, "simulate.db"), "temporary"
    else:
        path, label = options.db, redacted(options.db)
    try:
        return await _run(dataclasses.replace(options, db=path), label)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class _Setup:
    before: int  # the store's head when the run began
    counts: _Counts  # the restocks'


async def _setup(options: SimOptions) -> _Setup:
    """Stock the shop (one system in this process, closed before the workers start;
    it also creates the store, so the workers never race to)."""
    assert options.db is not None
    ack_log = _AckLog(options.ack_log) if options.ack_log else None
    try:
        async with open_system(options.db, synchronous="NORMAL", idle_timeout=None) as system:
            before = await system.store.last_position()
            run = _Run(options, system, f"r{before}.", indices=(), ack_log=ack_log)
            await run.restock()
    finally:
        if ack_log is not None:
            ack_log.close()
    return _Setup(before, run.counts)


class _Slot:
    """Worker `index`: the process running its customers now, and how it got there."""

    def __init__(self, index: int, options: SimOptions, before: int, pool: Workers) -> None:
        self.index = index
        self.options = options
        self.before = before
        self.pool = pool
        self.restarts = 0
        self.live = False  # started and ready: chaos may kill it
        self.acted = False
        self._worker: Worker | None = None

    @property
    def worker(self) -> Worker:
        assert self._worker is not None
        return self._worker

    async def start(self) -> None:
        """Start the worker (again, after a kill) and wait until it is ready."""
        args = [
            msgspec.json.encode(self.options).decode(),
            str(self.index),
            str(self.restarts),
            f"r{self.before}.",
            str(self.before),
        ]
        self._worker = await self.pool.start(_MODULE, args)
        with anyio.fail_after(READY_TIMEOUT):
            await self.expect(_Ready, "ready")
        self.live = True

    async def expect(self, kind: type[_FromWorker], waiting_for: str) -> _FromWorker:
        """The worker's next message, which must be a `kind`."""
        line = await self.worker.receive()
        if line is None:
            status = await self.worker.wait()
            raise SimulationError(
                f"worker {self.index} exited (status {status}) before it was {waiting_for};"
                " its errors are on stderr"
            )
        message = _decoder.decode(line)
        if isinstance(message, _Failed):
            raise SimulationError(f"worker {self.index} failed: {message.error}")
        if not isinstance(message, kind):
            raise SimulationError(
                f"worker {self.index} said {type(message).__name__}, not {kind.__name__}"
            )
        return message

    def kill(self) -> None:
        self.live = False
        self.worker.kill()

    async def load(self, deadline: float | None) -> None:
        """Release the worker's customers and wait until they stopped; a worker killed
        meanwhile is reaped and started again, and released with the same deadline."""
        while True:
            line: bytes | None = None
            try:
                await self.worker.send(_Go(deadline))
            except (anyio.BrokenResourceError, OSError):
                pass  # it is gone: killed (then started again) or failed (told below)
            else:
                line = await self.worker.receive()
            if line is not None and not self.worker.killed:
                message = _decoder.decode(line)
                if isinstance(message, _Failed):
                    raise SimulationError(f"worker {self.index} failed: {message.error}")
                if not isinstance(message, _Acted):
                    raise SimulationError(
                        f"worker {self.index} said {type(message).__name__}, not acted"
                    )
                self.acted = True
                return
            if not self.worker.killed:
                status = await self.worker.wait()
                raise SimulationError(
                    f"worker {self.index} exited (status {status}) while its customers"
                    " acted; its errors are on stderr"
                )
            await self.worker.wait()
            self.restarts += 1
            await self.start()


@dataclass
class _Chaos:
    kills: int = 0


async def _chaos(slots: list[_Slot], options: SimOptions, chaos: _Chaos) -> None:
    """Every `chaos_interval`, SIGKILL a random worker whose customers still act,
    unless it is the last one alive (its slot starts a new one)."""
    rng = random.Random(f"esactors-simulate-chaos:{options.seed}")
    while True:
        await anyio.sleep(options.chaos_interval)
        live = [s for s in slots if s.live]
        candidates = [s for s in live if not s.acted]
        if len(live) >= 2 and candidates:
            rng.choice(candidates).kill()
            chaos.kills += 1


async def _run(options: SimOptions, label: str) -> SimReport:
    setup = await _setup(options)
    chaos = _Chaos()
    async with workers() as pool:
        slots = [_Slot(i, options, setup.before, pool) for i in range(options.processes)]
        async with anyio.create_task_group() as tg:  # they start at once
            for slot in slots:
                tg.start_soon(slot.start)
        deadline = None if options.duration is None else time.time() + options.duration
        began = time.perf_counter()
        async with anyio.create_task_group() as outer:
            if options.chaos:
                outer.start_soon(_chaos, slots, options, chaos)
            async with anyio.create_task_group() as tg:
                for slot in slots:
                    tg.start_soon(slot.load, deadline)
            outer.cancel_scope.cancel()
        seconds = time.perf_counter() - began
        settled = await _settle(slots, options)
        settle_seconds = time.perf_counter() - began - seconds
        reports = await _reports(slots, options)
    return _combine(options, label, setup, reports, settled, seconds, settle_seconds, chaos, slots)


async def _settle(slots: list[_Slot], options: SimOptions) -> Invariant:
    """Every worker waits until its process managers reach the store's head."""
    for slot in slots:
        await slot.worker.send(_Settle())
    found: list[Invariant] = []
    with anyio.fail_after(options.settle_timeout + READY_TIMEOUT):
        for slot in slots:
            message = await slot.expect(_Settled, "settled")
            assert isinstance(message, _Settled)
            found.append(message.settled)
    failed = [(s.index, i) for s, i in zip(slots, found, strict=True) if not i.ok]
    if not failed:
        first = found[0]
        return Invariant(
            "settled", True, first.checked * len(slots), 0, f"in every worker: {first.summary}"
        )
    examples = tuple(f"worker {index}: {i.summary}" for index, i in failed)
    examples += tuple(f"worker {index}: {e}" for index, i in failed for e in i.examples)
    return Invariant(
        "settled",
        False,
        sum(i.checked for i in found),
        sum(i.failures for i in found),
        f"{len(failed)} of {len(slots)} workers did not settle",
        examples[:5],
    )


async def _reports(slots: list[_Slot], options: SimOptions) -> list[_Report]:
    """Every worker checks the store and its read models, reports, and exits 0."""
    for slot in slots:
        await slot.worker.send(_Check())
    reports: list[_Report] = []
    with anyio.fail_after(2 * options.settle_timeout + READY_TIMEOUT):
        for slot in slots:
            message = await slot.expect(_Report, "reporting")
            assert isinstance(message, _Report)
            reports.append(message)
        for slot in slots:
            if (status := await slot.worker.wait()) != 0:
                raise SimulationError(
                    f"worker {slot.index} exited with status {status} after its report"
                )
    return reports


def _merged(reports: list[_Report], settled: Invariant) -> tuple[Invariant, ...]:
    """The store's invariants (every worker checked the same store at the same head: the
    first one's, unless another differs) and every worker's read models."""
    first = reports[0]
    store = [i for i in first.invariants if i.name != "read_models_rebuild"]
    for report in reports[1:]:
        mine = [i for i in report.invariants if i.name != "read_models_rebuild"]
        if (report.head, mine) != (first.head, store):
            store.append(
                Invariant(
                    "workers_agree",
                    False,
                    len(reports),
                    1,
                    f"worker {report.figures.index} checked another store than worker"
                    f" {first.figures.index}",
                )
            )
            break
    models = [
        (r.figures.index, i)
        for r in reports
        for i in r.invariants
        if i.name == "read_models_rebuild"
    ]
    problems = tuple(f"worker {w}: {e}" for w, i in models if not i.ok for e in i.examples)
    failures = sum(i.failures for _, i in models)
    checked = sum(i.checked for _, i in models)
    summary = (
        f"{checked} live read models in {len(models)} workers equal a fresh projection"
        " from position 0"
        if not failures
        else f"{failures} read model problem(s) in {len(models)} workers"
    )
    rebuild = Invariant(
        "read_models_rebuild", not failures, checked, failures, summary, problems[:5]
    )
    return (settled, *store, rebuild)


def _combine(
    options: SimOptions,
    label: str,
    setup: _Setup,
    reports: list[_Report],
    settled: Invariant,
    seconds: float,
    settle_seconds: float,
    chaos: _Chaos,
    slots: list[_Slot],
) -> SimReport:
    assert options.db is not None
    by_type: Counter[str] = Counter(setup.counts.by_type)
    rejected: Counter[str] = Counter(setup.counts.rejected_by_type)
    errors: Counter[str] = Counter(setup.counts.error_types)
    for r in reports:
        by_type.update(r.by_type)
        rejected.update(r.rejected_by_type)
        errors.update(r.error_types)
    figures = [r.figures for r in reports]
    answered = sum(f.commands for f in figures)
    digest = hashlib.blake2b(digest_size=16)
    for _, hex_digest in sorted(d for r in reports for d in r.digests):
        digest.update(bytes.fromhex(hex_digest))
    managers: dict[str, dict[str, int]] = {}
    for r in reports:
        for name, stats in r.process_managers.items():
            total = managers.setdefault(name, dict.fromkeys(stats, 0))
            for key, value in stats.items():
                total[key] += value
    invariants = _merged(reports, settled)
    head = reports[0].head
    events_by_type = reports[0].events_by_type
    setup_answered = setup.counts.answered
    return SimReport(
        db=label,
        backend=backend_of(options.db),
        seed=options.seed,
        customers=options.customers,
        steps=sum(r.sent for r in reports),
        duration=options.duration,
        store_before=setup.before,
        store_head=head,
        seconds=round(seconds, 3),
        commands=answered + setup_answered,
        acknowledged=sum(f.acknowledged for f in figures) + setup.counts.acknowledged,
        rejected=sum(f.rejected for f in figures) + setup.counts.rejected,
        errors=sum(f.errors for f in figures) + setup.counts.errors,
        commands_per_s=round(answered / seconds, 1) if seconds else 0.0,
        events_per_s=round(sum(events_by_type.values()) / seconds, 1) if seconds else 0.0,
        commands_by_type=dict(sorted(by_type.items())),
        rejected_by_type=dict(sorted(rejected.items())),
        error_types=dict(sorted(errors.items())),
        commands_digest=digest.hexdigest(),
        events=head - setup.before,
        events_by_type=dict(sorted(events_by_type.items())),
        settle_seconds=round(settle_seconds, 3),
        process_managers=managers,
        invariants=invariants,
        ok=all(i.ok for i in invariants),
        processes=options.processes,
        lease_ttl=options.lease_ttl,
        partitions=options.manager_partitions,
        chaos=options.chaos,
        chaos_interval=options.chaos_interval,
        kills=chaos.kills,
        restarts=sum(s.restarts for s in slots),
        takeovers=sum(f.takeovers for f in figures),
        duplicates=sum(f.duplicates for f in figures),
        workers=tuple(figures),
    )
