"""One worker process of a several-process simulation.

    python -m demo._simulate._worker OPTIONS_JSON INDEX PREFIX BEFORE

It opens an actor system of its own on the shared store (the parent stocked the
shop), starts the read models and every process manager (under leases: each runs in
one worker at a time), and runs the customers whose number is INDEX modulo the number
of processes, with the run's id PREFIX (BEFORE: the store's head when the run began).
It talks to its parent over its standard streams, one JSON line each way (`_wire`):
`ready`, then on `go` its customers act and it says `acted`; on `settle` it waits for
its process managers to reach the store's head and says `settled`; on `check` it
checks the store and its read models and sends its `report`, then exits 0.

A worker started in place of a killed one runs the same customers from their first
command again: every customer command carries an id of its own, so what the killed
worker had committed is answered with its first result and stored once.

On any failure it writes `{"kind": "error", "error": "..."}` and exits with status 1;
when its standard input ends (the parent went away) it stops at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import anyio
import msgspec

from actors import open_system
from demo._loadtest._instruments import _AckLog
from demo._simulate._driver import _Run
from demo._simulate._invariants import check_store
from demo._simulate._options import SimOptions, SimulationError
from demo._simulate._report import WorkerFigures
from demo._simulate._settling import _settled
from demo._simulate._system import _manage, _project, _statistics
from demo._simulate._wire import (
    _Acted,
    _Check,
    _Failed,
    _Go,
    _Ready,
    _Report,
    _Settle,
    _Settled,
    _ToWorker,
)
from demo._workers import ParentPipe, tell

__all__: list[str] = []

_decoder = msgspec.json.Decoder(_ToWorker)


async def _expect(pipe: ParentPipe, kind: type[_ToWorker]) -> _ToWorker:
    message = _decoder.decode(await pipe.receive())
    if not isinstance(message, kind):
        raise SimulationError(f"expected {kind.__name__} from the parent, got {message!r}")
    return message


async def _work(
    options: SimOptions, index: int, restarts: int, prefix: str, before: int, pipe: ParentPipe
) -> _Report:
    assert options.db is not None
    ack_log = _AckLog(options.ack_log) if options.ack_log else None
    try:
        async with open_system(
            options.db,
            synchronous="NORMAL",  # a demo: survives a crash of the process, not of the machine
            idle_timeout=None,
            max_live_actors=max(10_000, 4 * options.customers),
        ) as system:
            indices = range(index, options.customers, options.processes)
            run = _Run(options, system, prefix, indices, ack_log)
            live = await _project(system)
            managers = await _manage(system, options)
            tell(_Ready())
            go = await _expect(pipe, _Go)
            assert isinstance(go, _Go)
            run.started = time.perf_counter()
            if go.deadline is not None:
                run.deadline = run.started + (go.deadline - time.time())
            await run.act_all()
            seconds = time.perf_counter() - run.started
            tell(_Acted())
            await _expect(pipe, _Settle)
            tell(_Settled(await _settled(system, managers, options.settle_timeout)))
            await _expect(pipe, _Check)
            # The partitions held, as every worker sees them at once (the parent asks
            # all of them together): a hand-over can still move one between two
            # workers while each checks the store, which takes each its own time.
            stats = [h.statistics() for h in managers]
            head = await system.store.last_position()
            invariants, by_type = await check_store(
                system, live, head=head, since=before, timeout=options.settle_timeout
            )
            process_managers = {h.name: _statistics(h) for h in managers}
    finally:
        if ack_log is not None:
            ack_log.close()
    counts = run.counts
    rebuilt = {i.name: i.ok for i in invariants}
    figures = WorkerFigures(
        index=index,
        restarts=restarts,
        pid=os.getpid(),
        customers=len(run.customers),
        commands=counts.answered,
        acknowledged=counts.acknowledged,
        duplicates=counts.duplicates,
        rejected=counts.rejected,
        errors=counts.errors,
        seconds=round(seconds, 3),
        held=tuple(f"{s.name}[{','.join(map(str, s.held))}]" for s in stats if s.held),
        takeovers=sum(s.takeovers for s in stats),
        lost=sum(s.lost for s in stats),
        read_models_ok=rebuilt.get("read_models_rebuild", False),
    )
    return _Report(
        figures=figures,
        head=head,
        invariants=invariants,
        events_by_type=dict(by_type),
        sent=sum(c.sent for c in run.customers),
        by_type=dict(counts.by_type),
        rejected_by_type=dict(counts.rejected_by_type),
        error_types=dict(counts.error_types),
        digests=[(c.index, c.digest().hex()) for c in run.customers],
        process_managers=process_managers,
    )


async def _main(options: SimOptions, index: int, restarts: int, prefix: str, before: int) -> None:
    pipe = ParentPipe()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipe.read)
        report = await _work(options, index, restarts, prefix, before, pipe)
        tg.cancel_scope.cancel()
    tell(report)


def main(argv: list[str]) -> int:
    """Run one worker; 0 once it reported, 1 when it failed (the error sent as a line)."""
    try:
        options = msgspec.json.decode(argv[0], type=SimOptions)
        index, restarts, prefix, before = int(argv[1]), int(argv[2]), argv[3], int(argv[4])
        anyio.run(_main, options, index, restarts, prefix, before, backend="asyncio")
    except KeyboardInterrupt:
        return 1
    except BaseException as error:  # noqa: BLE001 - reported to the parent, then exit 1
        with contextlib.suppress(OSError):  # the parent may be gone
            tell(_Failed(_describe(error)))
        return 1
    return 0


def _describe(error: BaseException) -> str:
    """`Type: message` of an error, of the first one in a group."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
