"""The public types of process managers: the `ProcessManager` base, its options
(`ProcessManagerOptions`), what a running one reports (`ProcessManagerStatistics`,
`ParkedStep`), what it needs of its system (`ProcessHost`) and how streams are hashed
over partitions (`partition_of`). The runtime is `actors._process_manager`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import msgspec

from actors._aggregate import Aggregate, Event
from actors._dispatch import Dispatch
from actors._errors import InvalidOption, Rejected
from actors._router import AggregateRouter
from bus import EventBus
from store import EventStore, RecordedEvent

__all__ = [
    "ParkedStep",
    "ProcessHost",
    "ProcessManager",
    "ProcessManagerOptions",
    "ProcessManagerStatistics",
    "partition_of",
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

    def sequence_key(self, recorded: RecordedEvent) -> str:
        """Events with the same key are handled one after another, in their order
        (each once the commands of the one before went through); events with different
        keys at once. Default: the stream, so the events of one stream are in order.

        A manager whose instances (one order, one transfer) hear of events from busy
        streams shared by many instances (a warehouse, an account) keys by the instance
        instead: then the events of a busy stream about different instances do not wait
        for each other. Must be pure and cheap; should it raise, the stream is the key.
        """
        return recorded.stream_id

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
    """Tuning of a running process manager; every limit is finite. A value out of its
    range is refused with `InvalidOption`, naming the option.

    Attributes:
        concurrency: events handled at once per partition (events with one
            `sequence_key`, by default of one stream, still in order).
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

    concurrency: int = 256
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
                raise InvalidOption(field, value, "a positive int")
        for field in ("retry_delay", "ask_timeout"):
            value = getattr(self, field)
            if value is None and field == "ask_timeout":
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                extra = " or None" if field == "ask_timeout" else ""
                raise InvalidOption(field, value, f"a finite number of seconds >= 0{extra}")
        if type(self.lease) is not bool:
            raise InvalidOption("lease", self.lease, "a bool")
        ttl = self.lease_ttl
        if type(ttl) not in (int, float) or not 0.05 <= ttl <= 3600:
            raise InvalidOption("lease_ttl", ttl, "a number of seconds from 0.05 to 3600")
        if type(self.partitions) is not int or not 1 <= self.partitions <= _MAX_PARTITIONS:
            raise InvalidOption(
                "partitions", self.partitions, f"an int from 1 to {_MAX_PARTITIONS}"
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
