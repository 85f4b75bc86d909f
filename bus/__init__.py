"""The event bus: committed events published in-process to ordered subscriptions.

`open_bus(store)` registers a bus as the store's commit listener; `bus.subscribe(...)`
gives a `Subscription` that yields recorded events in strictly increasing position order,
from any position, live from a bounded buffer or by catching up from the store when it
starts behind or falls behind. Imports only `store`.
"""

from __future__ import annotations

from bus._bus import BusOptions, BusSettings, EventBus, EventSource, open_bus
from bus._errors import BusClosed, BusError, ConsistencyTimeout, InvalidSubscription
from bus._subscription import Batch, Subscription, SubscriptionStatistics

__all__ = [
    "Batch",
    "BusClosed",
    "BusError",
    "BusOptions",
    "BusSettings",
    "ConsistencyTimeout",
    "EventBus",
    "EventSource",
    "InvalidSubscription",
    "Subscription",
    "SubscriptionStatistics",
    "open_bus",
]
