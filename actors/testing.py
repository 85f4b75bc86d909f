"""Given/when/then helpers for testing aggregates as the pure functions they are.

```python
account = AggregateSpec(Account())
account.given(AccountOpened(owner="ada")).when(Deposit("a1", 5)).then(Deposited(5))
account.given().when(Deposit("a1", 5)).then_raises(AccountNotOpen)
```
`then` also round-trips every given and decided event through the store's codec (so an
event that cannot be stored fails the test) and checks `evolve` accepts the decided
events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic

import msgspec

from actors._aggregate import Aggregate, CommandT, EventT, StateT
from store import EventRegistry

__all__ = ["AggregateSpec", "Given", "When"]


class AggregateSpec(Generic[StateT, CommandT, EventT]):
    """Specification helper for one aggregate: `spec.given(*events).when(command)...`."""

    def __init__(self, aggregate: Aggregate[StateT, CommandT, EventT]) -> None:
        self.aggregate = aggregate
        self.registry = EventRegistry(type(aggregate).event_types)

    def given(self, *events: EventT) -> Given[StateT, CommandT, EventT]:
        """Start from the state these (round-tripped) events produce."""
        state = self.aggregate.initial
        for event in events:
            state = self.aggregate.evolve(state, self.round_trip(event))
        return Given(self, state)

    def round_trip(self, event: EventT) -> EventT:
        """`event` encoded and decoded by the codec the store uses.

        Raises:
            AssertionError: the event is unregistered or does not come back equal.
        """
        encoded = self.registry.encode(event)
        assert encoded is not None, (
            f"{type(event).__qualname__} is not among {type(self.aggregate).__name__}.event_types"
        )
        tag, schema_version, data = encoded
        back = self.registry.decode(tag, schema_version, data)
        assert back == event, f"{event!r} does not survive the codec: got {back!r}"
        result: EventT = back
        return result


class Given(Generic[StateT, CommandT, EventT]):
    """The state after the given events; `.when(command)` decides on it."""

    def __init__(self, spec: AggregateSpec[StateT, CommandT, EventT], state: StateT) -> None:
        self.spec = spec
        self.state = state

    def when(self, command: CommandT) -> When[StateT, CommandT, EventT]:
        """Decide `command` against the given state (the outcome is checked by then*)."""
        return When(self.spec, self.state, command)


class When(Generic[StateT, CommandT, EventT]):
    """A command decided in a state: check it with `then` or `then_raises`."""

    def __init__(
        self, spec: AggregateSpec[StateT, CommandT, EventT], state: StateT, command: CommandT
    ) -> None:
        self.spec = spec
        self.state = state
        self.command = command

    def then(self, *expected: EventT) -> StateT:
        """Assert `decide` emits exactly `expected`; return the state after them.

        Every emitted event is round-tripped through the codec and fed to `evolve`.
        """
        aggregate = self.spec.aggregate
        events = tuple(aggregate.decide(self.state, self.command))
        assert events == expected, (
            f"{type(self.command).__name__} decided {_show(events)}, expected {_show(expected)}"
        )
        state = self.state
        for event in events:
            state = aggregate.evolve(state, self.spec.round_trip(event))
        return state

    def then_raises(self, error: type[BaseException]) -> BaseException:
        """Assert `decide` raises `error` (or a subclass); return the raised error."""
        try:
            events = tuple(self.spec.aggregate.decide(self.state, self.command))
        except error as exc:
            return exc
        raise AssertionError(
            f"{type(self.command).__name__} decided {_show(events)}, expected"
            f" {error.__name__} to be raised"
        )


def _show(events: Sequence[Any]) -> str:
    if not events:
        return "no events"
    return ", ".join(repr(e) if isinstance(e, msgspec.Struct) else str(e) for e in events)
