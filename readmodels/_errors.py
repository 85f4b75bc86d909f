"""Errors raised by read models.

```
ReadModelError
├── ConsistencyTimeout     wait_for gave up before the projection reached a position
├── ProjectionStopped      the projection stopped (or failed) before reaching it
├── TooManyParked          more poison events than the dead-letter limit
└── InvalidProjection      a bad argument or option (also a ValueError)
```
"""

from __future__ import annotations

__all__ = [
    "ConsistencyTimeout",
    "InvalidProjection",
    "ProjectionStopped",
    "ReadModelError",
    "TooManyParked",
]


class ReadModelError(Exception):
    """Base class of every error the read models raise."""


class ConsistencyTimeout(ReadModelError, TimeoutError):
    """A projection did not reach the awaited position in time.

    Attributes:
        projection: the projection's name.
        target: the position waited for.
        reached: the position it had applied when the wait gave up.
        timeout: the seconds waited.
    """

    def __init__(self, projection: str, target: int, reached: int, timeout: float) -> None:
        super().__init__(
            f"projection {projection!r} reached position {reached}, not {target}, within"
            f" {timeout}s; it is behind (see its statistics) or the position was written"
            " by another process this one has not read yet"
        )
        self.projection, self.target, self.reached, self.timeout = (
            projection,
            target,
            reached,
            timeout,
        )


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
