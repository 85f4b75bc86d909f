"""Projections and a gated store used by the read-model tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio

from readmodels import Projection
from readmodels._projection import event_tags
from store import RecordedEvent, SQLiteEventStore
from tests._events import Deposited, Opened, Withdrawn

V = TypeVar("V")


class Balances(Projection[dict[str, int]]):
    """Balance per stream: deposits add, withdrawals subtract."""

    event_types = (Deposited, Withdrawn)  # types; Owners names its events by tag

    def initial_view(self) -> dict[str, int]:
        return {}

    def apply(self, view: dict[str, int], recorded: RecordedEvent) -> dict[str, int]:
        event = recorded.event
        if isinstance(event, Deposited):
            view[recorded.stream_id] = view.get(recorded.stream_id, 0) + event.amount
        elif isinstance(event, Withdrawn):
            view[recorded.stream_id] = view.get(recorded.stream_id, 0) - event.amount
        return view

    def balance_of(self, view: dict[str, int], stream_id: str) -> int:
        return view.get(stream_id, 0)


class Log(Projection[list[int]]):
    """Every position it applied, in order: shows gaps and duplicates."""

    def __init__(self, *, stream_prefix: str | None = None) -> None:
        self.stream_prefix = stream_prefix

    def initial_view(self) -> list[int]:
        return []

    def apply(self, view: list[int], recorded: RecordedEvent) -> list[int]:
        view.append(recorded.position)
        return view


class Owners(Projection[tuple[str, ...]]):
    """Owners of opened accounts, as an immutable tuple (a pure, returning projection)."""

    event_types = frozenset({"test.opened"})

    def initial_view(self) -> tuple[str, ...]:
        return ()

    def apply(self, view: tuple[str, ...], recorded: RecordedEvent) -> tuple[str, ...]:
        event = recorded.event
        assert isinstance(event, Opened)
        return (*view, event.owner)


class Poisoned(Balances):
    """Balances whose apply fails on a deposit of 13 while `broken` is set."""

    name = "poisoned-balances"

    def __init__(self) -> None:
        self.broken = True
        self.calls_on_poison = 0

    def apply(self, view: dict[str, int], recorded: RecordedEvent) -> dict[str, int]:
        event = recorded.event
        if isinstance(event, Deposited) and event.amount == 13:
            self.calls_on_poison += 1
            if self.broken:
                raise ValueError("thirteen is unlucky")
        return super().apply(view, recorded)


class GatedStore:
    """Forwards to a store, but reads wait while the gate is closed (a slow reader)."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self._open = anyio.Event()
        self._open.set()
        self.reads_waiting = 0

    def close_gate(self) -> None:
        self._open = anyio.Event()

    def open_gate(self) -> None:
        self._open.set()

    def add_commit_listener(
        self, listener: Callable[[Sequence[RecordedEvent]], None]
    ) -> Callable[[], None]:
        return self.store.add_commit_listener(listener)

    async def last_position(self) -> int:
        return await self.store.last_position()

    async def wait_for_commit(self, after: int, *, timeout: float) -> int:  # noqa: ASYNC109
        return await self.store.wait_for_commit(after, timeout=timeout)

    async def read_all(
        self,
        *,
        from_position: int = 0,
        to_position: int | None = None,
        limit: int | None = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent]:
        self.reads_waiting += 1
        try:
            await self._open.wait()
        finally:
            self.reads_waiting -= 1
        return await self.store.read_all(
            from_position=from_position,
            to_position=to_position,
            limit=limit,
            event_types=event_types,
            stream_prefix=stream_prefix,
        )


def fold(projection: Projection[V], events: Sequence[RecordedEvent]) -> V:
    """What `projection` gives over `events` applied directly (the oracle)."""
    view = projection.initial_view()
    types = event_tags(projection)
    prefix = projection.stream_prefix
    for recorded in events:
        if types is not None and recorded.event_type not in types:
            continue
        if prefix is not None and not recorded.stream_id.startswith(prefix):
            continue
        view = projection.apply(view, recorded)
    return view


async def read_everything(store: SQLiteEventStore) -> list[RecordedEvent]:
    """Every event in the store, in position order."""
    return await store.read_all(limit=100_000)
