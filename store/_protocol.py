"""The `EventStore` protocol: what the runtime, the bus and read models need of a store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import msgspec

from store._chain import ChainedAppend, ChainOutcome
from store._codec import EventRegistry
from store._records import AppendResult, Lease, RecordedEvent, Snapshot, StoreStatistics

__all__ = ["EventStore"]

S = TypeVar("S")


class EventStore(Protocol):
    """An append-only event log with optimistic concurrency, snapshots, checkpoints and
    leases (with fencing of appends and checkpoints).

    `SQLiteEventStore` (from `open_store`) is the implementation; the protocol is the
    seam that tests and other layers type against.
    """

    @property
    def registry(self) -> EventRegistry:
        """The event types this store can append and read."""
        ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[msgspec.Struct],
        *,
        expected_version: int,
        command_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        fence: Lease | None = None,
    ) -> AppendResult:
        """Append `events` to `stream_id` if it is at `expected_version` (or `ANY`,
        `NO_STREAM`, `STREAM_EXISTS`); returns once they are committed. A `command_id`
        seen before returns the first result (`duplicate=True`) and writes nothing.
        With `fence`, it commits only if, in its transaction, the lease row still has
        the fence's owner and epoch (its expiry is not checked).

        Raises:
            ConcurrencyError: the stream is at another version; nothing written.
            LeaseLost: `fence` is no longer held; this append alone wrote nothing.
        """
        ...

    async def append_chain(
        self,
        stream_id: str,
        chain: Sequence[ChainedAppend],
        *,
        expected_version: int,
    ) -> list[ChainOutcome]:
        """Append each of `chain` to `stream_id` in order, each only if the one before
        it committed as a fresh append, the first at `expected_version`; one outcome
        per append (`ChainBroken` for one not written because the one before it did not
        commit fresh). A backend may commit the whole chain in one batch."""
        ...

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """The events of `stream_id` from `from_version` to `to_version`, oldest first: at
        most `limit` (a page), or without it the whole range (`ReadTooLarge` past the
        store's read limit)."""
        ...

    async def read_stream_until(
        self, stream_id: str, at: datetime | float, *, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The events of `stream_id` recorded at or before moment `at` (time travel)."""
        ...

    async def read_all(
        self,
        *,
        from_position: int = 0,
        to_position: int | None = None,
        limit: int | None = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent]:
        """The global log from `from_position` (inclusive) up to `to_position`, in commit
        order; optionally only `event_types` tags and streams starting with `stream_prefix`.
        """
        ...

    async def read_log(
        self,
        *,
        from_position: int,
        to_position: int,
        limit: int,
        event_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """`read_all` for the bus's follower, on a connection of its own where the store
        has one to spare (one caller at a time), so it never waits behind other reads."""
        ...

    def check_stream_id(self, stream_id: object) -> None:
        """Raise `InvalidStreamId` unless the store can take `stream_id` (its own limits);
        cheap for an id seen before."""
        ...

    async def wait_settled(self) -> None:
        """Return once every append submitted before the call has committed or failed
        (also those whose callers were cancelled while the store held them)."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The version of `stream_id` (0 when it has no events)."""
        ...

    async def last_position(self) -> int:
        """The highest committed global position (0 for an empty store)."""
        ...

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        """The highest committed global position once it is above `after` (commits of
        every process), or after `timeout` seconds whatever it is: a wake-up hint."""
        ...

    async def find_command(self, command_id: str) -> AppendResult | None:
        """The result of the append made with `command_id`, or None if there was none."""
        ...

    async def save_snapshot(
        self, stream_id: str, version: int, state: object, *, schema_version: int = 1
    ) -> None:
        """Keep `state` as the snapshot of `stream_id` at `version`."""
        ...

    async def load_snapshot(
        self, stream_id: str, state_type: type[S], *, schema_version: int = 1
    ) -> Snapshot[S] | None:
        """The latest snapshot of `stream_id` as `state_type`, or None (none, or another
        `schema_version`)."""
        ...

    async def save_checkpoint(
        self, name: str, position: int, *, fence: Lease | None = None
    ) -> None:
        """Durably record that subscriber `name` has handled everything up to `position`;
        with `fence`, only if the lease row still has the fence's owner and epoch,
        atomically with the write (else `LeaseLost`, the checkpoint unchanged)."""
        ...

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> Lease | None:
        """Take lease `name` for `owner` for `ttl` seconds when it is free (no row),
        expired, released, or already held by `owner` unexpired (then: extended, same
        epoch). Returns the lease, or None when another owner holds it unexpired.
        Atomic across processes."""
        ...

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend `lease` to now + `ttl` if it is still held by `lease.owner` at
        `lease.epoch` (even past its expiry, when nobody took it); None when it was
        lost."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give `lease` up at once (it expires now) if still held at its epoch; else
        nothing."""
        ...

    async def read_leases(self, prefix: str = "") -> list[Lease]:
        """Every lease whose name starts with `prefix`, by name (for fair sharing of
        partitions)."""
        ...

    async def load_checkpoint(self, name: str) -> int:
        """The position saved for subscriber `name` (0 if none)."""
        ...

    def add_commit_listener(
        self, listener: Callable[[Sequence[RecordedEvent]], None]
    ) -> Callable[[], None]:
        """Call `listener` with the events of every commit, in commit order; returns a
        function that removes it."""
        ...

    def statistics(self) -> StoreStatistics:
        """A frozen snapshot of the store's counters."""
        ...
