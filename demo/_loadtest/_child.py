"""One worker process of a several-process load test.

    python -m demo._loadtest._child OPTIONS_JSON INDEX [--uvloop]

It opens an actor system of its own on the shared store (the parent opened the
accounts), then talks to the parent over its standard streams, one line each way:

- it writes `{"kind": "ready"}` once its system and read model are up, and waits for
  `go` on its standard input (every process is released at once);
- it sends its share of the load and writes `{"kind": "loaded"}`, then waits for
  `check` (sent once every process has finished: nothing is written any more);
- it waits for its read model to reach the store's head, compares it with a fold of
  the store, and writes its report (`_ChildReport`) and exits.

On any failure it writes `{"kind": "error", "error": "..."}` and exits with status 1.
When its standard input ends (the parent went away) it stops at once: a worker never
outlives its parent's pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import anyio
import msgspec

from actors import Command, CommandResult, open_system
from demo._loadtest._driver import _Run, _workload
from demo._loadtest._instruments import (
    _AckLog,
    _fold_balances,
    _LagSampler,
    _peak_rss_mb,
    _StampedBalances,
    _Stamps,
)
from demo._loadtest._options import LoadOptions, LoadTestError
from demo._loadtest._report import Percentiles, ProcessFigures, _ChildReport
from demo._loadtest._run import SETTLE_TIMEOUT
from demo._workloads import Step
from demo.bank import BalancesView, Deposit
from readmodels import ProjectionHandle
from store import StoreStatistics

__all__: list[str] = []


class _Control:
    """The parent's lines on standard input; its end cancels the worker."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[str](8)

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            await self.send.send(line.decode().strip())
        raise LoadTestError("the parent process closed its pipe: stopping")

    async def expect(self, word: str) -> None:
        line = await self.receive.receive()
        if line != word:
            raise LoadTestError(f"expected {word!r} from the parent process, got {line!r}")


def _tell(message: dict[str, Any] | _ChildReport) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(message) + b"\n")
    sys.stdout.buffer.flush()


async def _nothing(steps: list[Step]) -> None:
    """The parent opened the accounts: a worker's setup sends nothing."""


async def _work(options: LoadOptions, index: int, control: _Control) -> _ChildReport:
    sampler, stamps = _LagSampler(), _Stamps()
    deposits: dict[str, int] = {}
    ack_log = _AckLog(options.ack_log) if options.ack_log else None

    def on_ack(aggregate_id: str, command: Command, result: CommandResult[Any]) -> None:
        stamps.ack(result.position)
        if isinstance(command, Deposit):
            deposits[aggregate_id] = deposits.get(aggregate_id, 0) + command.amount

    assert options.db is not None
    try:
        async with open_system(
            options.db,
            synchronous=options.synchronous,
            writer=options.writer,
            max_live_actors=max(options.aggregates, 1_000),
            idle_timeout=None,
        ) as system:
            handle: ProjectionHandle[BalancesView] | None = None
            if options.projection:
                sampler.watch(system.store, system.bus)
                handle = await system.project(_StampedBalances(sampler, stamps))
            workload = _workload(options)
            await workload.setup(system, _nothing)
            run = _Run(options, workload, ack_log, None)
            run.on_ack = on_ack
            _tell({"kind": "ready"})
            await control.expect("go")
            before, counted = system.store.statistics(), system.statistics()
            cpu = time.process_time()
            sampler.measuring = stamps.acking = stamps.applying = True
            started = time.time()
            seconds = await run.load()
            ended = time.time()
            cpu = time.process_time() - cpu
            stamps.acking = False
            after, ended_with = system.store.statistics(), system.statistics()
            conflicts = ended_with.conflicts - counted.conflicts
            redecisions = ended_with.redecisions - counted.redecisions
            _tell({"kind": "loaded"})
            await control.expect("check")
            projection_ok: bool | None = None
            if handle is not None:
                head = await system.store.last_position()
                await handle.wait_for(head, timeout=SETTLE_TIMEOUT)
                sampler.measuring = stamps.applying = False
                folded = await _fold_balances(system.store, head)
                projection_ok = folded == handle.view
                await handle.stop()
    finally:
        if ack_log is not None:
            ack_log.close()
    counters = run.counters
    answered = counters.acknowledged + counters.rejected + counters.errors
    batches = after.batches - before.batches
    figures = ProcessFigures(
        index=index,
        commands=answered,
        acknowledged=counters.acknowledged,
        rejected=counters.rejected,
        errors=counters.errors,
        error_types=dict(counters.error_types),
        conflicts=conflicts,
        redecisions=redecisions,
        seconds=round(seconds, 3),
        commands_per_s=round(answered / seconds, 1) if seconds else 0.0,
        latency_ms=counters.latency_percentiles(),
        events_per_commit=round((after.events - before.events) / batches, 2) if batches else 0.0,
        projection_lag_ms_p99=Percentiles.of(sampler.samples).p99 if handle else None,
        projection_ok=projection_ok,
        cpu_seconds=round(cpu, 3),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        cpus=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        in_transaction=round(_transaction_seconds(before, after) / seconds, 4) if seconds else 0.0,
    )
    return _ChildReport(figures, started, ended, stamps.acks, stamps.applied, deposits)


def _transaction_seconds(before: StoreStatistics, after: StoreStatistics) -> float:
    """Seconds the store's writer spent in write transactions between two snapshots."""
    spent = after.commit_ms_mean * after.batches - before.commit_ms_mean * before.batches
    return max(spent, 0.0) / 1000


async def _main(options: LoadOptions, index: int) -> None:
    control = _Control()
    async with anyio.create_task_group() as tg:
        tg.start_soon(control.read)
        report = await _work(options, index, control)
        tg.cancel_scope.cancel()
    _tell(report)


def main(argv: list[str]) -> int:
    """Run one worker; 0 when it reported, 1 when it failed (the error sent as a line)."""
    try:
        options = msgspec.json.decode(argv[0], type=LoadOptions)
        index = int(argv[1])
        if options.cpu is not None:  # before any thread starts: they all inherit it
            os.sched_setaffinity(0, {options.cpu})
        backend_options: dict[str, Any] = {"use_uvloop": True} if "--uvloop" in argv else {}
        anyio.run(_main, options, index, backend="asyncio", backend_options=backend_options)
    except KeyboardInterrupt:
        return 1
    except BaseException as error:  # noqa: BLE001 - reported to the parent, then exit 1
        with contextlib.suppress(OSError):  # the parent may be gone
            _tell({"kind": "error", "error": _describe(error)})
        return 1
    return 0


def _describe(error: BaseException) -> str:
    """`Type: message` of an error, of the first one in a group."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
