"""The simulated couriers: a process manager that delivers every shipped order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from actors import Dispatch, Event, ProcessManager
from demo._streams import aggregate_id
from demo.shop import DeliverOrder, Order, OrderShipped
from store import RecordedEvent

__all__ = ["Couriers"]


class Couriers(ProcessManager):
    """The simulated couriers: every shipped order is delivered (`DeliverOrder`).

    Not part of the shop: delivery comes from outside, and this stands in for the
    outside. Its concurrency is the number of couriers on the road.
    """

    name: ClassVar[str] = "demo.simulate.couriers"
    event_types: ClassVar[tuple[type[Event], ...]] = (OrderShipped,)

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        """Deliver the order that was shipped."""
        if not isinstance(recorded.event, OrderShipped):
            return []
        order_id = aggregate_id(recorded, Order)
        return [Dispatch(Order, order_id, DeliverOrder(order_id))]
