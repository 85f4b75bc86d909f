"""The shop's process managers: order fulfilment (validate, charge) and shipping.

`OrderFulfilment` turns a requested order into a paid one, or a rejected or cancelled
one:

```
OrderRequested ─▶ ReserveStock(warehouse)          (lines unusable ─▶ RejectOrder)
    refused (out of stock) ─▶ RejectOrder
StockReserved  ─▶ ValidateOrder
OrderValidated ─▶ PayForOrder(customer's bank account)
    refused (funds short, account closed) ─▶ ReleaseStock + CancelOrder
OrderCharged   ─▶ RecordPayment
```
`Shipping` ships every paid order with a tracking number derived from its id. Both keep
no state: every event carries what the next command needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from actors import Dispatch, Event, ProcessManager, Rejected
from demo._streams import aggregate_id
from demo.bank import Account, OrderCharged, PayForOrder
from demo.shop._inventory import Inventory, ReleaseStock, ReserveStock, StockReserved
from demo.shop._order import (
    CancelOrder,
    Order,
    OrderPaid,
    OrderRequested,
    OrderValidated,
    RecordPayment,
    RejectOrder,
    ShipOrder,
    ValidateOrder,
    order_problem,
    tracking_number,
)
from store import RecordedEvent

__all__ = ["OrderFulfilment", "Shipping"]


class OrderFulfilment(ProcessManager):
    """Validates each requested order against the inventory, then charges it to the
    customer's bank account (see the module docs for the flow)."""

    name: ClassVar[str] = "shop.fulfilment"
    event_types: ClassVar[tuple[type[Event], ...]] = (
        OrderRequested,
        StockReserved,
        OrderValidated,
        OrderCharged,
    )

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        """The next step of the order `recorded` is about."""
        event = recorded.event
        match event:
            case OrderRequested(warehouse_id=warehouse_id, lines=lines):
                order_id = aggregate_id(recorded, Order)
                problem = order_problem(lines)
                if problem is not None:
                    return [Dispatch(Order, order_id, RejectOrder(order_id, problem))]
                return [
                    Dispatch(Inventory, warehouse_id, ReserveStock(warehouse_id, order_id, lines))
                ]
            case StockReserved(order_id=order_id):
                return [Dispatch(Order, order_id, ValidateOrder(order_id))]
            case OrderValidated(payment_account=account, total=total):
                order_id = aggregate_id(recorded, Order)
                return [Dispatch(Account, account, PayForOrder(account, order_id, total))]
            case OrderCharged(order_id=order_id, amount=amount):
                return [Dispatch(Order, order_id, RecordPayment(order_id, amount))]
            case _:
                return []

    def sequence_key(self, recorded: RecordedEvent) -> str:
        """The order: a warehouse's or an account's events about different orders go
        at once, each order's steps in order."""
        event = recorded.event
        if isinstance(event, StockReserved | OrderCharged):
            return event.order_id
        return aggregate_id(recorded, Order)

    def compensate(
        self, recorded: RecordedEvent, dispatch: Dispatch, error: Rejected
    ) -> Sequence[Dispatch]:
        """Out of stock rejects the order; a refused payment releases the stock and
        cancels it; an order that can no longer be validated gives its stock back."""
        command = dispatch.command
        event = recorded.event
        match command:
            case ReserveStock(order_id=order_id):
                return [Dispatch(Order, order_id, RejectOrder(order_id, str(error)))]
            case PayForOrder(order_id=order_id) if isinstance(event, OrderValidated):
                warehouse = event.warehouse_id
                return [
                    Dispatch(Inventory, warehouse, ReleaseStock(warehouse, order_id, event.lines)),
                    Dispatch(Order, order_id, CancelOrder(order_id, f"payment refused: {error}")),
                ]
            case ValidateOrder(order_id=order_id) if isinstance(event, StockReserved):
                warehouse = aggregate_id(recorded, Inventory)
                return [
                    Dispatch(Inventory, warehouse, ReleaseStock(warehouse, order_id, event.lines))
                ]
            case _:
                return []


class Shipping(ProcessManager):
    """Ships every paid order; the tracking number is derived from the order id, so a
    redelivered `OrderPaid` ships with the same number (and is a no-op)."""

    name: ClassVar[str] = "shop.shipping"
    event_types: ClassVar[tuple[type[Event], ...]] = (OrderPaid,)

    def react(self, recorded: RecordedEvent) -> Sequence[Dispatch]:
        """Ship the order that was paid."""
        if not isinstance(recorded.event, OrderPaid):
            return []
        order_id = aggregate_id(recorded, Order)
        return [Dispatch(Order, order_id, ShipOrder(order_id, tracking_number(order_id)))]
