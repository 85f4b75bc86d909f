"""Errors raised by read models.

```
ReadModelError
├── ProjectionStopped      the projection stopped (or failed) before reaching a position
├── TooManyParked          more poison events than the dead-letter limit
└── InvalidProjection      a bad argument or option (also a ValueError)
```
`wait_for` gives up with `ConsistencyTimeout`, the bus's (`bus.ConsistencyTimeout`, a
`bus.BusError` and a `TimeoutError`), re-exported here: process managers raise the same.
"""

from __future__ import annotations

from bus import ConsistencyTimeout

__all__ = [
    "ConsistencyTimeout",
    "InvalidProjection",
    "ProjectionStopped",
    "ReadModelError",
    "TooManyParked",
]


class ReadModelError(Exception):
    """Base class of every error the read models raise."""


class ProjectionStopped(ReadModelError):
    """The projection stopped, or failed, before it reached the awaited position.

    Attributes:
        projection: the projection's name.
        target: the position waited for (0 when not waiting for one).
        reached: the position it had applied when it stopped.
    """

    def __init__(self, projection: str, target: int, reached: int, reason: str) -> None:
        consequence = f"; it will not reach position {target}" if target else ""
        super().__init__(
            f"projection {projection!r} stopped at position {reached} ({reason}){consequence}"
        )
        self.projection, self.target, self.reached = projection, target, reached


class TooManyParked(ReadModelError):
    """More events were parked than the dead-letter limit allows: the projection stops,
    since so many failures point at a bug to fix rather than at a few bad events."""

    def __init__(self, projection: str, limit: int) -> None:
        super().__init__(
            f"projection {projection!r} parked more than {limit} poison events"
            " (max_parked); fix its apply, then rebuild it"
        )
        self.projection, self.limit = projection, limit


class InvalidProjection(ReadModelError, ValueError):
    """An argument or option of a projection is invalid."""
