"""Process managers (sagas): durable subscribers that turn events into commands.

A process manager is pure: `react(recorded)` says which commands an event calls for,
`compensate(recorded, dispatch, error)` which commands undo a step that was refused.
The runtime (`run_process_manager`) drives it:

- It subscribes from the position after its checkpoint (`checkpoints` table, keyed by the
  manager's permanent `name`), so it resumes after a restart without skipping events.
- Each command is sent with a command id derived from the manager's name, the event's
  global position and the command's index (`"<name>:<position>:<index>"`, and
  `":c<j>"` for compensations). An event handled twice (a crash before its checkpoint
  was saved) therefore re-sends commands the aggregates recognise as duplicates: the
  effect happens once.
- Up to `concurrency` events are handled at once, but events with one
  `sequence_key` (by default: of one stream) are handled in order. The checkpoint only moves over a contiguous prefix of handled positions (a
  low watermark), never past an event still in flight.
- A refused step (`Rejected`) goes to `compensate`; the refusal and the commands that
  undo it are recorded in the log (a `StepRefused` event, see `actors._dispatch`)
  before any is sent, so an event handled again never resends a refused step and
  finishes a compensation a crash cut short. A transient failure (mailbox full,
  ask timeout, repeated conflicts, an unavailable store) is retried with backoff a
  bounded number of times. A step that still fails, or a `react`/`compensate` that
  raises, is parked in the dead letters and the manager goes on.
- When the system shuts down, commands it could not send (`ShuttingDown`) leave their
  event unhandled: the checkpoint stays before it and the next run handles it again.
- Several processes on one store run a manager once: each partition (by default one;
  `partitions` hashes the streams over more) runs under a lease in the store, held by
  one process, renewed every third of `lease_ttl`, taken over by another when its
  holder stops renewing (a process that died). Every checkpoint and every command the
  manager sends is fenced by the lease's epoch: a former holder that was only paused
  cannot write once another took over (its command fails with `LeaseLost`, and it
  stops the partition). Each process takes about its share of the partitions.

The module holds the public face (`ProcessManagerHandle`, `start_process`) and
re-exports the public types of `actors._process_types`; the handle is layered:
`_process_state` (its fields), `_process_steps` (carrying an event's steps through),
`_process_leases` (the partitions' leases and the fair share); one partition is
`_process_partition`'s `_Partition`.
"""

from __future__ import annotations

import contextlib

import anyio
import anyio.abc

from actors._errors import InvalidOption, ShuttingDown
from actors._process_leases import _Leasing
from actors._process_types import (
    ParkedStep,
    ProcessHost,
    ProcessManager,
    ProcessManagerOptions,
    ProcessManagerStatistics,
    partition_of,
)
from actors._telemetry import watch_process
from bus import BusClosed, ConsistencyTimeout

__all__ = [
    "ParkedStep",
    "ProcessManager",
    "ProcessManagerHandle",
    "ProcessManagerOptions",
    "ProcessManagerStatistics",
    "partition_of",
    "start_process",
]


class ProcessManagerHandle(_Leasing):
    """A running process manager: its progress, its dead letters, and a way to wait.

    With `lease` (the default) it holds the lease of each partition it runs, renews
    it, and takes over partitions whose holder stopped renewing; the partitions it
    does not hold it only watches (their checkpoints, for `position`).

    Its fields are `_ProcessState`'s; carrying events through is `_Carrying`'s, the
    leases and the fair share `_Leasing`'s. Here: what callers see and the run.
    """

    # -- what callers see ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the manager is still running here (holding partitions or waiting to)."""
        return self._running

    @property
    def held(self) -> tuple[int, ...]:
        """The partitions this process runs now."""
        return tuple(sorted(i for i, p in self._partitions.items() if not p.done.is_set()))

    def dead_letters(self) -> tuple[ParkedStep, ...]:
        """Steps that could not be carried through, oldest first (at most `max_parked`)."""
        return tuple(self._parked)

    def statistics(self) -> ProcessManagerStatistics:
        """A frozen snapshot of the manager's counters."""
        return ProcessManagerStatistics(
            name=self.name,
            position=self.position,
            in_flight=sum(len(p.in_flight) for p in self._partitions.values()),
            handled=self._handled,
            sent=self._sent,
            rejected=self._rejected,
            compensations=self._compensations,
            retries=self._retries,
            parked=self._parked_total,
            partitions=self.options.partitions,
            held=self.held,
            takeovers=self._takeovers,
            lost=self._lost,
        )

    async def wait_for(self, position: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        # (a timeout of its own: the error names the manager and both positions)
        """Wait until every event up to `position` has been handled (here, or by the
        process holding a partition: its checkpoint, read every fifth of `lease_ttl`).

        Returns at once if it already has, even once the manager stopped. Pass the
        `position` of an ask's result to wait for what that command's events call for.

        Raises:
            InvalidOption: `position` is not an int >= 0, or `timeout` not a number of
                seconds >= 0 (checked first).
            ShuttingDown: the manager stopped (`stop()`, or its system shut down)
                before reaching `position`: at once if it had stopped already, else as
                soon as it stops.
            ConsistencyTimeout: not reached within `timeout` seconds
                (`bus.ConsistencyTimeout`, a `TimeoutError`; names the manager, the
                target and the position reached). The manager goes on.

        Cancellation: only the wait is abandoned; the manager goes on.
        """
        where = f"process manager {self.name!r}: wait_for's "
        if type(position) is not int or position < 0:
            raise InvalidOption("position", position, "an int >= 0", where)
        if type(timeout) not in (int, float) or not timeout >= 0:
            raise InvalidOption("timeout", timeout, "a number of seconds >= 0", where)
        if self.position >= position:
            return
        self._raise_if_stopped(position)
        reached = anyio.Event()
        waiter = (position, reached)
        self._waiters.append(waiter)
        try:
            with anyio.move_on_after(timeout):
                await reached.wait()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if self.position >= position:
            return
        self._raise_if_stopped(position)
        raise ConsistencyTimeout("process manager", self.name, position, self.position, timeout)

    def _raise_if_stopped(self, target: int) -> None:
        if not self._running:
            raise ShuttingDown(
                f"process manager {self.name!r} stopped at position {self.position};"
                f" it will not reach position {target}"
            )

    async def stop(self) -> None:
        """Stop consuming events, save the checkpoints, give up the leases (another
        process takes over at once), and wait until it has stopped."""
        self._cancel.cancel()
        await self._done.wait()

    # -- the runtime --------------------------------------------------------------------

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        if self._system.bus is None:
            raise RuntimeError("process managers need the system's event bus")
        try:
            with self._cancel, contextlib.suppress(ShuttingDown, BusClosed):
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if not self.options.lease:
                        for index in range(self.options.partitions):
                            await self._start_partition(index, None)
                        task_status.started()
                        await anyio.sleep_forever()
                    await self._balance()  # takes what it can before start returns
                    task_status.started()
                    await self._keep_leases()
        finally:
            self._running = False
            self._tg = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._release_all()
            for _, reached in self._waiters:
                reached.set()
            self._done.set()


async def start_process(
    task_group: anyio.abc.TaskGroup,
    system: ProcessHost,
    manager: ProcessManager,
    options: ProcessManagerOptions,
    checkpoint: int,
) -> ProcessManagerHandle:
    """Start `manager` in `task_group` from `checkpoint`; returns once it holds and has
    subscribed what it could take (with `lease`, maybe nothing: another process runs
    it, and this one stands by)."""
    handle = ProcessManagerHandle(system, manager, options, checkpoint)
    bus = system.bus
    watch_process(handle, lambda: bus.head)  # for the position and lag gauges
    await task_group.start(handle._run)
    return handle
