"""Records the store hands out: recorded events, append results, snapshots, leases,
statistics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

import msgspec

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "Lease",
    "RecordedEvent",
    "Snapshot",
    "StoreStatistics",
]

NO_STREAM: Final = 0
"""Expected version meaning "the stream must not exist yet" (its version is 0)."""
ANY: Final = -1
"""Expected version meaning "append whatever the stream's version" (no concurrency check)."""
STREAM_EXISTS: Final = -2
"""Expected version meaning "the stream must already have at least one event"."""

S = TypeVar("S")


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """One committed event, as read back from the store or published after commit.

    Attributes:
        stream_id: the stream (one aggregate instance) it belongs to.
        version: its 1-based place in that stream.
        position: its 1-based place in the global log; positions follow commit order.
        event_type: the event's permanent tag.
        schema_version: the shape version it was stored with (before any upcasting).
        event: the decoded event, upcast to the current shape of its type.
        metadata: string key/values stored with it (correlation and causation ids...).
        recorded_at: commit time, POSIX seconds (UTC). Informational: order comes from
            `version` and `position`, never from this clock.
        command_id: the id of the command that appended it, if one was given.
    """

    stream_id: str
    version: int
    position: int
    event_type: str
    schema_version: int
    event: Any
    metadata: dict[str, str]
    recorded_at: float
    command_id: str | None = None

    @property
    def recorded_datetime(self) -> datetime:
        """`recorded_at` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.recorded_at, UTC)


class AppendResult(msgspec.Struct, frozen=True):
    """The outcome of a committed append.

    `first_version..last_version` are the versions the events took in their stream and
    `first_position..last_position` their places in the global log (contiguous: one
    append is never interleaved with another). `duplicate` is true when the command id
    had already committed and this result is the first one, returned again.
    """

    stream_id: str
    first_version: int
    last_version: int
    first_position: int
    last_position: int
    duplicate: bool = False


class Lease(msgspec.Struct, frozen=True):
    """A lease on a named resource, held by `owner` until `expires_at`.

    Taken with `acquire_lease`, kept with `renew_lease`, given up with `release_lease`;
    passed as `fence=` to `append` and `save_checkpoint`, it makes the write commit only
    while the store's lease row still has this owner and epoch (so a paused former
    owner cannot write after another took over).

    Attributes:
        name: the resource (e.g. a process manager, or one of its partitions).
        owner: who holds it (e.g. a process's unique id).
        epoch: increases every time the lease changes hands, or is taken again after it
            expired or was released (never on its owner's renewal or re-acquisition
            while it holds it); fencing compares it.
        expires_at: seconds since the Unix epoch, by the store's clock (SQLite: this
            host's `time.time()`; PostgreSQL: the server's `clock_timestamp()`).
    """

    name: str
    owner: str
    epoch: int
    expires_at: float


class Snapshot(msgspec.Struct, Generic[S], frozen=True):
    """A saved state of a stream as of `version`, with the shape version it was saved in."""

    stream_id: str
    version: int
    state: S
    schema_version: int
    recorded_at: float


class StoreStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the store's counters since it was opened.

    Attributes:
        appends: appends committed (duplicates by command id not counted).
        events: events committed.
        rejected: appends refused by the writer (concurrency, idempotency conflicts).
        batches: write transactions committed by the writer.
        events_per_batch: mean events per committed transaction.
        appends_per_batch: mean appends per committed transaction.
        commit_ms_mean, commit_ms_max: time a batch spent in its transaction, on the
            writer's side: on SQLite from taking the file's write lock to the commit
            (neither the wait for the lock nor what is done before it), on PostgreSQL
            from `BEGIN` to the commit.
        pending: appends waiting for the writer right now.
        last_position: the highest position this store has committed or seen.
    """

    appends: int
    events: int
    rejected: int
    batches: int
    events_per_batch: float
    appends_per_batch: float
    commit_ms_mean: float
    commit_ms_max: float
    pending: int
    last_position: int
