"""Errors raised by the event bus.

```
BusError
├── BusClosed              the bus (or the subscription) was closed
├── ConsistencyTimeout     a subscriber (a projection, a process manager) did not reach
│                          a position within a `wait_for`'s timeout (a TimeoutError too)
└── InvalidSubscription    a bad argument to `subscribe`, or a bad or unknown option of
                           `open_bus` (also a ValueError)
```
"""

from __future__ import annotations

__all__ = ["BusClosed", "BusError", "ConsistencyTimeout", "InvalidSubscription"]


class BusError(Exception):
    """Base class of every error the event bus raises."""


class BusClosed(BusError):
    """The bus or the subscription is closed and hands out no more events."""


class ConsistencyTimeout(BusError, TimeoutError):
    """A subscriber of the bus (a projection, a process manager) did not reach the
    position its `wait_for` awaited within the timeout. Only the wait gave up: the
    subscriber goes on, and a later wait may see the position reached.

    The one timeout of every `wait_for(position, timeout=...)`: the read models' and the
    process managers' (`readmodels.ConsistencyTimeout` is this class).

    Attributes:
        kind: what waited: "projection" or "process manager".
        name: its name.
        target: the position waited for.
        reached: the position it had reached when the wait gave up.
        timeout: the seconds waited.
    """

    def __init__(self, kind: str, name: str, target: int, reached: int, timeout: float) -> None:
        super().__init__(
            f"{kind} {name!r} reached position {reached}, not {target}, within {timeout}s;"
            " it is behind (see its statistics), or the position was committed by another"
            " process and is not read here yet"
        )
        self.kind, self.name, self.target, self.reached, self.timeout = (
            kind,
            name,
            target,
            reached,
            timeout,
        )

    def __reduce__(self) -> tuple[type[ConsistencyTimeout], tuple[str, str, int, int, float]]:
        return (type(self), (self.kind, self.name, self.target, self.reached, self.timeout))


class InvalidSubscription(BusError, ValueError):
    """An argument of `subscribe` is invalid (position, queue size, filters, name), or an
    option of the bus (`open_bus`, `BusOptions`) is unknown or out of its range."""
