"""What an aggregate actor needs of its host: the `ActorHost` protocol.

The host (one per aggregate type, owned by its `AggregateRouter`) owns what the actors
of that type share: the counters (bumped through its methods), the quarantine of
aggregates that cannot be loaded, snapshot saving, and the way back to the registry
of live actors. The actor module depends on this protocol only, not on the router.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from actors._aggregate import Aggregate
from actors._group_load import GroupLoader
from actors._mailbox import Load
from actors._options import SystemOptions
from actors._registry import LiveActor
from store import EventStore
from store._batch import Redecision, _Append

QueueAppend: TypeAlias = Callable[
    [str, Sequence[Any], int, Mapping[str, str] | None, _Append | None, Redecision | None],
    _Append | None,
]

__all__ = ["ActorHost"]


class ActorHost(Protocol):
    """What an `AggregateActor` needs of the one that created it."""

    @property
    def name(self) -> str:
        """The aggregate type's name (for errors and logs)."""
        ...

    @property
    def aggregate(self) -> Aggregate[Any, Any, Any]:
        """The aggregate: `initial`, `decide`, `evolve`."""
        ...

    @property
    def options(self) -> SystemOptions:
        """The options of this aggregate type."""
        ...

    @property
    def snapshot_every(self) -> int | None:
        """Save a snapshot every so many events (None: never)."""
        ...

    @property
    def store(self) -> EventStore:
        """The event store."""
        ...

    @property
    def queue_append(self) -> QueueAppend | None:
        """The store's `queue_append` (None: it cannot chain across batches)."""
        ...

    @property
    def loader(self) -> GroupLoader:
        """Reads the first pages of the streams loading at the same moment together."""
        ...

    @property
    def load(self) -> Load:
        """The count of commands queued across the system's aggregate mailboxes."""
        ...

    # -- counters ---------------------------------------------------------------------

    def answered(self) -> None:
        """A command was answered with a result."""

    def dropped_reply(self) -> None:
        """A result was ready but its caller had gone."""

    def rejected(self) -> None:
        """A command was refused by decide (or an idempotency conflict)."""

    def failed(self) -> None:
        """A command failed by a bug in decide or evolve."""

    def restarted(self) -> None:
        """The actor restarted (or reloads after an unknown outcome)."""

    def rode(self) -> None:
        """A command rode on an append in flight (see `AggregateActor.ride`)."""

    def conflicted(self) -> None:
        """An append conflicted with another append to the stream (another process's)."""

    def redecided(self) -> None:
        """An append was decided again in the store's transaction (`Redecision`)."""

    # -- lifecycle --------------------------------------------------------------------

    def loaded(self, aggregate_id: str) -> None:
        """The actor of `aggregate_id` loaded: it is no longer quarantined."""

    def quarantine(self, aggregate_id: str, error: BaseException) -> None:
        """Refuse commands for `aggregate_id` with `error` for a while (`quarantine_for`)."""

    def forget(self, actor: LiveActor) -> None:
        """`actor` ended."""

    def start(self, actor: LiveActor) -> None:
        """Start `actor`'s task (`run`) in the system's task group."""

    def task_ended(self) -> None:
        """The task `start` started ended."""

    def idle_slot(self) -> bool:
        """Whether an actor task may wait idle for its next command (fewer than
        `idle_actor_tasks` do); if so, it counts until `idle_done`."""

    def idle_done(self) -> None:
        """An actor task that took an idle slot stopped waiting."""

    async def save_snapshot(self, stream_id: str, version: int, state: Any) -> None:
        """Save a snapshot; reports a failure, never raises it."""
