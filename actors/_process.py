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
- Up to `concurrency` events are handled at once, but events of one stream are handled
  in order. The checkpoint only moves over a contiguous prefix of handled positions (a
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
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import anyio
import anyio.abc
import msgspec

from actors._aggregate import Aggregate, Event
from actors._dispatch import (
    Dispatch,
    UnreadableRecord,
    record_refusal,
    recorded_refusal,
)
from actors._errors import (
    AskTimeout,
    MailboxFull,
    Overloaded,
    Rejected,
    ShuttingDown,
    TooManyAttempts,
)
from actors._router import AggregateRouter
from actors._telemetry import dead_letter, handling, watch_process
from bus import BusClosed, EventBus
from store import (
    EventStore,
    Lease,
    LeaseLost,
    RecordedEvent,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    faults,
    get_logger,
    telemetry,
)

__all__ = [
    "ParkedStep",
    "ProcessManager",
    "ProcessManagerHandle",
    "ProcessManagerOptions",
    "ProcessManagerStatistics",
    "partition_of",
    "start_process",
]


class ProcessHost(Protocol):
    """What a process manager needs of its actor system."""

    @property
    def store(self) -> EventStore:
        """The event store (checkpoints, the registry)."""
        ...

    @property
    def bus(self) -> EventBus:
        """The event bus the manager subscribes to."""
        ...

    def aggregates(
        self, aggregate: type[Aggregate[Any, Any, Any]], /
    ) -> AggregateRouter[Any, Any, Any]:
        """The router the manager's commands go through."""
        ...


_TRANSIENT = (MailboxFull, Overloaded, AskTimeout, TooManyAttempts, StoreUnavailable)


class ProcessManager:
    """Base of process managers: pure reactions from events to commands.

    Class attributes:
        name: permanent: names the checkpoint and prefixes every command id it sends.
            Renaming it makes a new manager that starts from the beginning.
        event_types: the events it reacts to (only these are delivered).
        stream_prefix: only events of streams whose id starts with this (optional).

    `react` and `compensate` must be pure: the same event must give the same commands
    every time, since an event is handled again after a crash.
    """

    name: ClassVar[str]
    event_types: ClassVar[tuple[type[Event], ...]] = ()
    stream_prefix: ClassVar[str | None] = None

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        """The commands `recorded` calls for, in the order to send them."""
        return ()

    def compensate(
        self, recorded: RecordedEvent, dispatch: Dispatch, error: Rejected
    ) -> Sequence[Dispatch]:
        """The commands that undo the effects of `recorded` after `dispatch` was refused
        with `error` (default: none; the refusal is only counted).

        They are recorded (encoded as JSON, with the import paths of their aggregate and
        command classes) in a `StepRefused` event before the first is sent: an event
        handled again after a crash sends the recorded ones, without calling this again.
        """
        return ()


@dataclass(frozen=True, slots=True)
class ProcessManagerOptions:
    """Tuning of a running process manager; every limit is finite.

    Attributes:
        concurrency: events handled at once per partition (events of one stream still
            in order).
        max_attempts: tries of one command through transient failures (a full
            mailbox, an overloaded system, a timeout, `TooManyAttempts` when several
            processes write its stream at once) before parking: 10, with the backoff
            about 3 s in all.
        retry_delay: first backoff between tries, in seconds (doubles, capped at 1 s).
        max_parked: dead letters kept; beyond it the oldest are dropped (and counted).
        queue_size: the bus subscription's live buffer, in events.
        ask_timeout: timeout of each command sent (None: the system's `ask_timeout`; an
            idle aggregate then runs the command on the manager's task, bounded by the
            store's own timeouts, which saves two task switches per command).
        lease: run the manager (each partition) in one process at a time, under a
            lease in the store; off, every process that starts it runs it.
        lease_ttl: seconds a lease lasts unless renewed (renewed every third of it);
            a process that dies is replaced within about 1.2 times this (0.05 to 3600).
        partitions: the streams are hashed over this many partitions (1 to 1024), each
            leased, checkpointed and run on its own, so several processes share the
            manager: each takes about its share of the live processes.
    """

    concurrency: int = 64
    max_attempts: int = 10
    retry_delay: float = 0.01
    max_parked: int = 1_000
    queue_size: int = 10_000
    ask_timeout: float | None = None
    lease: bool = True
    lease_ttl: float = 5.0
    partitions: int = 1

    def __post_init__(self) -> None:
        for field in ("concurrency", "max_attempts", "max_parked", "queue_size"):
            value = getattr(self, field)
            if type(value) is not int or value < 1:
                raise ValueError(f"{field} must be a positive int, not {value!r}")
        for field in ("retry_delay", "ask_timeout"):
            value = getattr(self, field)
            if value is None and field == "ask_timeout":
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{field} must be a finite number >= 0, not {value!r}")
        if type(self.lease) is not bool:
            raise ValueError(f"lease must be a bool, not {self.lease!r}")
        ttl = self.lease_ttl
        if type(ttl) not in (int, float) or not 0.05 <= ttl <= 3600:
            raise ValueError(
                f"lease_ttl must be a number of seconds from 0.05 to 3600, not {ttl!r}"
            )
        if type(self.partitions) is not int or not 1 <= self.partitions <= _MAX_PARTITIONS:
            raise ValueError(
                f"partitions must be an int from 1 to {_MAX_PARTITIONS}, not {self.partitions!r}"
            )


_MAX_PARTITIONS: Final = 1024
_MAX_MEMBERS: Final = 1024  # member slots: processes running one partitioned manager


def partition_of(stream_id: str, partitions: int) -> int:
    """The partition (0 to `partitions - 1`) of `stream_id`'s events: a stable hash,
    the same in every process and every run."""
    return zlib.crc32(stream_id.encode()) % partitions


class ParkedStep(msgspec.Struct, frozen=True):
    """An event a process manager could not carry through, kept for inspection.

    Attributes:
        position, stream_id, version, event_type: the event.
        command_id: the command that failed (None when `react`/`compensate` raised).
        error: the error's type and message.
        attempts: tries made.
    """

    position: int
    stream_id: str
    version: int
    event_type: str
    command_id: str | None
    error: str
    attempts: int


class ProcessManagerStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a running process manager.

    Attributes:
        name: the manager's name.
        position: every event up to it has been handled (by this process or, for the
            partitions another holds, as far as their checkpoints say).
        in_flight: events being handled now.
        handled: events handled since start.
        sent: commands sent and acknowledged (duplicates included).
        rejected: commands refused by their aggregate.
        compensations: compensating commands acknowledged.
        retries: sends retried after a transient failure.
        parked: dead letters since start.
        partitions: how many partitions the streams are hashed over.
        held: the partitions this process runs now.
        takeovers: leases this process took (at start, or from a process that died).
        lost: leases this process lost to another (it stopped those partitions).
    """

    name: str
    position: int
    in_flight: int
    handled: int
    sent: int
    rejected: int
    compensations: int
    retries: int
    parked: int
    partitions: int = 1
    held: tuple[int, ...] = ()
    takeovers: int = 0
    lost: int = 0


class _LeaseLost(Exception):
    """Internal: a partition's lease went to another process: stop it."""


class _Partition:
    """One partition of a running manager: its subscription, its in-flight events and
    its checkpoint, fenced by its lease (None without `lease`)."""

    def __init__(
        self,
        handle: ProcessManagerHandle,
        index: int,
        lease: Lease | None,
        checkpoint: int,
        replay_until: int,
    ) -> None:
        self.handle = handle
        self.index = index
        self.lease = lease
        # Events up to here may have been handled before (by a process that died, or
        # this one before a restart) past the checkpoint: see `_carry_through`.
        self.replay_until = replay_until
        self.saved = checkpoint
        self.delivered = checkpoint  # the subscription's position after the last event
        self.in_flight: dict[int, anyio.Event] = {}
        self.tails: dict[str, anyio.Event] = {}
        self.changed = anyio.Event()
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.lost = False

    @property
    def position(self) -> int:
        if self.in_flight:
            return min(self.in_flight) - 1
        return self.delivered

    def lose(self) -> None:
        """Another process took the lease: stop at once, write nothing more."""
        if not self.lost:
            self.lost = True
            self.handle._lost += 1
            self.handle._log.warning("process.lease_lost", partition=self.index)
        self.scope.cancel()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        handle = self.handle
        system = handle._system
        manager = handle.manager
        tags = [system.store.registry.tag_of(tp) for tp in manager.event_types]
        partitions = handle.options.partitions
        index = self.index
        try:
            with self.scope:
                async with (
                    system.bus.subscribe(
                        from_position=self.saved + 1,
                        event_types=tags,
                        stream_prefix=manager.stream_prefix,
                        queue_size=handle.options.queue_size,
                        name=handle._names[index],
                    ) as subscription,
                    anyio.create_task_group() as tg,
                ):
                    task_status.started()
                    tg.start_soon(self._save_checkpoints)
                    limiter = anyio.CapacityLimiter(handle.options.concurrency)
                    while True:
                        batch = await subscription.next_batch()
                        for recorded in batch.events:
                            if (
                                partitions > 1
                                and partition_of(recorded.stream_id, partitions) != index
                            ):
                                continue
                            await limiter.acquire_on_behalf_of(recorded.position)
                            done = anyio.Event()
                            previous = self.tails.get(recorded.stream_id)
                            self.tails[recorded.stream_id] = done
                            self.in_flight[recorded.position] = done
                            tg.start_soon(self._handle, recorded, previous, done, limiter)
                        self.delivered = batch.position
                        self.changed.set()
                        handle._progress()
        except ShuttingDown:
            pass
        finally:
            if not self.lost:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._save_now()
            self.done.set()
            handle._progress()

    async def _handle(
        self,
        recorded: RecordedEvent,
        previous: anyio.Event | None,
        done: anyio.Event,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        try:
            if previous is not None:
                await previous.wait()
            work = self.handle._carry_through(
                recorded, self.lease, recorded.position <= self.replay_until
            )
            if telemetry.tracer is not None:  # a span, in the trace the event carries
                work = handling(self.handle.name, recorded, work)
            await work
            if faults.enabled:
                await faults.hit_async("after_projection_apply_before_checkpoint")
        except ShuttingDown:
            # Not handled: the checkpoint stays before this event; the next run redoes it.
            self.scope.cancel()
            return
        except _LeaseLost:
            # Another process owns the partition now; it handles this event again.
            self.lose()
            return
        finally:
            limiter.release_on_behalf_of(recorded.position)
            done.set()
            if self.tails.get(recorded.stream_id) is done:
                del self.tails[recorded.stream_id]
        del self.in_flight[recorded.position]
        self.handle._handled += 1
        self.handle._progress()
        self.changed.set()

    async def _save_checkpoints(self) -> None:
        while True:
            await self.changed.wait()
            self.changed = anyio.Event()
            await self._save_now()

    async def _save_now(self) -> None:
        position = self.position
        if position > self.saved:
            try:
                await self.handle._system.store.save_checkpoint(
                    self.handle._names[self.index], position, fence=self.lease
                )
            except LeaseLost:
                self.lose()
                return
            self.saved = position


class ProcessManagerHandle:
    """A running process manager: its progress, its dead letters, and a way to wait.

    With `lease` (the default) it holds the lease of each partition it runs, renews
    it, and takes over partitions whose holder stopped renewing; the partitions it
    does not hold it only watches (their checkpoints, for `position`).
    """

    def __init__(
        self,
        system: ProcessHost,
        manager: ProcessManager,
        options: ProcessManagerOptions,
        checkpoint: int,
    ) -> None:
        self.manager = manager
        self.name = manager.name
        self.options = options
        self._system = system
        count = options.partitions
        base = f"process:{manager.name}"
        self._names = [base] if count == 1 else [f"{base}#{i}/{count}" for i in range(count)]
        self._base_checkpoint = checkpoint
        self._known = [checkpoint] * count  # checkpoints of the partitions held elsewhere
        self._partitions: dict[int, _Partition] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._parked: list[ParkedStep] = []
        self._cancel = anyio.CancelScope()
        self._running = True
        self._done = anyio.Event()
        self._log = get_logger("actors.process", manager=manager.name)
        self._handled = self._sent = self._rejected = 0
        self._compensations = self._retries = self._parked_total = 0
        self._takeovers = self._lost = 0
        self._member: Lease | None = None  # with partitions: this process's presence

    # -- what callers see ---------------------------------------------------------------

    @property
    def position(self) -> int:
        """Every event up to this position has been handled: by this process for the
        partitions it runs, by their holders (as far as their checkpoints say) for the
        others."""
        return min(
            (
                self._partitions[i].position if i in self._partitions else self._known[i]
                for i in range(self.options.partitions)
            ),
            default=0,
        )

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
        """Wait until every event up to `position` has been handled (here, or by the
        process holding a partition: its checkpoint, read every fifth of `lease_ttl`).

        Raises:
            TimeoutError: not reached within `timeout` seconds.
            ShuttingDown: the manager stopped before reaching it.

        Cancellation: only the wait is cancelled.
        """
        if self.position >= position:
            return
        if not self._running:
            raise ShuttingDown(f"process manager {self.name!r} stopped at {self.position}")
        reached = anyio.Event()
        waiter = (position, reached)
        self._waiters.append(waiter)
        try:
            with anyio.fail_after(timeout):
                await reached.wait()
        except TimeoutError:
            raise TimeoutError(
                f"process manager {self.name!r} reached position {self.position}, not"
                f" {position}, within {timeout}s"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if self.position < position:
            raise ShuttingDown(f"process manager {self.name!r} stopped at {self.position}")

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

    async def _start_partition(self, index: int, lease: Lease | None) -> None:
        assert self._tg is not None
        store = self._system.store
        name = self._names[index]
        checkpoint = await store.load_checkpoint(name)
        if checkpoint == 0 and len(self._names) > 1:
            checkpoint = self._base_checkpoint  # first run with partitions
        partition = _Partition(self, index, lease, checkpoint, await store.last_position())
        self._partitions[index] = partition
        try:
            await self._tg.start(partition.run)
        except BaseException:
            del self._partitions[index]
            raise

    async def _keep_leases(self) -> None:
        """Renew the held leases every third of the ttl; every fifth, drop the stopped
        partitions, read the others' checkpoints and take a fair share."""
        ttl = self.options.lease_ttl
        tick = ttl / 5
        renew_every = ttl / 3
        renewed = anyio.current_time()
        while True:
            await anyio.sleep(tick)
            if anyio.current_time() - renewed >= renew_every:
                renewed = anyio.current_time()
                await self._renew()
            await self._balance()

    async def _join(self) -> None:
        """With partitions, hold a member lease (`process:<name>@<slot>`, the first free
        slot) so the others count this process when they share the partitions out."""
        store = self._system.store
        ttl = self.options.lease_ttl
        if self._member is not None:
            self._member = await store.renew_lease(self._member, ttl)
        if self._member is None:
            for slot in range(_MAX_MEMBERS):
                name = f"process:{self.name}@{slot}"
                self._member = await store.acquire_lease(name, self._owner, ttl)
                if self._member is not None:
                    break

    async def _renew(self) -> None:
        store = self._system.store
        if self.options.partitions > 1:
            try:
                await self._join()
            except StoreError as exc:
                self._log.warning("process.renew_failed", error=repr(exc))
        for index, partition in list(self._partitions.items()):
            if partition.lease is None or partition.done.is_set():
                continue
            try:
                renewed = await store.renew_lease(partition.lease, self.options.lease_ttl)
            except StoreError as exc:
                self._log.warning("process.renew_failed", partition=index, error=repr(exc))
                continue  # tried again at the next renewal, well before it expires
            if renewed is None:
                partition.lose()

    async def _balance(self) -> None:
        """Drop finished partitions, refresh the others' positions, and acquire free
        partitions up to a fair share of the live holders (or release extras)."""
        for index, partition in list(self._partitions.items()):
            if partition.done.is_set():
                del self._partitions[index]
                self._known[index] = partition.saved
        store = self._system.store
        count = self.options.partitions
        base = f"process:{self.name}"
        try:
            if count > 1 and self._member is None:
                await self._join()
            leases = {
                lease.name: lease
                for lease in await store.read_leases(base)
                if lease.name == base or lease.name[len(base)] in "#@"
            }
            now = time.time()
            holders = {  # the other live processes running this manager
                lease.owner
                for name, lease in leases.items()
                if lease.expires_at > now and lease.owner != self._owner and "@" in name
            }
            share = -(-count // (len(holders) + 1))
            for index in range(count):
                if index not in self._partitions:
                    self._known[index] = max(
                        self._known[index], await store.load_checkpoint(self._names[index])
                    )
            mine = len(self._partitions)
            for index in range(count):
                if mine >= share:
                    break
                if index in self._partitions:
                    continue
                current = leases.get(self._names[index])
                if (
                    current is not None
                    and current.expires_at > now
                    and current.owner != self._owner
                ):
                    continue
                lease = await store.acquire_lease(
                    self._names[index], self._owner, self.options.lease_ttl
                )
                if lease is None:
                    continue
                self._takeovers += 1
                self._log.info("process.lease_taken", partition=index, epoch=lease.epoch)
                await self._start_partition(index, lease)
                mine += 1
            if mine > share and holders:
                # More than a fair share while others wait: hand the last ones over.
                for index in sorted(self._partitions, reverse=True)[: mine - share]:
                    await self._release(index)
        except StoreClosed:
            raise ShuttingDown(f"the store closed under process manager {self.name!r}") from None
        except StoreError as exc:
            self._log.warning("process.balance_failed", error=repr(exc))
        self._progress()

    async def _release(self, index: int) -> None:
        partition = self._partitions.pop(index)
        partition.scope.cancel()
        await partition.done.wait()
        self._known[index] = partition.saved
        if partition.lease is not None and not partition.lost:
            with contextlib.suppress(StoreError):
                await self._system.store.release_lease(partition.lease)

    async def _release_all(self) -> None:
        for index in list(self._partitions):
            await self._release(index)
        if self._member is not None:
            with contextlib.suppress(StoreError):
                await self._system.store.release_lease(self._member)
            self._member = None

    async def _carry_through(
        self, recorded: RecordedEvent, fence: Lease | None, replay: bool
    ) -> None:
        """Send the commands `recorded` calls for, compensating refused ones.

        With `replay` (the event may have been handled before, past the checkpoint), a
        step with a `StepRefused` record was refused then: it is not sent again (it
        could now be accepted and contradict its compensation); its recorded
        compensation is sent again instead, finishing one a crash cut short.
        """
        manager = self.manager
        try:
            steps = tuple(manager.react(recorded))
        except Exception as exc:  # noqa: BLE001 - a bug in react: park the event, go on
            self._park(recorded, None, exc, 1)
            return
        prefix = f"{manager.name}:{recorded.position}"
        store = self._system.store
        for index, step in enumerate(steps):
            command_id = f"{prefix}:{index}"
            if replay:
                try:
                    undo = await recorded_refusal(store, command_id)
                except (StoreError, UnreadableRecord) as exc:
                    self._park(recorded, command_id, exc, 1)
                    continue
                if undo is not None:
                    self._rejected += 1
                    await self._undo(recorded, undo, command_id, fence)
                    continue
            try:
                await self._send(recorded, step, command_id, fence)
            except Rejected as refusal:
                self._rejected += 1
                await self._compensate(recorded, step, refusal, command_id, fence)

    async def _compensate(
        self,
        recorded: RecordedEvent,
        step: Dispatch,
        refusal: Rejected,
        command_id: str,
        fence: Lease | None,
    ) -> None:
        """Record the refusal of `step` with the commands that undo it, then send them."""
        try:
            undo = tuple(self.manager.compensate(recorded, step, refusal))
        except Exception as exc:  # noqa: BLE001 - a bug in compensate: park, go on
            self._park(recorded, command_id, exc, 1)
            return
        try:
            undo = await record_refusal(self._system.store, command_id, refusal, undo, fence)
        except LeaseLost as exc:
            raise _LeaseLost from exc
        except (StoreError, UnreadableRecord, msgspec.EncodeError) as exc:
            self._park(recorded, command_id, exc, 1)
            return
        await self._undo(recorded, undo, command_id, fence)

    async def _undo(
        self,
        recorded: RecordedEvent,
        undo: tuple[Dispatch, ...],
        command_id: str,
        fence: Lease | None,
    ) -> None:
        for index, step_back in enumerate(undo):
            undo_id = f"{command_id}:c{index}"
            try:
                await self._send(recorded, step_back, undo_id, fence)
            except Rejected as exc:
                self._park(recorded, undo_id, exc, 1)
            else:
                self._compensations += 1

    async def _send(
        self, recorded: RecordedEvent, step: Dispatch, command_id: str, fence: Lease | None
    ) -> None:
        router = self._system.aggregates(step.aggregate)
        delay = self.options.retry_delay
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await router.ask(
                    step.aggregate_id,
                    step.command,
                    command_id=command_id,
                    timeout=self.options.ask_timeout,
                    fence=fence,
                )
            except (Rejected, ShuttingDown):
                raise
            except LeaseLost as exc:
                raise _LeaseLost from exc
            except _TRANSIENT as exc:
                if attempt == attempts:
                    self._park(recorded, command_id, exc, attempt)
                    return
                self._retries += 1
                await anyio.sleep(delay)  # backoff before the same command id again
                delay = min(delay * 2, 1.0)
            except Exception as exc:  # noqa: BLE001 - the step failed for good: park, go on
                self._park(recorded, command_id, exc, attempt)
                return
            else:
                self._sent += 1
                if faults.enabled:
                    await faults.hit_async("process_after_send")
                return

    def _park(
        self, recorded: RecordedEvent, command_id: str | None, error: BaseException, attempts: int
    ) -> None:
        self._parked_total += 1
        if telemetry.meter is not None:
            dead_letter(self.name)
        if len(self._parked) >= self.options.max_parked:
            self._parked.pop(0)
        self._parked.append(
            ParkedStep(
                recorded.position,
                recorded.stream_id,
                recorded.version,
                recorded.event_type,
                command_id,
                f"{type(error).__name__}: {error}",
                attempts,
            )
        )
        self._log.warning(
            "process.parked",
            position=recorded.position,
            stream_id=recorded.stream_id,
            command_id=command_id,
            error=type(error).__name__,
        )

    def _progress(self) -> None:
        if self._waiters:
            position = self.position
            for target, reached in self._waiters:
                if target <= position:
                    reached.set()


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
