"""Event types and helpers shared by the bus and read-model tests."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from store import ANY, EventRegistry, SQLiteEventStore


class Opened(msgspec.Struct, frozen=True, tag="test.opened"):
    owner: str


class Deposited(msgspec.Struct, frozen=True, tag="test.deposited"):
    amount: int


class Withdrawn(msgspec.Struct, frozen=True, tag="test.withdrawn"):
    amount: int


def registry() -> EventRegistry:
    """A registry with every test event type."""
    return EventRegistry([Opened, Deposited, Withdrawn])


async def append_deposits(store: SQLiteEventStore, stream_id: str, amounts: Sequence[int]) -> int:
    """Append one `Deposited` per amount in a single append; returns its last position."""
    result = await store.append(
        stream_id, [Deposited(amount=a) for a in amounts], expected_version=ANY
    )
    return result.last_position
