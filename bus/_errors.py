"""Errors raised by the event bus.

```
BusError
├── BusClosed              the bus (or the subscription) was closed
└── InvalidSubscription    a bad argument to `subscribe`, or a bad or unknown option of
                           `open_bus` (also a ValueError)
```
"""

from __future__ import annotations

__all__ = ["BusClosed", "BusError", "InvalidSubscription"]


class BusError(Exception):
    """Base class of every error the event bus raises."""


class BusClosed(BusError):
    """The bus or the subscription is closed and hands out no more events."""


class InvalidSubscription(BusError, ValueError):
    """An argument of `subscribe` is invalid (position, queue size, filters, name), or an
    option of the bus (`open_bus`, `BusOptions`) is unknown or out of its range."""
