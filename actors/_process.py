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
- A refused step (`Rejected`) goes to `compensate`. A transient failure (mailbox full,
  ask timeout, repeated conflicts, an unavailable store) is retried with backoff a
  bounded number of times. A step that still fails, or a `react`/`compensate` that
  raises, is parked in the dead letters and the manager goes on.
- When the system shuts down, commands it could not send (`ShuttingDown`) leave their
  event unhandled: the checkpoint stays before it and the next run handles it again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import anyio
import anyio.abc
import msgspec

from actors._aggregate import Aggregate, Command, Event
from actors._errors import (
    AskTimeout,
    MailboxFull,
    Overloaded,
    Rejected,
    ShuttingDown,
    TooManyAttempts,
)
from actors._router import AggregateRouter
from bus import EventBus
from store import EventStore, RecordedEvent, StoreUnavailable, faults, get_logger

__all__ = [
    "Dispatch",
    "ParkedStep",
    "ProcessManager",
    "ProcessManagerHandle",
    "ProcessManagerOptions",
    "ProcessManagerStatistics",
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


class Dispatch(msgspec.Struct, frozen=True):
    """A command a process manager sends: to instance `aggregate_id` of `aggregate`."""

    aggregate: type[Aggregate[Any, Any, Any]]
    aggregate_id: str
    command: Command


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
        with `error` (default: none; the refusal is only counted)."""
        return ()


@dataclass(frozen=True, slots=True)
class ProcessManagerOptions:
    """Tuning of a running process manager; every limit is finite.

    Attributes:
        concurrency: events handled at once (events of one stream still in order).
        max_attempts: tries of one command through transient failures before parking.
        retry_delay: first backoff between tries, in seconds (doubles, capped at 1 s).
        max_parked: dead letters kept; beyond it the oldest are dropped (and counted).
        queue_size: the bus subscription's live buffer, in events.
        ask_timeout: timeout of each command sent (None: the system's `ask_timeout`; an
            idle aggregate then runs the command on the manager's task, bounded by the
            store's own timeouts, which saves two task switches per command).
    """

    concurrency: int = 64
    max_attempts: int = 5
    retry_delay: float = 0.01
    max_parked: int = 1_000
    queue_size: int = 10_000
    ask_timeout: float | None = None

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
        position: its checkpoint: every event up to it has been handled.
        in_flight: events being handled now.
        handled: events handled since start.
        sent: commands sent and acknowledged (duplicates included).
        rejected: commands refused by their aggregate.
        compensations: compensating commands acknowledged.
        retries: sends retried after a transient failure.
        parked: dead letters since start.
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


class ProcessManagerHandle:
    """A running process manager: its progress, its dead letters, and a way to wait."""

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
        self._checkpoint_name = f"process:{manager.name}"
        self._saved = checkpoint
        self._delivered = checkpoint  # the subscription's position after the last event
        self._in_flight: dict[int, anyio.Event] = {}
        self._tails: dict[str, anyio.Event] = {}
        self._changed = anyio.Event()
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._parked: list[ParkedStep] = []
        self._cancel = anyio.CancelScope()
        self._running = True
        self._done = anyio.Event()
        self._log = get_logger("actors.process", manager=manager.name)
        self._handled = self._sent = self._rejected = 0
        self._compensations = self._retries = self._parked_total = 0

    # -- what callers see ---------------------------------------------------------------

    @property
    def position(self) -> int:
        """Every event up to this position has been handled (the low watermark)."""
        if self._in_flight:
            return min(self._in_flight) - 1
        return self._delivered

    @property
    def running(self) -> bool:
        """Whether the manager is still consuming events."""
        return self._running

    def dead_letters(self) -> tuple[ParkedStep, ...]:
        """Steps that could not be carried through, oldest first (at most `max_parked`)."""
        return tuple(self._parked)

    def statistics(self) -> ProcessManagerStatistics:
        """A frozen snapshot of the manager's counters."""
        return ProcessManagerStatistics(
            name=self.name,
            position=self.position,
            in_flight=len(self._in_flight),
            handled=self._handled,
            sent=self._sent,
            rejected=self._rejected,
            compensations=self._compensations,
            retries=self._retries,
            parked=self._parked_total,
        )

    async def wait_for(self, position: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until every event up to `position` has been handled.

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
        """Stop consuming events, save the checkpoint, and wait until it has stopped."""
        self._cancel.cancel()
        await self._done.wait()

    # -- the runtime --------------------------------------------------------------------

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        bus = self._system.bus
        if bus is None:
            raise RuntimeError("process managers need the system's event bus")
        tags = [self._system.store.registry.tag_of(tp) for tp in self.manager.event_types]
        try:
            with self._cancel:
                async with (
                    bus.subscribe(
                        from_position=self._saved + 1,
                        event_types=tags,
                        stream_prefix=self.manager.stream_prefix,
                        queue_size=self.options.queue_size,
                        name=self._checkpoint_name,
                    ) as subscription,
                    anyio.create_task_group() as tg,
                ):
                    task_status.started()
                    tg.start_soon(self._save_checkpoints)
                    limiter = anyio.CapacityLimiter(self.options.concurrency)
                    while True:
                        batch = await subscription.next_batch()
                        for recorded in batch.events:
                            await limiter.acquire_on_behalf_of(recorded.position)
                            done = anyio.Event()
                            previous = self._tails.get(recorded.stream_id)
                            self._tails[recorded.stream_id] = done
                            self._in_flight[recorded.position] = done
                            tg.start_soon(self._handle, recorded, previous, done, limiter)
                        self._delivered = batch.position
                        self._progress()
        except ShuttingDown:
            pass
        finally:
            self._running = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._save_now()
            for _, reached in self._waiters:
                reached.set()
            self._done.set()

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
            await self._carry_through(recorded)
            if faults.enabled:
                await faults.hit_async("after_projection_apply_before_checkpoint")
        except ShuttingDown:
            # Not handled: the checkpoint stays before this event; the next run redoes it.
            self._cancel.cancel()
            return
        finally:
            limiter.release_on_behalf_of(recorded.position)
            done.set()
            if self._tails.get(recorded.stream_id) is done:
                del self._tails[recorded.stream_id]
        del self._in_flight[recorded.position]
        self._handled += 1
        self._progress()

    async def _carry_through(self, recorded: RecordedEvent) -> None:
        manager = self.manager
        try:
            steps = tuple(manager.react(recorded))
        except Exception as exc:  # noqa: BLE001 - a bug in react: park the event, go on
            self._park(recorded, None, exc, 1)
            return
        prefix = f"{manager.name}:{recorded.position}"
        for index, step in enumerate(steps):
            command_id = f"{prefix}:{index}"
            try:
                await self._send(recorded, step, command_id)
            except Rejected as refusal:
                self._rejected += 1
                await self._compensate(recorded, step, refusal, command_id)

    async def _compensate(
        self, recorded: RecordedEvent, step: Dispatch, refusal: Rejected, command_id: str
    ) -> None:
        try:
            undo = tuple(self.manager.compensate(recorded, step, refusal))
        except Exception as exc:  # noqa: BLE001 - a bug in compensate: park, go on
            self._park(recorded, command_id, exc, 1)
            return
        for index, step_back in enumerate(undo):
            undo_id = f"{command_id}:c{index}"
            try:
                await self._send(recorded, step_back, undo_id)
            except Rejected as exc:
                self._park(recorded, undo_id, exc, 1)
            else:
                self._compensations += 1

    async def _send(self, recorded: RecordedEvent, step: Dispatch, command_id: str) -> None:
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
                )
            except (Rejected, ShuttingDown):
                raise
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
        self._changed.set()
        if self._waiters:
            position = self.position
            for target, reached in self._waiters:
                if target <= position:
                    reached.set()

    async def _save_checkpoints(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            await self._save_now()

    async def _save_now(self) -> None:
        position = self.position
        if position > self._saved:
            await self._system.store.save_checkpoint(self._checkpoint_name, position)
            self._saved = position


async def start_process(
    task_group: anyio.abc.TaskGroup,
    system: ProcessHost,
    manager: ProcessManager,
    options: ProcessManagerOptions,
    checkpoint: int,
) -> ProcessManagerHandle:
    """Start `manager` in `task_group` from `checkpoint`; returns once it is subscribed."""
    handle = ProcessManagerHandle(system, manager, options, checkpoint)
    await task_group.start(handle._run)
    return handle
