"""The `EventStore` protocol: what the runtime, the bus and read models need of a store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import msgspec

from store._codec import EventRegistry
from store._records import AppendResult, RecordedEvent, Snapshot, StoreStatistics

__all__ = ["EventStore"]

S = TypeVar("S")


class EventStore(Protocol):
    """An append-only event log with optimistic concurrency, snapshots and checkpoints.

    `SQLiteEventStore` (from `open_store`) is the implementation; the protocol is the
    seam that tests and other layers type against.
    """

    @property
    def registry(self) -> EventRegistry: ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[msgspec.Struct],
        *,
        expected_version: int,
        command_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AppendResult: ...

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]: ...

    async def read_stream_until(
        self, stream_id: str, at: datetime | float, *, limit: int | None = None
    ) -> list[RecordedEvent]: ...

    async def read_all(
        self,
        *,
        from_position: int = 0,
        to_position: int | None = None,
        limit: int | None = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent]: ...

    async def stream_version(self, stream_id: str) -> int: ...

    async def last_position(self) -> int: ...

    async def find_command(self, command_id: str) -> AppendResult | None: ...

    async def save_snapshot(
        self, stream_id: str, version: int, state: object, *, schema_version: int = 1
    ) -> None: ...

    async def load_snapshot(
        self, stream_id: str, state_type: type[S], *, schema_version: int = 1
    ) -> Snapshot[S] | None: ...

    async def save_checkpoint(self, name: str, position: int) -> None: ...

    async def load_checkpoint(self, name: str) -> int: ...

    def add_commit_listener(
        self, listener: Callable[[Sequence[RecordedEvent]], None]
    ) -> Callable[[], None]: ...

    def statistics(self) -> StoreStatistics: ...
