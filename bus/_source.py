"""What the bus needs of a store (`EventSource`): commit notifications, global reads,
the hint that another process committed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from store import RecordedEvent

__all__ = ["EventSource"]


class EventSource(Protocol):
    """What the bus needs from a store: commit notifications and global reads.

    `SQLiteEventStore` satisfies it; so does any wrapper that forwards these three.
    """

    def add_commit_listener(
        self, listener: Callable[[Sequence[RecordedEvent]], None]
    ) -> Callable[[], None]:
        """Call `listener` with the events of every commit; returns its remover."""
        ...

    async def last_position(self) -> int:
        """The highest committed global position."""
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
        """The global log from `from_position` (inclusive), in commit order (filtered like
        `EventStore.read_all`)."""
        ...

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        """The highest committed position once it is above `after` (commits of every
        process), or after `timeout` seconds whatever it is (only with `follow`)."""
        ...
