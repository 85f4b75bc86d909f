"""Event types shared by the store tests (and the child writer process)."""

from __future__ import annotations

import msgspec

from store import EventRegistry


class Opened(msgspec.Struct, frozen=True, tag="test.opened"):
    owner: str


class Deposited(msgspec.Struct, frozen=True, tag="test.deposited"):
    amount: int


class Noted(msgspec.Struct, frozen=True, tag="test.noted"):
    text: str


class Unregistered(msgspec.Struct, frozen=True, tag="test.unregistered"):
    value: int


class Untagged(msgspec.Struct, frozen=True):
    value: int


def make_registry() -> EventRegistry:
    """A registry with the three registered test event types."""
    return EventRegistry([Opened, Deposited, Noted])
