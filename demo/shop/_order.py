"""The order: requested first, validated or rejected, paid, shipped, delivered.

`PlaceOrder` is recorded as `OrderRequested` before any validation: the request itself
is the first fact (only a request that cannot be stored at all, with numbers beyond
their limits, is refused with `MalformedOrder`). Validation (stock reserved at the warehouse) and payment (charged to
the customer's bank account) happen afterwards, driven by `OrderFulfilment`, and each
outcome is a new event; the request is never edited.

```
new ──PlaceOrder──▶ requested ──ValidateOrder──▶ validated ──RecordPayment──▶ paid
                        │                           │                         │
                   RejectOrder                 CancelOrder               ShipOrder
                        ▼                           ▼                         ▼
                    rejected                    cancelled     delivered ◀── shipped
                                                              DeliverOrder
```
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import assert_never

import msgspec

from actors import Aggregate, Command, Event, Rejected

__all__ = [
    "MAX_LINES",
    "MAX_QUANTITY",
    "MAX_UNIT_PRICE",
    "CancelOrder",
    "DeliverOrder",
    "InvalidOrderState",
    "MalformedOrder",
    "Order",
    "OrderAlreadyPlaced",
    "OrderCancelled",
    "OrderCommand",
    "OrderDelivered",
    "OrderEvent",
    "OrderLine",
    "OrderPaid",
    "OrderRejected",
    "OrderRequested",
    "OrderShipped",
    "OrderState",
    "OrderValidated",
    "PlaceOrder",
    "RecordPayment",
    "RejectOrder",
    "ShipOrder",
    "ValidateOrder",
    "order_problem",
    "tracking_number",
]


class OrderLine(msgspec.Struct, frozen=True):
    """`quantity` units of product `sku` at `unit_price` cents each."""

    sku: str
    quantity: int
    unit_price: int

    @property
    def amount(self) -> int:
        """The line's price in cents."""
        return self.quantity * self.unit_price


MAX_LINES = 100
"""The most lines an order may have."""
MAX_QUANTITY = 1_000_000
"""The most units of one product in an order line (or one restock)."""
MAX_UNIT_PRICE = 10**10
"""The highest unit price, in cents. With `MAX_LINES` and `MAX_QUANTITY` an order's total
stays far inside a 64-bit integer, so every request can be stored."""


def _unstorable(lines: Sequence[OrderLine]) -> str | None:
    """Why a request with `lines` cannot even be recorded (None when it can)."""
    if len(lines) > MAX_LINES:
        return f"the order has {len(lines)} lines; at most {MAX_LINES}"
    for line in lines:
        if abs(line.quantity) > MAX_QUANTITY:
            return f"quantity {line.quantity} of {line.sku!r} is beyond {MAX_QUANTITY}"
        if abs(line.unit_price) > MAX_UNIT_PRICE:
            return f"unit price {line.unit_price} of {line.sku!r} is beyond {MAX_UNIT_PRICE}"
    return None


def order_problem(lines: Sequence[OrderLine]) -> str | None:
    """Why `lines` cannot make an order (None when they can): no lines, too many, a
    quantity or price not positive or beyond its limit, or a product listed twice."""
    if not lines:
        return "the order has no lines"
    unstorable = _unstorable(lines)
    if unstorable is not None:
        return unstorable
    seen: set[str] = set()
    for line in lines:
        if line.quantity <= 0:
            return f"quantity {line.quantity} of {line.sku!r} must be > 0"
        if line.unit_price <= 0:
            return f"unit price {line.unit_price} of {line.sku!r} must be > 0"
        if line.sku in seen:
            return f"product {line.sku!r} is listed twice"
        seen.add(line.sku)
    return None


def tracking_number(order_id: str) -> str:
    """The parcel's tracking number: derived from the order id alone, so shipping the
    same order twice (a redelivered event) yields the same number."""
    digest = hashlib.blake2b(order_id.encode(), digest_size=6, person=b"esactors-ship").hexdigest()
    return f"TRK-{digest.upper()}"


# -- commands ----------------------------------------------------------------------------


class PlaceOrder(Command, tag="shop.place_order"):
    """Request an order; recorded as is, validated afterwards. Sending it again with the
    same fields is a no-op."""

    order_id: str
    customer_id: str
    payment_account: str
    lines: tuple[OrderLine, ...]
    warehouse_id: str = "main"


class ValidateOrder(Command, tag="shop.validate_order"):
    """Record that the order's stock is reserved: it is valid and can be charged."""

    order_id: str


class RejectOrder(Command, tag="shop.reject_order"):
    """Record that the order failed validation (`reason`)."""

    order_id: str
    reason: str


class RecordPayment(Command, tag="shop.record_payment"):
    """Record that `amount` was charged for the order."""

    order_id: str
    amount: int


class CancelOrder(Command, tag="shop.cancel_order"):
    """Record that a validated order could not be paid (`reason`)."""

    order_id: str
    reason: str


class ShipOrder(Command, tag="shop.ship_order"):
    """Record that the paid order left the warehouse with parcel `tracking`."""

    order_id: str
    tracking: str


class DeliverOrder(Command, tag="shop.deliver_order"):
    """Record that the parcel arrived."""

    order_id: str


OrderCommand = (
    PlaceOrder
    | ValidateOrder
    | RejectOrder
    | RecordPayment
    | CancelOrder
    | ShipOrder
    | DeliverOrder
)

# -- events ------------------------------------------------------------------------------


class OrderRequested(Event, tag="shop.order_requested"):
    """A customer asked for an order (not yet validated)."""

    customer_id: str
    payment_account: str
    warehouse_id: str
    lines: tuple[OrderLine, ...]
    total: int


class OrderValidated(Event, tag="shop.order_validated"):
    """The order is valid and its stock is reserved; it is to be charged `total` to
    `payment_account` (the lines and warehouse let a refused payment release the
    stock)."""

    payment_account: str
    warehouse_id: str
    lines: tuple[OrderLine, ...]
    total: int


class OrderRejected(Event, tag="shop.order_rejected"):
    """The order failed validation."""

    reason: str


class OrderPaid(Event, tag="shop.order_paid"):
    """`amount` was charged for the order."""

    amount: int


class OrderCancelled(Event, tag="shop.order_cancelled"):
    """The validated order could not be paid; its stock went back."""

    reason: str


class OrderShipped(Event, tag="shop.order_shipped"):
    """The order left with parcel `tracking`."""

    tracking: str


class OrderDelivered(Event, tag="shop.order_delivered"):
    """The parcel arrived."""


OrderEvent = (
    OrderRequested
    | OrderValidated
    | OrderRejected
    | OrderPaid
    | OrderCancelled
    | OrderShipped
    | OrderDelivered
)

# -- refusals ----------------------------------------------------------------------------


class OrderAlreadyPlaced(Rejected):
    """The order id is taken by another request."""


class MalformedOrder(Rejected):
    """The request cannot even be recorded: too many lines, or a quantity or price
    beyond its limit (every other problem is found by validation, after recording)."""


class InvalidOrderState(Rejected):
    """The command does not apply to the order in its current status."""


# -- state and aggregate -----------------------------------------------------------------


class OrderState(msgspec.Struct, frozen=True):
    """An order as its events left it.

    `status` is one of "new", "requested", "validated", "rejected", "paid",
    "cancelled", "shipped", "delivered".
    """

    status: str = "new"
    customer_id: str = ""
    payment_account: str = ""
    warehouse_id: str = ""
    lines: tuple[OrderLine, ...] = ()
    total: int = 0
    tracking: str = ""
    reason: str = ""


def _expect(state: OrderState, order_id: str, command: str, *statuses: str) -> None:
    if state.status not in statuses:
        raise InvalidOrderState(
            f"order {order_id!r} is {state.status}; {command} needs it {' or '.join(statuses)}"
        )


class Order(Aggregate[OrderState, OrderCommand, OrderEvent]):
    """One order's lifecycle (stream `order-<id>`)."""

    initial = OrderState()
    category = "order"

    def decide(self, state: OrderState, command: OrderCommand) -> Sequence[OrderEvent]:
        """The events `command` produces, or a `Rejected`. Repeating the command that
        made the current status is a no-op."""
        match command:
            case PlaceOrder(
                order_id=order_id,
                customer_id=customer_id,
                payment_account=account,
                lines=lines,
                warehouse_id=warehouse,
            ):
                if state.status == "new":
                    unstorable = _unstorable(lines)
                    if unstorable is not None:
                        raise MalformedOrder(f"order {order_id!r}: {unstorable}")
                    total = sum(line.amount for line in lines)
                    return [OrderRequested(customer_id, account, warehouse, lines, total)]
                if (state.customer_id, state.payment_account, state.warehouse_id, state.lines) == (
                    customer_id,
                    account,
                    warehouse,
                    lines,
                ):
                    return []
                raise OrderAlreadyPlaced(f"order id {order_id!r} is taken by another request")
            case ValidateOrder(order_id=order_id):
                if state.status == "validated":
                    return []
                _expect(state, order_id, "ValidateOrder", "requested")
                return [
                    OrderValidated(
                        state.payment_account, state.warehouse_id, state.lines, state.total
                    )
                ]
            case RejectOrder(order_id=order_id, reason=reason):
                if state.status == "rejected":
                    return []
                _expect(state, order_id, "RejectOrder", "requested")
                return [OrderRejected(reason=reason)]
            case RecordPayment(order_id=order_id, amount=amount):
                if state.status == "paid":
                    return []
                _expect(state, order_id, "RecordPayment", "validated")
                if amount != state.total:
                    raise InvalidOrderState(
                        f"order {order_id!r} costs {state.total} cents, not {amount}"
                    )
                return [OrderPaid(amount=amount)]
            case CancelOrder(order_id=order_id, reason=reason):
                if state.status == "cancelled":
                    return []
                _expect(state, order_id, "CancelOrder", "validated")
                return [OrderCancelled(reason=reason)]
            case ShipOrder(order_id=order_id, tracking=tracking):
                if state.status == "shipped" and state.tracking == tracking:
                    return []
                _expect(state, order_id, "ShipOrder", "paid")
                return [OrderShipped(tracking=tracking)]
            case DeliverOrder(order_id=order_id):
                if state.status == "delivered":
                    return []
                _expect(state, order_id, "DeliverOrder", "shipped")
                return [OrderDelivered()]
            case _:
                assert_never(command)

    def evolve(self, state: OrderState, event: OrderEvent) -> OrderState:
        """The state after `event`."""
        replace = msgspec.structs.replace
        match event:
            case OrderRequested(
                customer_id=customer_id,
                payment_account=account,
                warehouse_id=warehouse,
                lines=lines,
                total=total,
            ):
                return OrderState("requested", customer_id, account, warehouse, lines, total)
            case OrderValidated():
                return replace(state, status="validated")
            case OrderRejected(reason=reason):
                return replace(state, status="rejected", reason=reason)
            case OrderPaid():
                return replace(state, status="paid")
            case OrderCancelled(reason=reason):
                return replace(state, status="cancelled", reason=reason)
            case OrderShipped(tracking=tracking):
                return replace(state, status="shipped", tracking=tracking)
            case OrderDelivered():
                return replace(state, status="delivered")
            case _:
                assert_never(event)
